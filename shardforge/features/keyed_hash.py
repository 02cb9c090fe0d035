"""Keyed string hashing: ``tf.strings.to_hash_bucket_strong`` / ``tft.hash_strings(key=...)``.

TensorFlow's strong hash is SipHash-2-4 with the 128-bit key given as two uint64 words
(``key=[k0, k1]``), the bucket ``SipHash(s) % num_buckets``. A keyed hash makes the buckets
unpredictable to whoever does not know the key (no crafted collisions); the unkeyed
``categorical_hash`` (FarmHash Fingerprint64) is the fast one.

>>> ids = hash_strings("email", 1000, hash_key=(123, 456))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from shardforge.features.categorical import LookupColumn, _key_dtype, _name, _source
from shardforge.features.column import Column, check_int
from shardforge.features.hashing import StrBuf
from shardforge.features.strings import to_strbuf

_NOPYTHON = dict(cache=True, nogil=True)


@numba.njit(**_NOPYTHON)
def _rotl(x, b):
    return (x << np.uint64(b)) | (x >> np.uint64(64 - b))


@numba.njit(**_NOPYTHON)
def _sip_round(v0, v1, v2, v3):
    v0 += v1
    v1 = _rotl(v1, 13)
    v1 ^= v0
    v0 = _rotl(v0, 32)
    v2 += v3
    v3 = _rotl(v3, 16)
    v3 ^= v2
    v0 += v3
    v3 = _rotl(v3, 21)
    v3 ^= v0
    v2 += v1
    v1 = _rotl(v1, 17)
    v1 ^= v2
    v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


@numba.njit(**_NOPYTHON)
def _siphash24_all(buf, offsets, k0, k1):
    """SipHash-2-4 (Aumasson & Bernstein) of each string of a StrBuf, as uint64."""
    n = len(offsets) - 1
    out = np.empty(n, dtype=np.uint64)
    for r in range(n):
        s, e = offsets[r], offsets[r + 1]
        length = e - s
        v0 = k0 ^ np.uint64(0x736F6D6570736575)
        v1 = k1 ^ np.uint64(0x646F72616E646F6D)
        v2 = k0 ^ np.uint64(0x6C7967656E657261)
        v3 = k1 ^ np.uint64(0x7465646279746573)
        end = s + (length // 8) * 8
        i = s
        while i < end:
            m = np.uint64(0)
            for k in range(8):
                m |= np.uint64(buf[i + k]) << np.uint64(8 * k)
            v3 ^= m
            v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
            v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
            v0 ^= m
            i += 8
        last = np.uint64(length & 0xFF) << np.uint64(56)
        for k in range(e - end):
            last |= np.uint64(buf[end + k]) << np.uint64(8 * k)
        v3 ^= last
        v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
        v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
        v0 ^= last
        v2 ^= np.uint64(0xFF)
        for _ in range(4):
            v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
        out[r] = v0 ^ v1 ^ v2 ^ v3
    return out


def siphash24(values: np.ndarray | StrBuf, key: tuple[int, int]) -> np.ndarray:
    """SipHash-2-4 of each byte string under the 128-bit ``key`` ``(k0, k1)``, as uint64
    (TensorFlow's ``StrongKeyedHash``)."""
    sb = values if isinstance(values, StrBuf) else StrBuf.from_values(values)
    return _siphash24_all(sb.buf, sb.offsets, np.uint64(key[0]), np.uint64(key[1]))


@dataclass(frozen=True)
class KeyedHashColumn(LookupColumn):
    """``SipHash-2-4(value, key) % hash_bucket_size``: ``tf.strings.to_hash_bucket_strong``'s
    bucket (int64 values hashed as their decimal strings)."""

    hash_bucket_size: int = 1
    key: tuple[int, int] = (0, 0)
    column_type = "keyed_hash"
    reads_strbuf = True

    def num_buckets(self, state: dict[str, Any]) -> int:
        return self.hash_bucket_size

    def ids(self, values: Any, state: dict[str, Any]) -> np.ndarray:
        h = siphash24(to_strbuf(values), self.key)
        return (h % np.uint64(self.hash_bucket_size)).astype(np.int64)


def hash_strings(
    key: str | Column,
    hash_buckets: int,
    hash_key: Sequence[int] | None = None,
    dtype: str = "bytes",
    multivalued: bool = False,
    default: Any = "",
    name: str | None = None,
) -> LookupColumn:
    """``tft.hash_strings(strings, hash_buckets, key)``: FarmHash buckets without a key (the
    same column as ``categorical_hash``), SipHash-2-4 buckets with ``hash_key=(k0, k1)`` (two
    64-bit words, negative ones read as uint64 as TensorFlow does;
    ``tf.strings.to_hash_bucket_strong``).

    >>> ids = hash_strings("email", 1000, hash_key=(123, 456))
    """
    from shardforge.features.categorical import categorical_hash

    if hash_key is None:
        return categorical_hash(key, hash_buckets, dtype, multivalued, default, name)
    check_int(hash_buckets, f"hash_strings({key!r}): hash_buckets")
    words = tuple(hash_key)
    if len(words) != 2 or not all(
            isinstance(w, (int, np.integer)) and -(2**63) <= w < 2**64 for w in words):
        raise ValueError(f"hash_strings({key!r}): hash_key must be two 64-bit integers "
                         f"(tft.hash_strings' key=[k0, k1]), got {hash_key!r}")
    dtype = _key_dtype(dtype, key)
    src = _source(key, dtype, multivalued, default, "hash_strings")
    return KeyedHashColumn(src, _name(key, name), False, None, int(hash_buckets),
                           (int(words[0]) % 2**64, int(words[1]) % 2**64))
