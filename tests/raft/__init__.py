"""Tests for suite.raft."""
