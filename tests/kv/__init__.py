"""Tests for suite.kv."""
