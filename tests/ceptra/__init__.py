"""Tests for suite.ceptra."""
