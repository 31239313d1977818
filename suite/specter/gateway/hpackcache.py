"""
HPACK encoding and decoding that remember whole header blocks.

An HTTP/2 client sends nearly the same request headers on every stream of
a connection, and once they are in the dynamic table the block it sends
is the same bytes each time; a tunnel target answers with nearly the same
response headers.  The pure-Python C{hpack} codec walks every field of
every block (about a third of the gateway's HTTP/2 CPU time before this
module).  Here a block is decoded (or a header list encoded) once per
state of the dynamic table: as long as the table is unchanged, the same
input gives the same output, so it is looked up instead.

  - L{CachingDecoder}: block bytes -> header list, valid while the
    decoder's dynamic table is unchanged; a block that changes the table
    (a literal with incremental indexing, a size update) is not cached, and
    any table change empties the cache.
  - L{CachingEncoder}: header list -> block bytes, likewise for the
    encoder's table: the first time a list is encoded its fields enter the
    table (the table changes, nothing is cached); the next time every
    field is indexed, the table does not change and the block is kept.

This relies on C{hpack}'s C{HeaderTable.add} and C{maxsize} being the only
ways its dynamic table changes, and on C{h2.connection.H2Connection}
calling its C{encoder.encode} and C{decoder.decode}; both are checked by
C{tests/specter/gateway/test_hpackcache.py}, and setup.cfg pins the
C{h2}/C{hpack} versions that test was written against.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hpack import Decoder, Encoder
from hpack.table import HeaderTable

__all__ = ["CachingDecoder", "CachingEncoder", "installCachingCodecs", "CACHE_ENTRIES", "CACHE_BLOCK_BYTES"]

#: Blocks remembered per codec (per connection) for one table state.
CACHE_ENTRIES = 64
#: Longest header block remembered.
CACHE_BLOCK_BYTES = 2048


class _CountingTable(HeaderTable):
    """
    A header table counting its changes (C{generation}).
    """

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.generation += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.generation += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


class CachingDecoder(Decoder):
    """
    An HPACK decoder answering repeated blocks from a cache.
    """

    def __init__(self, maxHeaderListSize: int) -> None:
        super().__init__(maxHeaderListSize)
        self.header_table = _CountingTable()
        self._cache: dict[bytes, Any] = {}
        self._state: tuple[int, int, int] = (-1, 0, 0)

    def decode(self, data: bytes, raw: bool = False) -> Any:
        table: _CountingTable = self.header_table  # type: ignore[assignment]
        # what a block's meaning and acceptance depend on: the table and
        # the limits (both change only through settings)
        state = (table.generation, self.max_header_list_size, self.max_allowed_table_size)
        if state == self._state:
            found = self._cache.get(data)
            if found is not None and found[0] == raw:
                return found[1]
        headers = super().decode(data, raw)
        if table.generation == state[0] and len(data) <= CACHE_BLOCK_BYTES:
            cache = self._cache
            if self._state != state:
                cache.clear()
                self._state = state
            if len(cache) < CACHE_ENTRIES:
                cache[bytes(data)] = (raw, headers)
        return headers


class CachingEncoder(Encoder):
    """
    An HPACK encoder answering repeated header lists from a cache.
    """

    def __init__(self) -> None:
        super().__init__()
        self.header_table = _CountingTable()
        self._cache: dict[tuple[Any, ...], bytes] = {}
        self._generation = 0

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        table: _CountingTable = self.header_table  # type: ignore[assignment]
        if isinstance(headers, dict) or not huffman:
            return super().encode(headers, huffman)
        key = tuple(headers)
        generation = table.generation
        if generation == self._generation and not table.resized:
            found = self._cache.get(key)
            if found is not None:
                return found
        block = super().encode(key, huffman)
        if table.generation == generation and len(block) <= CACHE_BLOCK_BYTES:
            cache = self._cache
            if self._generation != generation:
                cache.clear()
                self._generation = generation
            if len(cache) < CACHE_ENTRIES:
                cache[key] = block
        return block


def installCachingCodecs(connection: Any) -> None:
    """
    Give an C{h2} connection caching HPACK codecs; call before any frame
    is sent or received (the tables start empty).
    """
    connection.encoder = CachingEncoder()
    connection.decoder = CachingDecoder(connection.decoder.max_header_list_size)
