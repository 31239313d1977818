"""
memberlist's encryption: AES-GCM with a keyring.

An encrypted payload is C{version | 12-byte nonce | ciphertext | 16-byte
tag}.  Version 1 (what every protocol version from 2 on sends) seals the
message as it is; version 0 (protocol 1) pads it to the AES block size
first (PKCS#7).  The primary key encrypts; every key of the ring is tried
to decrypt, so keys can be rotated as Serf does (install everywhere, make
primary, remove the old one).  Keys are 16, 24 or 32 bytes (AES-128, -192,
-256), given as base64 as C{serf agent -encrypt} and C{serf keygen} write
them.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["Keyring", "DecryptError", "ENCRYPT_OVERHEAD", "parseKey", "readKeyFile"]

VERSION_BYTES = 1
NONCE_BYTES = 12
TAG_BYTES = 16
#: Bytes version 1 adds to a payload.
ENCRYPT_OVERHEAD = VERSION_BYTES + NONCE_BYTES + TAG_BYTES
KEY_SIZES = (16, 24, 32)


class DecryptError(ValueError):
    """
    No key of the ring opens the payload, or it is not an encrypted payload.
    """


def parseKey(text: str) -> bytes:
    """
    One base64 key.

    @raise ValueError: if it is not base64 of 16, 24 or 32 bytes (the
        message never contains the key).
    """
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a gossip key must be base64 (as `serf keygen` prints)") from None
    if len(key) not in KEY_SIZES:
        raise ValueError(f"a gossip key must decode to 16, 24 or 32 bytes, not {len(key)}")
    return key


class Keyring:
    """
    The keys of a cluster, the primary (encrypting) one first.
    """

    def __init__(self, keys: Iterable[bytes]) -> None:
        self.keys = [bytes(k) for k in keys]
        if not self.keys:
            raise ValueError("a keyring needs at least one key")
        for k in self.keys:
            if len(k) not in KEY_SIZES:
                raise ValueError(f"a gossip key must be 16, 24 or 32 bytes, not {len(k)}")
        self._ciphers = [AESGCM(k) for k in self.keys]

    @classmethod
    def fromBase64(cls, lines: Iterable[str]) -> Keyring:
        """
        A keyring from base64 keys (blank lines and C{#} comments skipped).
        """
        return cls(parseKey(line) for line in lines if line.strip() and not line.strip().startswith("#"))

    def encrypt(
        self, plaintext: bytes, aad: bytes = b"", version: int = 1, nonce: bytes | None = None
    ) -> bytes:
        """
        C{plaintext} sealed with the primary key.
        """
        if version not in (0, 1):
            raise ValueError(f"unknown encryption version {version}")
        nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
        if version == 0:
            pad = 16 - len(plaintext) % 16
            plaintext = plaintext + bytes([pad]) * pad
        return bytes([version]) + nonce + self._ciphers[0].encrypt(nonce, plaintext, aad or None)

    def decrypt(self, payload: bytes, aad: bytes = b"") -> bytes:
        """
        Open C{payload} with any key of the ring.

        @raise DecryptError: if none opens it.
        """
        if not payload:
            raise DecryptError("empty encrypted payload")
        version = payload[0]
        if version > 1:
            raise DecryptError(f"unsupported encryption version {version}")
        minimum = VERSION_BYTES + NONCE_BYTES + TAG_BYTES + (16 if version == 0 else 0)
        if len(payload) < minimum:
            raise DecryptError(f"encrypted payload of {len(payload)} bytes is too short")
        nonce, sealed = payload[1 : 1 + NONCE_BYTES], payload[1 + NONCE_BYTES :]
        for cipher in self._ciphers:
            try:
                plain = cipher.decrypt(nonce, sealed, aad or None)
            except InvalidTag:
                continue
            if version == 0:
                pad = plain[-1] if plain else 0
                if not 1 <= pad <= 16 or len(plain) < pad:
                    raise DecryptError("bad padding")
                plain = plain[:-pad]
            return plain
        raise DecryptError("no installed key decrypts the payload")


def readKeyFile(path: str) -> Keyring:
    """
    A keyring from a file of base64 keys, one a line, the primary first
    (the format of C{serf keygen} output; Serf's own keyring file is a JSON
    list of the same strings, also accepted).

    @raise ValueError: saying what is wrong (never showing a key).
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not text: it must hold base64 keys, one a line") from None
    stripped = text.strip()
    if stripped.startswith("["):
        import json

        try:
            lines = json.loads(stripped)
        except ValueError:
            raise ValueError(f"{path} is not a JSON list of base64 keys") from None
        if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
            raise ValueError(f"{path} is not a JSON list of base64 keys")
    else:
        lines = text.splitlines()
    try:
        return Keyring.fromBase64(lines)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
