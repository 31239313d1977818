"""Tests for suite.spacecomms."""
