"""
LZW as memberlist compresses payloads: least-significant-bit-first code
packing, 8-bit literals, codes of 9 to 12 bits, code 256 clears the table
and 257 ends the stream (the layout of Go's C{compress/lzw} with C{LSB}
order and a literal width of 8, the variant GIF uses).

The compressor starts with a clear code and clears again whenever the
table would reach 4095 entries; the decompressor accepts a clear code
anywhere, refuses codes it cannot know, and stops at a size limit, so a
hostile payload cannot make it allocate more than C{maxBytes}.
"""

from __future__ import annotations

__all__ = ["compress", "decompress", "LZWError"]

_CLEAR = 256
_EOF = 257
_MAX_WIDTH = 12
_MAX_CODE = (1 << _MAX_WIDTH) - 1


class LZWError(ValueError):
    """
    Bytes that are not a valid LZW stream, or one that expands too far.
    """


class _BitWriter:
    def __init__(self) -> None:
        self.out = bytearray()
        self.bits = 0
        self.count = 0

    def write(self, code: int, width: int) -> None:
        self.bits |= code << self.count
        self.count += width
        while self.count >= 8:
            self.out.append(self.bits & 0xFF)
            self.bits >>= 8
            self.count -= 8

    def finish(self) -> bytes:
        if self.count > 0:
            self.out.append(self.bits & 0xFF)
        return bytes(self.out)


def compress(data: bytes) -> bytes:
    """
    C{data} compressed.
    """
    w = _BitWriter()
    width, hi, overflow = 9, _EOF, 1 << 9
    table: dict[int, int] = {}
    w.write(_CLEAR, width)
    if not data:
        w.write(_EOF, width)
        return w.finish()

    def nextCode() -> bool:
        # Advance the next free code; False when the table was just cleared.
        nonlocal width, hi, overflow
        hi += 1
        if hi == overflow:
            width += 1
            overflow <<= 1
        if hi == _MAX_CODE:
            w.write(_CLEAR, width)
            width, hi, overflow = 9, _EOF, 1 << 9
            table.clear()
            return False
        return True

    code = data[0]
    for literal in data[1:]:
        key = (code << 8) | literal
        found = table.get(key)
        if found is not None:
            code = found
            continue
        w.write(code, width)
        code = literal
        if nextCode():
            table[key] = hi
    w.write(code, width)
    nextCode()
    w.write(_EOF, width)
    return w.finish()


def decompress(data: bytes, maxBytes: int) -> bytes:
    """
    C{data} decompressed.

    @raise LZWError: for an invalid stream, a missing end code, or output
        over C{maxBytes}.
    """
    out = bytearray()
    prefix = [0] * (1 << _MAX_WIDTH)
    suffix = [0] * (1 << _MAX_WIDTH)
    width, hi, overflow = 9, _EOF, 1 << 9
    last = -1
    bits = count = 0
    pos = 0
    n = len(data)
    while True:
        while count < width:
            if pos >= n:
                raise LZWError("LZW stream ends without an end code")
            bits |= data[pos] << count
            pos += 1
            count += 8
        code = bits & ((1 << width) - 1)
        bits >>= width
        count -= width
        if code < _CLEAR:
            out.append(code)
            if last >= 0:
                suffix[hi], prefix[hi] = code, last
        elif code == _CLEAR:
            width, hi, overflow = 9, _EOF, 1 << 9
            last = -1
            continue
        elif code == _EOF:
            return bytes(out)
        elif code <= hi and last >= 0:
            if code == hi:
                # The code being defined: the last expansion plus its head.
                previous = _expand(last, prefix, suffix)
                chunk = previous + previous[:1]
            else:
                chunk = _expand(code, prefix, suffix)
            out += chunk
            suffix[hi], prefix[hi] = chunk[0], last
        else:
            raise LZWError(f"invalid LZW code {code}")
        if len(out) > maxBytes:
            raise LZWError(f"LZW payload expands beyond {maxBytes} bytes")
        last, hi = code, hi + 1
        if hi >= overflow:
            if width == _MAX_WIDTH:
                last = -1
                hi -= 1
            else:
                width += 1
                overflow <<= 1


def _expand(code: int, prefix: list[int], suffix: list[int]) -> bytes:
    chunk = bytearray()
    while code >= _CLEAR:
        chunk.append(suffix[code])
        code = prefix[code]
    chunk.append(code)
    chunk.reverse()
    return bytes(chunk)
