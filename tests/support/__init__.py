"""Test support: process runner, in-memory network simulator, checkers."""
