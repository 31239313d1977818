"""Tests for suite.gossip."""
