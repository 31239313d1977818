"""Tests for suite.goop."""
