"""
Aggregations as mergeable monoids.

Each aggregation has an identity (L{Aggregation.new}), an insertion
(L{Aggregation.add}), an associative merge (L{Aggregation.merge}), a result
(L{Aggregation.value}) and a canonical JSON form (L{Aggregation.dump} /
L{Aggregation.load}) used by snapshots and the state hash.  Nothing depends on
dict order, Python's salted C{hash()} or the wall clock.

Exact: count, sum, min, max, avg.  Sketches (error documented in
docs/ceptra.md): distinct (HyperLogLog), quantiles (log-binned histogram,
relative error at most 1/(2*bins_per_octave)), topk (Misra-Gries summary).
"""

from __future__ import annotations

import json
import math
from hashlib import blake2b
from typing import Any

__all__ = ["INT_LIMIT", "Aggregation", "makeAggregation", "isNumber"]

_json = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False)


INT_LIMIT = 2**63


def isNumber(v: object) -> bool:
    """
    C{True} for a finite float or an int of magnitude below 2**63 (not a
    bool).
    """
    t = type(v)
    if t is int:
        return -INT_LIMIT < v < INT_LIMIT  # type: ignore[operator]
    return t is float and math.isfinite(v)  # type: ignore[arg-type]


def isScalar(v: object) -> bool:
    """
    C{True} for a JSON scalar.
    """
    return v is None or type(v) in (str, int, float, bool)


class Aggregation:
    """
    The count monoid; the base of the others.
    """

    fn = "count"
    exact = True

    def accepts(self, v: object) -> bool:
        """
        Whether C{v} (the field value, or C{None} when absent) can be added.
        """
        return True

    def new(self) -> Any:
        """
        The identity.
        """
        return 0

    def add(self, acc: Any, v: Any) -> Any:
        """
        C{acc} with C{v} inserted (may mutate C{acc}).
        """
        return acc + 1

    def merge(self, a: Any, b: Any) -> Any:
        """
        The associative combination of two accumulators (may mutate C{a}).
        """
        return a + b

    def value(self, acc: Any) -> Any:
        """
        The JSON result of C{acc}.
        """
        return acc

    def dump(self, acc: Any) -> Any:
        """
        Canonical JSON form of C{acc}.
        """
        return acc

    def load(self, obj: Any) -> Any:
        """
        Inverse of L{dump}.
        """
        return obj

    def fold(self, values: list[Any]) -> Any:
        """
        Aggregate a list of values from the identity.
        """
        acc = self.new()
        for v in values:
            acc = self.add(acc, v)
        return acc


class _Sum(Aggregation):
    fn = "sum"

    def accepts(self, v: object) -> bool:
        return isNumber(v)

    def add(self, acc: Any, v: Any) -> Any:
        return acc + v


class _Min(Aggregation):
    fn = "min"

    def accepts(self, v: object) -> bool:
        return isNumber(v)

    def new(self) -> Any:
        return None

    def add(self, acc: Any, v: Any) -> Any:
        return v if acc is None or v < acc else acc

    def merge(self, a: Any, b: Any) -> Any:
        return b if a is None else self.add(a, b) if b is not None else a


class _Max(_Min):
    fn = "max"

    def add(self, acc: Any, v: Any) -> Any:
        return v if acc is None or v > acc else acc


class _Avg(Aggregation):
    fn = "avg"

    def accepts(self, v: object) -> bool:
        return isNumber(v)

    def new(self) -> Any:
        return [0, 0]

    def add(self, acc: Any, v: Any) -> Any:
        acc[0] += v
        acc[1] += 1
        return acc

    def merge(self, a: Any, b: Any) -> Any:
        return [a[0] + b[0], a[1] + b[1]]

    def value(self, acc: Any) -> Any:
        return acc[0] / acc[1] if acc[1] else None

    def dump(self, acc: Any) -> Any:
        return list(acc)

    def load(self, obj: Any) -> Any:
        return list(obj)


def _itemKey(v: object) -> str:
    return _json.encode(v)


