"""FarmHash Fingerprint64 (TensorFlow's string hash), vectorized with numba.

``tf.strings.to_hash_bucket_fast(s, n)`` is ``Fingerprint64(s) % n`` where Fingerprint64 is
``farmhashna::Hash64``; TensorFlow's vocabulary tables hash OOV values the same way and its crossed
columns combine fingerprints with ``FingerprintCat64``. Strings travel as one concatenated byte
buffer plus ``int64`` offsets (:class:`StrBuf`) so that no Python object is touched per value.

>>> hash_bucket(np.array([b"hello", b""], dtype=object), 100).tolist()  # == TF's buckets
[96, 63]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa

from shardforge.records.layout import mix64
from shardforge.records.spec import Batch, Ragged, batch_size

_K0 = np.uint64(0xC3A5C85C97CB3127)
_K1 = np.uint64(0xB492B66FBE98F273)
_K2 = np.uint64(0x9AE16A3B2F90404F)
_KMUL = np.uint64(0xC6A4A7935BD1E995)
_U8 = np.uint64(8)
_NOPYTHON = dict(cache=True, nogil=True)


@numba.njit(**_NOPYTHON)
def _rot(val, shift):
    s = np.uint64(shift)
    return (val >> s) | (val << (np.uint64(64) - s))


@numba.njit(**_NOPYTHON)
def _fetch64(buf, i):
    r = np.uint64(0)
    for k in range(8):
        r |= np.uint64(buf[i + k]) << np.uint64(8 * k)
    return r


@numba.njit(**_NOPYTHON)
def _fetch32(buf, i):
    r = np.uint64(0)
    for k in range(4):
        r |= np.uint64(buf[i + k]) << np.uint64(8 * k)
    return r


@numba.njit(**_NOPYTHON)
def _shift_mix(v):
    return v ^ (v >> np.uint64(47))


@numba.njit(**_NOPYTHON)
def _hash_len16(u, v, mul):
    a = (u ^ v) * mul
    a ^= a >> np.uint64(47)
    b = (v ^ a) * mul
    b ^= b >> np.uint64(47)
    return b * mul


@numba.njit(**_NOPYTHON)
def _hash_len0to16(buf, s, n):
    ln = np.uint64(n)
    if n >= 8:
        mul = _K2 + ln * np.uint64(2)
        a = _fetch64(buf, s) + _K2
        b = _fetch64(buf, s + n - 8)
        c = _rot(b, 37) * mul + a
        d = (_rot(a, 25) + b) * mul
        return _hash_len16(c, d, mul)
    if n >= 4:
        mul = _K2 + ln * np.uint64(2)
        a = _fetch32(buf, s)
        return _hash_len16(ln + (a << np.uint64(3)), _fetch32(buf, s + n - 4), mul)
    if n > 0:
        a = np.uint64(buf[s])
        b = np.uint64(buf[s + (n >> 1)])
        c = np.uint64(buf[s + n - 1])
        y = (a + (b << _U8)) & np.uint64(0xFFFFFFFF)
        z = (ln + (c << np.uint64(2))) & np.uint64(0xFFFFFFFF)
        return _shift_mix(y * _K2 ^ z * _K0) * _K2
    return _K2


@numba.njit(**_NOPYTHON)
def _hash_len17to32(buf, s, n):
    mul = _K2 + np.uint64(n) * np.uint64(2)
    a = _fetch64(buf, s) * _K1
    b = _fetch64(buf, s + 8)
    c = _fetch64(buf, s + n - 8) * mul
    d = _fetch64(buf, s + n - 16) * _K2
    return _hash_len16(_rot(a + b, 43) + _rot(c, 30) + d, a + _rot(b + _K2, 18) + c, mul)


@numba.njit(**_NOPYTHON)
def _hash_len33to64(buf, s, n):
    mul = _K2 + np.uint64(n) * np.uint64(2)
    a = _fetch64(buf, s) * _K2
    b = _fetch64(buf, s + 8)
    c = _fetch64(buf, s + n - 8) * mul
    d = _fetch64(buf, s + n - 16) * _K2
    y = _rot(a + b, 43) + _rot(c, 30) + d
    z = _hash_len16(y, a + _rot(b + _K2, 18) + c, mul)
    e = _fetch64(buf, s + 16) * mul
    f = _fetch64(buf, s + 24)
    g = (y + _fetch64(buf, s + n - 32)) * mul
    h = (z + _fetch64(buf, s + n - 24)) * mul
    return _hash_len16(_rot(e + f, 43) + _rot(g, 30) + h, e + _rot(f + a, 18) + g, mul)


@numba.njit(**_NOPYTHON)
def _weak32(buf, s, a, b):
    w = _fetch64(buf, s)
    x = _fetch64(buf, s + 8)
    y = _fetch64(buf, s + 16)
    z = _fetch64(buf, s + 24)
    a += w
    b = _rot(b + a + z, 21)
    c = a
    a += x
    a += y
    b += _rot(a, 44)
    return a + z, b + c


@numba.njit(**_NOPYTHON)
def fingerprint64_at(buf, s, n):
    """farmhashna::Hash64 of ``buf[s:s+n]`` (TensorFlow's ``Fingerprint64``)."""
    if n <= 16:
        return _hash_len0to16(buf, s, n)
    if n <= 32:
        return _hash_len17to32(buf, s, n)
    if n <= 64:
        return _hash_len33to64(buf, s, n)
    seed = np.uint64(81)
    x = seed
    y = seed * _K1 + np.uint64(113)
    z = _shift_mix(y * _K2 + np.uint64(113)) * _K2
    v0 = np.uint64(0)
    v1 = np.uint64(0)
    w0 = np.uint64(0)
    w1 = np.uint64(0)
    x = x * _K2 + _fetch64(buf, s)
    end = s + ((n - 1) // 64) * 64
    last64 = end + ((n - 1) & 63) - 63
    p = s
    while True:
        x = _rot(x + y + v0 + _fetch64(buf, p + 8), 37) * _K1
        y = _rot(y + v1 + _fetch64(buf, p + 48), 42) * _K1
        x ^= w1
        y += v0 + _fetch64(buf, p + 40)
        z = _rot(z + w0, 33) * _K1
        v0, v1 = _weak32(buf, p, v1 * _K1, x + w0)
        w0, w1 = _weak32(buf, p + 32, z + w1, y + _fetch64(buf, p + 16))
        x, z = z, x
        p += 64
        if p == end:
            break
    mul = _K1 + ((z & np.uint64(0xFF)) << np.uint64(1))
    p = last64
    w0 += np.uint64((n - 1) & 63)
    v0 += w0
    w0 += v0
    x = _rot(x + y + v0 + _fetch64(buf, p + 8), 37) * mul
    y = _rot(y + v1 + _fetch64(buf, p + 48), 42) * mul
    x ^= w1 * np.uint64(9)
    y += v0 * np.uint64(9) + _fetch64(buf, p + 40)
    z = _rot(z + w0, 33) * mul
    v0, v1 = _weak32(buf, p, v1 * mul, x + w0)
    w0, w1 = _weak32(buf, p + 32, z + w1, y + _fetch64(buf, p + 16))
    x, z = z, x
    return _hash_len16(
        _hash_len16(v0, w0, mul) + _shift_mix(y) * _K0 + z,
        _hash_len16(v1, w1, mul) + x,
        mul,
    )


@numba.njit(**_NOPYTHON)
def _fingerprint_all(buf, offsets):
    n = len(offsets) - 1
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        out[i] = fingerprint64_at(buf, offsets[i], offsets[i + 1] - offsets[i])
    return out


@numba.njit(**_NOPYTHON)
def fingerprint_cat64(fp1, fp2):
    """TensorFlow's ``FingerprintCat64``: order-dependent combination of two fingerprints."""
    result = fp1 ^ _KMUL
    result ^= _shift_mix(fp2 * _KMUL) * _KMUL
    result *= _KMUL
    result = _shift_mix(result) * _KMUL
    return _shift_mix(result)


@numba.njit(**_NOPYTHON)
def _equal_at(buf_a, s_a, n_a, buf_b, s_b, n_b):
    if n_a != n_b:
        return False
    for k in range(n_a):
        if buf_a[s_a + k] != buf_b[s_b + k]:
            return False
    return True


@numba.njit(**_NOPYTHON)
def _verify_equal(buf_a, off_a, idx_a, buf_b, off_b, idx_b):
    """Per pair: is string ``idx_a[i]`` of A byte-equal to string ``idx_b[i]`` of B?"""
    out = np.empty(len(idx_a), dtype=np.bool_)
    for i in range(len(idx_a)):
        ia = idx_a[i]
        ib = idx_b[i]
        out[i] = _equal_at(
            buf_a, off_a[ia], off_a[ia + 1] - off_a[ia], buf_b, off_b[ib], off_b[ib + 1] - off_b[ib]
        )
    return out


@dataclass
class StrBuf:
    """``n`` byte strings as one ``uint8`` buffer plus ``n + 1`` int64 offsets (Arrow layout)."""

    buf: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_values(cls, values: np.ndarray) -> StrBuf:
        """From an object array of ``bytes`` (or UTF-8 str) via Arrow, without a Python loop."""
        arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else _to_arrow(values)
        return cls.from_arrow(arr)

    @classmethod
    def from_arrow(cls, arr: pa.Array | pa.ChunkedArray) -> StrBuf:
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            arr = arr.cast(pa.large_binary() if pa.types.is_large_string(arr.type) else pa.binary())
        if arr.null_count:
            arr = arr.fill_null(b"")
        off_type = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
        _, off_buf, data_buf = arr.buffers()
        offsets = np.frombuffer(off_buf, dtype=off_type)[arr.offset : arr.offset + len(arr) + 1]
        offsets = offsets.astype(np.int64)
        data = (
            np.frombuffer(data_buf, dtype=np.uint8)
            if data_buf is not None
            else np.zeros(0, np.uint8)
        )
        return cls(data, offsets)

    def to_objects(self, index: np.ndarray | None = None) -> np.ndarray:
        """The strings (or those at ``index``) as an object array of ``bytes``."""
        index = np.arange(len(self)) if index is None else np.asarray(index, dtype=np.int64)
        raw = self.buf.tobytes()
        starts, stops = self.offsets[index], self.offsets[index + 1]
        out = np.empty(len(index), dtype=object)
        out[:] = [raw[a:b] for a, b in zip(starts.tolist(), stops.tolist())]
        return out


def _to_arrow(values: np.ndarray) -> pa.Array:
    values = np.asarray(values, dtype=object)
    try:
        return pa.array(values, type=pa.large_binary())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        # str values: Arrow encodes them as UTF-8, exactly like ``str.encode()``
        return pa.array(values, type=pa.large_string()).cast(pa.large_binary())


def fingerprint64(values: np.ndarray | StrBuf) -> np.ndarray:
    """TensorFlow's ``Fingerprint64`` of each string, as ``uint64``."""
    sb = values if isinstance(values, StrBuf) else StrBuf.from_values(values)
    return _fingerprint_all(sb.buf, sb.offsets)


def int_to_strbuf(values: np.ndarray) -> StrBuf:
    """Decimal strings of int64 values (TensorFlow's ``as_string``), e.g. to hash int inputs."""
    text = np.asarray(values, dtype=np.int64).astype(np.bytes_)
    return StrBuf.from_values(np.asarray(text, dtype=object))


def hash_bucket(values: np.ndarray | StrBuf, num_buckets: int) -> np.ndarray:
    """``tf.strings.to_hash_bucket_fast``: Fingerprint64 modulo ``num_buckets``, as int64."""
    return (fingerprint64(values) % np.uint64(num_buckets)).astype(np.int64)


@numba.njit(**_NOPYTHON)
def _cross_hash(columns_fp, row_splits, n_rows, num_buckets, hash_key):
    # Cartesian product of each row's values across columns, in TensorFlow's order (last column
    # varies fastest), hashed with FingerprintCat64 starting from hash_key.
    n_cols = len(row_splits)
    counts = np.ones(n_rows, dtype=np.int64)
    for c in range(n_cols):
        for r in range(n_rows):
            counts[r] *= row_splits[c][r + 1] - row_splits[c][r]
    splits = np.zeros(n_rows + 1, dtype=np.int64)
    for r in range(n_rows):
        splits[r + 1] = splits[r] + counts[r]
    out = np.empty(splits[-1], dtype=np.int64)
    idx = np.zeros(n_cols, dtype=np.int64)
    for r in range(n_rows):
        total = counts[r]
        for t in range(total):
            rem = t
            for c in range(n_cols - 1, -1, -1):
                length = row_splits[c][r + 1] - row_splits[c][r]
                idx[c] = rem % length
                rem //= length
            h = hash_key
            for c in range(n_cols):
                h = fingerprint_cat64(h, columns_fp[c][row_splits[c][r] + idx[c]])
            out[splits[r] + t] = np.int64(h % num_buckets)
    return out, splits


@numba.njit(**_NOPYTHON)
def _cat_all(h, fp):
    out = np.empty(len(h), dtype=np.uint64)
    for i in range(len(h)):
        out[i] = fingerprint_cat64(h[i], fp[i])
    return out


CROSS_HASH_KEY = 0xDECAFCAFFE  # TensorFlow's default hash_key for crossed columns


def cross_hash(
    columns: list[tuple[np.ndarray, np.ndarray]], num_buckets: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hashed cross of ragged columns like ``tf.sparse.cross_hashed`` (``crossed_column``).

    ``columns`` is a list of ``(per-value uint64 key, row_splits)``: a string value's key is its
    Fingerprint64, an int64 value is its own key. Returns ``(ids, row_splits)``.
    """
    n_rows = len(columns[0][1]) - 1
    one_each = np.arange(n_rows + 1, dtype=np.int64)
    if all(np.array_equal(sp, one_each) for _, sp in columns):  # one value per row: no product
        h = np.full(n_rows, np.uint64(CROSS_HASH_KEY), dtype=np.uint64)
        for k, _ in columns:
            h = _cat_all(h, np.ascontiguousarray(k, dtype=np.uint64))
        return (h % np.uint64(num_buckets)).astype(np.int64), np.arange(n_rows + 1, dtype=np.int64)
    keys = numba.typed.List([np.ascontiguousarray(k, dtype=np.uint64) for k, _ in columns])
    splits = numba.typed.List([np.ascontiguousarray(s, dtype=np.int64) for _, s in columns])
    return _cross_hash(keys, splits, n_rows, np.uint64(num_buckets), np.uint64(CROSS_HASH_KEY))


@numba.njit(**_NOPYTHON)
def _slot(h, mask):
    # Fingerprints are already uniformly mixed: their low bits index an open-addressing table.
    return np.int64(h & np.uint64(mask))


@numba.njit(**_NOPYTHON)
def group_fingerprints(fp):
    """Group equal fingerprints in one pass: (group of each value, first index, count) per group
    in first-occurrence order (a hash table, not a sort)."""
    n = len(fp)
    cap = 1024
    slots = np.full(cap, -1, dtype=np.int64)
    size = max(n, 1)
    gfp = np.empty(size, dtype=np.uint64)
    first = np.empty(size, dtype=np.int64)
    counts = np.zeros(size, dtype=np.int64)
    gid = np.empty(n, dtype=np.int64)
    ng = 0
    for i in range(n):
        h = fp[i]
        s = _slot(h, cap - 1)
        while True:
            g = slots[s]
            if g == -1:
                slots[s] = ng
                gfp[ng] = h
                first[ng] = i
                counts[ng] = 1
                gid[i] = ng
                ng += 1
                if ng * 2 > cap:  # keep the load factor under 1/2
                    cap *= 2
                    slots = np.full(cap, -1, dtype=np.int64)
                    for k in range(ng):
                        t = _slot(gfp[k], cap - 1)
                        while slots[t] != -1:
                            t = (t + 1) & (cap - 1)
                        slots[t] = k
                break
            if gfp[g] == h:
                counts[g] += 1
                gid[i] = g
                break
            s = (s + 1) & (cap - 1)
    return gid, first[:ng].copy(), counts[:ng].copy()


@numba.njit(**_NOPYTHON)
def build_table(fp):
    """Open-addressing slots (load <= 1/2) mapping fingerprints to their positions in ``fp``."""
    cap = 8
    while cap < 2 * len(fp):
        cap *= 2
    slots = np.full(cap, -1, dtype=np.int64)
    for i in range(len(fp)):
        s = _slot(fp[i], cap - 1)
        while slots[s] != -1:
            s = (s + 1) & (cap - 1)
        slots[s] = i
    return slots


@numba.njit(**_NOPYTHON)
def _probe(slots, table_fp, tbuf, toff, fp, vbuf, voff):
    mask = len(slots) - 1
    out = np.full(len(fp), -1, dtype=np.int64)
    for i in range(len(fp)):
        h = fp[i]
        s = _slot(h, mask)
        while True:
            j = slots[s]
            if j == -1:
                break
            if table_fp[j] == h and _equal_at(
                vbuf, voff[i], voff[i + 1] - voff[i], tbuf, toff[j], toff[j + 1] - toff[j]
            ):
                out[i] = j
                break
            s = (s + 1) & mask
    return out


class StringTable:
    """Exact string -> position lookup: a fingerprint hash table, then a byte comparison."""

    def __init__(self, strings: StrBuf) -> None:
        self.strings = strings
        self.fp = fingerprint64(strings)
        self.slots = build_table(self.fp)

    def __len__(self) -> int:
        return len(self.strings)

    def lookup(self, values: StrBuf, values_fp: np.ndarray) -> np.ndarray:
        """Position of each value in the table, -1 if absent."""
        t = self.strings
        return _probe(self.slots, self.fp, t.buf, t.offsets, values_fp, values.buf, values.offsets)


# ---------------------------------------------------------------------------------------------
# Row hashes: what places a row in its split and shard (records.layout)


def _value_hashes(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype == object:
        return fingerprint64(values)
    if values.dtype.kind == "f":
        return mix64(values.astype(np.float64).view(np.uint64))
    return mix64(values.astype(np.int64).view(np.uint64))


def _column_hashes(col, n: int) -> np.ndarray:
    if isinstance(col, Ragged):
        lengths = col.row_lengths().astype(np.uint64)
        position = np.arange(len(col.values), dtype=np.uint64) - np.repeat(
            col.row_splits[:-1], col.row_lengths()).astype(np.uint64)
        mixed = mix64(_value_hashes(col.values) ^ mix64(position + np.uint64(1)))
        sums = np.zeros(len(mixed) + 1, dtype=np.uint64)
        np.cumsum(mixed, dtype=np.uint64, out=sums[1:])
        return mix64((sums[col.row_splits[1:]] - sums[col.row_splits[:-1]]) ^ lengths)
    values = np.asarray(col).reshape(n, -1)
    h = np.zeros(n, dtype=np.uint64)
    for j in range(values.shape[1]):
        h = mix64(h ^ _value_hashes(values[:, j]) + np.uint64(j))
    return h


def row_hashes(batch: Batch, columns: Sequence[str]) -> np.ndarray:
    """A stable 64-bit hash per row of the typed input ``columns``, vectorized: the same on
    every run, runner and machine (FarmHash for strings, splitmix64 for numbers; no Python
    ``hash`` and nothing learned)."""
    n = batch_size(batch)
    h = np.full(n, 0x9E3779B97F4A7C15, dtype=np.uint64)
    for name in sorted(columns):
        h = mix64(h ^ _column_hashes(batch[name], n))
    return h
