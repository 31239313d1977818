"""
The local demonstration behind C{make run}: every daemon on loopback with
embedded defaults (a generated CA, data directories under C{var/demo}).
"""

__all__: list[str] = []
