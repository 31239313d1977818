"""Tests for suite.cred."""
