"""
Values of the deployment file: durations, sizes, ports, C{${VAR}}
interpolation and secret files, and the checks every field shares.  Each
failure is a L{SpecError} naming the place and the field.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from typing import Any

__all__ = [
    "SpecError",
    "Resolver",
    "parseDuration",
    "parseBytes",
    "parsePort",
    "mapping",
    "strings",
    "boolean",
]

_MAX_SECRET = 64 * 1024
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)")
_BYTES = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$", re.I)


class SpecError(ValueError):
    """
    The deployment file is wrong; C{str(error)} is one line naming the place and the field.
    """


def parseDuration(value: Any, where: str) -> float:
    """
    C{"1m30s"}, C{"500ms"}, C{"10s"} or a number of seconds -> seconds.
    """
    if isinstance(value, bool):
        raise SpecError(f"{where}: {value!r} is not a duration")
    if isinstance(value, int | float):
        if value < 0:
            raise SpecError(f"{where}: {value!r} is negative")
        return float(value)
    text = str(value).strip()
    pos, total = 0, 0.0
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * scale[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise SpecError(f"{where}: {value!r} is not a duration (like 30s, 1m30s, 500ms)")
    return total


def parseBytes(value: Any, where: str) -> int:
    """
    C{"512m"}, C{"2g"}, C{"1.5GiB"} or a number of bytes -> bytes.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = _BYTES.match(str(value).strip())
    if not m or isinstance(value, bool):
        raise SpecError(f"{where}: {value!r} is not a size (like 512m, 2g)")
    n = float(m.group(1)) * 1024 ** "_kmgt".index(m.group(2).lower() or "_")
    if n <= 0:
        raise SpecError(f"{where}: {value!r} is not a positive size")
    return int(n)


def parsePort(value: Any, where: str) -> int:
    """
    A TCP/UDP port number (1-65535), from an integer or a string.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SpecError(f"{where}: {value!r} is not a port")
    try:
        port = int(value)
    except ValueError:
        raise SpecError(f"{where}: {value!r} is not a port") from None
    if not 0 < port < 65536:
        raise SpecError(f"{where}: {value!r} is not a port (1-65535)")
    return port


class Resolver:
    """
    C{${VAR}} and secret files, for one file; relative volume sources
    are resolved against C{configPath} by the caller.
    """

    def __init__(self, environ: Mapping[str, str], secretsPath: str, configPath: str) -> None:
        self.environ, self.secretsPath, self.configPath = environ, secretsPath, configPath

    def text(self, value: Any, where: str) -> str:
        """
        A scalar as a string, with C{${VAR}}, C{${VAR:-default}} and C{$$} substituted.
        """
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, str | int | float):
            raise SpecError(f"{where}: {value!r} is not a string")

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            got = self.environ.get(name)
            if got is None or (got == "" and default is not None):
                if default is None:
                    raise SpecError(f"{where}: ${{{name}}} is not set in the environment")
                return default
            return got

        return _VAR.sub(sub, str(value))

    def secret(self, name: Any, where: str) -> str:
        """
        The content of C{SECRETS_PATH/name} (at most 64 KiB, trailing newline dropped).
        """
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise SpecError(f"{where}: secret {name!r} must be a file name in SECRETS_PATH")
        path = os.path.join(self.secretsPath, name)
        try:
            with open(path, "rb") as f:
                data = f.read(_MAX_SECRET + 1)
        except OSError as e:
            raise SpecError(f"{where}: cannot read secret file {path}: {e.strerror or e}") from None
        if len(data) > _MAX_SECRET:
            raise SpecError(f"{where}: secret file {path} is larger than {_MAX_SECRET} bytes")
        return data.decode("utf-8", "replace").rstrip("\r\n")


def mapping(value: Any, where: str, keys: set[str] | None = None) -> dict[str, Any]:
    """
    C{value} as a mapping with string keys, all in C{keys} when given ({} for None).
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a mapping, got {type(value).__name__}")
    for k in value:
        if not isinstance(k, str):
            raise SpecError(f"{where}: key {k!r} is not a string")
        if keys is not None and k not in keys:
            known = ", ".join(sorted(keys))
            raise SpecError(f"{where}: unknown key {k!r} (known: {known})")
    return value


def strings(value: Any, where: str, r: Resolver, split: bool = False) -> list[str]:
    """
    A list of strings (a single string is one item, or, with C{split}, shell words).
    """
    if value is None:
        return []
    if isinstance(value, str):
        if not split:
            return [r.text(value, where)]
        try:
            words = shlex.split(value)
        except ValueError as e:
            raise SpecError(f"{where}: {value!r}: {e}") from None
        return [r.text(x, where) for x in words]
    if not isinstance(value, list):
        raise SpecError(f"{where}: expected a list of strings")
    return [r.text(x, f"{where}[{i}]") for i, x in enumerate(value)]


def boolean(value: Any, where: str) -> bool:
    """
    A YAML boolean, nothing else.
    """
    if not isinstance(value, bool):
        raise SpecError(f"{where}: {value!r} is not true or false")
    return value
