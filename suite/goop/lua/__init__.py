"""Lua data functions: a lupa sandbox with time, memory and rate limits, and an SSRF-guarded HTTP client."""

__all__: list[str] = []
