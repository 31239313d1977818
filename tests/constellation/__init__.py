"""Tests for suite.constellation."""
