"""Tests for suite.acme."""
