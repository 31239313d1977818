"""Tests for suite.clustor."""