class _Distinct(Aggregation):
    """
    HyperLogLog with 2**precision one-byte registers, a 64-bit BLAKE2b hash of
    the value's canonical JSON, linear counting for small cardinalities.
    """

    fn = "distinct"
    exact = False

    def __init__(self, precision: int) -> None:
        self.p = precision
        self.m = 1 << precision
        self.shift = 64 - precision
        self.low = (1 << self.shift) - 1
        self.alpha = 0.7213 / (1 + 1.079 / self.m)

    def accepts(self, v: object) -> bool:
        return isScalar(v)

    def new(self) -> Any:
        return bytearray(self.m)

    def add(self, acc: Any, v: Any) -> Any:
        h = int.from_bytes(
            blake2b(_itemKey(v).encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big"
        )
        j = h >> self.shift
        rho = self.shift - (h & self.low).bit_length() + 1
        if rho > acc[j]:
            acc[j] = rho
        return acc

    def merge(self, a: Any, b: Any) -> Any:
        return bytearray(max(x, y) for x, y in zip(a, b, strict=True))

    def value(self, acc: Any) -> Any:
        m = self.m
        zeros = acc.count(0)
        if zeros == m:
            return 0
        est = self.alpha * m * m / math.fsum(math.ldexp(1.0, -r) for r in acc)
        if est <= 2.5 * m and zeros:
            est = m * math.log(m / zeros)
        return int(round(est))

    def dump(self, acc: Any) -> Any:
        return bytes(acc).hex()

    def load(self, obj: Any) -> Any:
        return bytearray(bytes.fromhex(obj))


class _Quantiles(Aggregation):
    """
    A log-binned histogram: C{bins_per_octave} equal bins in every power-of-two
    octave, computed from C{math.frexp} (exact, no libm rounding), merged by
    adding bin counts.  An estimate lies within a relative error of
    1/(2*bins_per_octave) of the exact element of rank floor(q*(n-1)).
    """

    fn = "quantiles"
    exact = False

    def __init__(self, qs: tuple[float, ...], binsPerOctave: int) -> None:
        self.qs = qs
        self.m = binsPerOctave

    def accepts(self, v: object) -> bool:
        return isNumber(v)

    def new(self) -> Any:
        return {}

    def bin(self, v: float) -> int:
        """
        The bin of C{v}: 0 for zero, negative for negative values, monotone.
        """
        if v == 0:
            return 0
        mant, exp = math.frexp(abs(v))
        k = (exp + 1100) * self.m + int((mant - 0.5) * 2 * self.m) + 1
        return k if v > 0 else -k

    def representative(self, k: int) -> float:
        """
        The middle of bin C{k}.
        """
        if k == 0:
            return 0.0
        a = abs(k) - 1
        exp, j = divmod(a, self.m)
        v = math.ldexp(0.5 + (j + 0.5) / (2 * self.m), exp - 1100)
        return v if k > 0 else -v

    def add(self, acc: Any, v: Any) -> Any:
        k = self.bin(v)
        acc[k] = acc.get(k, 0) + 1
        return acc

    def merge(self, a: Any, b: Any) -> Any:
        out = dict(a)
        for k, c in b.items():
            out[k] = out.get(k, 0) + c
        return out

    def value(self, acc: Any) -> Any:
        n = sum(acc.values())
        if not n:
            return None
        keys = sorted(acc)
        out: dict[str, float] = {}
        for q in self.qs:
            rank = math.floor(q * (n - 1))
            seen = 0
            for k in keys:
                seen += acc[k]
                if seen > rank:
                    out[repr(q)] = self.representative(k)
                    break
        return out

    def dump(self, acc: Any) -> Any:
        return [[k, acc[k]] for k in sorted(acc)]

    def load(self, obj: Any) -> Any:
        return {int(k): int(c) for k, c in obj}


class _TopK(Aggregation):
    """
    A Misra-Gries summary of C{capacity} counters: a reported count is at most
    the true count and at least the true count minus n/(capacity+1); values
    are exact while a window has no more than C{capacity} distinct items.
    """

    fn = "topk"
    exact = False

    def __init__(self, k: int, capacity: int) -> None:
        self.k = k
        self.capacity = capacity

    def accepts(self, v: object) -> bool:
        return isScalar(v)

    def new(self) -> Any:
        return {}

    def add(self, acc: Any, v: Any) -> Any:
        item = _itemKey(v)
        c = acc.get(item)
        if c is not None:
            acc[item] = c + 1
        elif len(acc) < self.capacity:
            acc[item] = 1
        else:
            for key in [key for key, n in acc.items() if n == 1]:
                del acc[key]
            for key in acc:
                acc[key] -= 1
        return acc

    def merge(self, a: Any, b: Any) -> Any:
        out = dict(a)
        for key, c in b.items():
            out[key] = out.get(key, 0) + c
        if len(out) > self.capacity:
            cut = sorted(out.values(), reverse=True)[self.capacity]
            out = {key: c - cut for key, c in out.items() if c > cut}
        return out

    def value(self, acc: Any) -> Any:
        top = sorted(acc.items(), key=lambda kv: (-kv[1], kv[0]))[: self.k]
        return [[json.loads(key), c] for key, c in top]

    def dump(self, acc: Any) -> Any:
        return [[key, acc[key]] for key in sorted(acc)]

    def load(self, obj: Any) -> Any:
        return {str(key): int(c) for key, c in obj}


def makeAggregation(fn: str, params: dict[str, Any]) -> Aggregation:
    """
    The aggregation named C{fn} with its validated parameters.
    """
    if fn == "count":
        return Aggregation()
    if fn == "sum":
        return _Sum()
    if fn == "min":
        return _Min()
    if fn == "max":
        return _Max()
    if fn == "avg":
        return _Avg()
    if fn == "distinct":
        return _Distinct(int(params["precision"]))
    if fn == "quantiles":
        return _Quantiles(tuple(params["q"]), int(params["bins_per_octave"]))
    if fn == "topk":
        return _TopK(int(params["k"]), int(params["capacity"]))
    raise ValueError(fn)
