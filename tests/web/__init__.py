"""Tests for suite.web."""
