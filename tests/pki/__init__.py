"""Tests for suite.pki."""
