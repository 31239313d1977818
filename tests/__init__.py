"""Tests for the suite; the tree mirrors C{suite/}."""
