"""
Snapshot files: C{snapshot-<index>-<term>.snap}, written to a temporary
file, fsynced and renamed into place.

Layout: C{b"RSNP"}, a version byte, C{u32 crc32} and C{u64 length} of the
body, then the body: msgpack C{[index, term, configuration, data]}.
"""

from __future__ import annotations

import os
import struct
import zlib

import msgpack
from twisted.logger import Logger

from suite.daemon import ConfigError
from suite.raft.messages import Configuration, SnapshotMeta

log = Logger()

MAGIC = b"RSNP"
VERSION = 1
HEAD = struct.Struct(">4sBIQ")


def binHeader(n: int) -> bytes:
    """
    msgpack's header of a binary value of C{n} bytes: C{header + data} is
    C{msgpack.packb(data, use_bin_type=True)}, without copying C{data} into
    the packer.
    """
    if n < 0x100:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


class CorruptSnapshot(ConfigError):
    """
    A snapshot file failed its checks; start-up refuses.
    """


class SnapshotStore:
    """
    A directory of snapshot files; methods block (call them off the
    reactor thread).
    """

    def __init__(self, directory: str, keep: int = 2) -> None:
        self.directory = directory
        self.keep = keep

    def _files(self) -> list[str]:
        return sorted(
            n for n in os.listdir(self.directory) if n.startswith("snapshot-") and n.endswith(".snap")
        )

    def save(self, meta: SnapshotMeta, data: bytes) -> None:
        body = msgpack.packb([meta.index, meta.term, meta.configuration.encode(), data], use_bin_type=True)
        name = f"snapshot-{meta.index:020d}-{meta.term:020d}.snap"
        tmp = os.path.join(self.directory, name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(HEAD.pack(MAGIC, VERSION, zlib.crc32(body), len(body)))
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.directory, name))
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        for old in self._files()[: -self.keep]:
            os.unlink(os.path.join(self.directory, old))

    def load(self, name: str) -> tuple[SnapshotMeta, bytes]:
        path = os.path.join(self.directory, name)
        with open(path, "rb") as f:
            raw = f.read()
        if len(raw) < HEAD.size:
            raise CorruptSnapshot(f"snapshot {path} is truncated; refusing to start")
        magic, version, crc, length = HEAD.unpack_from(raw)
        body = raw[HEAD.size :]
        if magic != MAGIC or version != VERSION:
            raise CorruptSnapshot(f"snapshot {path} has a bad header; refusing to start")
        if len(body) != length or zlib.crc32(body) != crc:
            raise CorruptSnapshot(f"snapshot {path} fails its CRC check; refusing to start")
        index, term, config, data = msgpack.unpackb(body, raw=False)
        return SnapshotMeta(index, term, Configuration.decode(config)), data

    def loadLatest(self) -> tuple[SnapshotMeta, bytes] | None:
        for tmp in [n for n in os.listdir(self.directory) if n.endswith(".snap.tmp")]:
            os.unlink(os.path.join(self.directory, tmp))
        files = self._files()
        if not files:
            return None
        return self.load(files[-1])
