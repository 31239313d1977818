"""Tests for suite.specter."""
