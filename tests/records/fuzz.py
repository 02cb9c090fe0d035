"""Fuzz the compiled record paths against protobuf and the original records.

    PYTHONPATH=. .venv/bin/python tests/records/fuzz.py --seconds 300   # a long run
    SHARDFORGE_FUZZ_SECONDS=60 pytest tests/records/test_fuzz.py        # the suite's, longer

Three targets, each case run through the compiled code:

- **decoder**: batches of tf.Examples serialized by a random encoder that uses everything the wire
  format allows (non-minimal varints for tags, lengths and values, packed and unpacked lists split
  into pieces, unknown fields, groups, duplicate and merged map entries and oneofs, invalid UTF-8
  keys, 11-byte varints), then sometimes mutated byte-wise. ``decode_batch`` must reject exactly
  the batches ``decode_batch_reference`` (protobuf's ``ParseFromString``) rejects and otherwise
  return the same values.
- **keys**: tf.Examples whose map keys are valid UTF-8 or break it one way (overlong forms,
  UTF-16 surrogates, code points past U+10FFFF, truncated sequences, stray continuation and
  invalid lead bytes), placed anywhere a key can be: canonical entries, a key after its value,
  two key fields in one entry (protobuf checks both and keeps the last), a second Features
  message, a feature the spec asks for or not. ``decode_batch`` must agree with protobuf.
- **block**: ``RecordBlock`` s with random offsets and lengths into a buffer: ``decode_batch``
  either raises ValueError (a span outside the buffer) or decodes like the reference.
- **index**: shards (plain and gzip) whose index file is bit-flipped, truncated, or rewritten
  with shifted, swapped, merged or resized entries (tags and flush checks included) under a
  valid checksum, or whose shard changed under
  its index: ``RecordFile`` raises IndexFileError or CorruptRecordError, or returns exactly the
  record asked for.
- **framing**: damaged shards read without an index (the compiled scan and its resync): only
  original records come back, in order.

Prints one JSON line of case counts; exits 1 at the first wrong result (with the case).
``decoder_compiled`` counts decoder cases the compiled walker decided (the rest it handed to the
reference parser as exotic-but-legal encodings).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import shutil
import sys
import tempfile
import time

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from shardforge.records import (  # noqa: E402
    CorruptRecordError,
    ExampleDecodeError,
    FixedLen,
    IndexFileError,
    RecordBlock,
    RecordFile,
    TFRecordWriter,
    VarLen,
    decode_batch,
    index_path,
    read_records,
)
from shardforge.records import example as example_module  # noqa: E402
from shardforge.records.index import _HEADER  # noqa: E402

NAMES = [b"a", b"b", b"tok", "é".encode(), b""]
KEYS = NAMES + [b"other", "ü".encode(), "€𝄞".encode(), b"\xff", b"\xc0\x80", b"\xed\xa0\x80",
                b"\xf4\x90\x80\x80", b"\xe2\x82", b"a\xe0\x9f\xbf", b"\xf0\x8f\xbf\xbf"]


class Failure(AssertionError):
    pass


# --- a random tf.Example encoder ---------------------------------------------------------------


def varint(v: int, rng, pad_p: float = 0.05) -> bytes:
    v &= (1 << 64) - 1
    groups = []
    while True:
        groups.append(v & 0x7F)
        v >>= 7
        if not v:
            break
    room = 11 - len(groups) + (rng.random() < 0.2)  # sometimes past the 10-byte limit
    if rng.random() < pad_p and room > 1:  # non-minimal: zero groups after the value
        groups += [0] * int(rng.integers(1, room))
    return bytes([g | 0x80 for g in groups[:-1]] + [groups[-1]])


def tag(field: int, wire: int, rng) -> bytes:
    return varint(field << 3 | wire, rng, pad_p=0.03)


def ld(field: int, payload: bytes, rng) -> bytes:
    return tag(field, 2, rng) + varint(len(payload), rng) + payload


def unknown(rng) -> bytes:
    field = int(rng.choice([4, 5, 9, 15, 16, 100, 2**29 - 1]))
    wire = int(rng.choice([0, 1, 2, 5, 3]))
    if wire == 0:
        return tag(field, 0, rng) + varint(int(rng.integers(0, 2**63)), rng)
    if wire == 1:
        return tag(field, 1, rng) + rng.bytes(8)
    if wire == 5:
        return tag(field, 5, rng) + rng.bytes(4)
    if wire == 2:
        return ld(field, rng.bytes(int(rng.integers(0, 6))), rng)
    return tag(field, 3, rng) + tag(1, 0, rng) + b"\x01" + tag(field, 4, rng)  # a group


def maybe_unknown(rng, p: float = 0.015) -> bytes:
    return unknown(rng) if rng.random() < p else b""


def int64_list(values, rng) -> bytes:
    out = b""
    i = 0
    while i < len(values):
        k = int(rng.integers(1, len(values) - i + 1))
        chunk = values[i : i + k]
        i += k
        if rng.random() < 0.8:
            out += ld(1, b"".join(varint(int(v), rng, 0.02) for v in chunk), rng)
        else:
            out += b"".join(tag(1, 0, rng) + varint(int(v), rng, 0.02) for v in chunk)
        out += maybe_unknown(rng)
    if not values and rng.random() < 0.3:
        out += ld(1, b"", rng)  # an empty packed run
    return out


def float_list(values, rng) -> bytes:
    out = b""
    i = 0
    while i < len(values):
        k = int(rng.integers(1, len(values) - i + 1))
        chunk = np.asarray(values[i : i + k], dtype="<f4").tobytes()
        i += k
        if rng.random() < 0.8:
            out += ld(1, chunk, rng)
        else:
            out += b"".join(tag(1, 5, rng) + chunk[j : j + 4] for j in range(0, len(chunk), 4))
        out += maybe_unknown(rng)
    return out


def bytes_list(values, rng) -> bytes:
    return b"".join(ld(1, v, rng) + maybe_unknown(rng) for v in values)


def random_values(kind: int, rng):
    n = int(rng.choice([0, 1, 1, 1, 2, 3, 5]))
    if kind == 3:
        return [int(v) for v in rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64)] \
            if rng.random() < 0.5 else [int(v) for v in rng.integers(0, 300, size=n)]
    if kind == 2:
        return rng.standard_normal(n).astype(np.float32).tolist()
    return [rng.bytes(int(rng.integers(0, 5))) for _ in range(n)]


def feature(rng) -> bytes:
    out = b""
    for _ in range(1 if rng.random() < 0.98 else 2):  # sometimes two oneof members
        kind = int(rng.integers(0, 4))
        if kind == 0:
            continue  # a Feature with no list
        values = random_values(kind, rng)
        body = {1: bytes_list, 2: float_list, 3: int64_list}[kind](values, rng)
        out += ld(kind, body, rng) + maybe_unknown(rng)
    return out


def entry(rng) -> bytes:
    key = KEYS[int(rng.integers(0, len(KEYS)))] if rng.random() < 0.08 else \
        NAMES[int(rng.integers(0, len(NAMES)))]
    parts = [ld(1, key, rng), ld(2, feature(rng), rng)]
    if rng.random() < 0.1:
        parts.reverse()
    if rng.random() < 0.01:
        parts.append(ld(2, feature(rng), rng))  # a second value: merged
    if rng.random() < 0.02:
        parts.pop(int(rng.integers(0, len(parts))))
    return b"".join(parts) + maybe_unknown(rng, 0.02)


def example(rng) -> bytes:
    entries = [ld(1, entry(rng), rng) + maybe_unknown(rng, 0.02)
               for _ in range(int(rng.integers(0, 6)))]
    if rng.random() < 0.05:  # Features in two fields: protobuf merges them
        cut = int(rng.integers(0, len(entries) + 1))
        return ld(1, b"".join(entries[:cut]), rng) + ld(1, b"".join(entries[cut:]), rng)
    return ld(1, b"".join(entries), rng) + maybe_unknown(rng, 0.02)


def mutate(data: bytes, rng) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        op = rng.integers(0, 4)
        pos = int(rng.integers(0, len(b) + 1))
        if op == 0 and b:
            b[min(pos, len(b) - 1)] ^= int(rng.integers(1, 256))
        elif op == 1:
            del b[pos:]
        elif op == 2:
            b[pos:pos] = rng.bytes(int(rng.integers(1, 4)))
        else:
            b[pos:pos] = b"\x80" * int(rng.integers(1, 12))  # stretch or break a varint
    return bytes(b)


def random_spec(rng) -> dict:
    spec = {}
    for name in rng.permutation(len(NAMES))[: int(rng.integers(1, 5))]:
        dtype = ["int64", "float32", "bytes"][int(rng.integers(0, 3))]
        if rng.random() < 0.5:
            spec[NAMES[name].decode()] = VarLen(dtype)
        else:
            shape = [(), (1,), (2,)][int(rng.integers(0, 3))]
            default = None if rng.random() < 0.5 else (b"" if dtype == "bytes" else 0)
            spec[NAMES[name].decode()] = FixedLen(dtype, shape, default)
    return spec


# --- the oracle -------------------------------------------------------------------------------


def outcome(decode, records, spec):
    try:
        return decode(records, spec)
    except ExampleDecodeError:
        return "rejected"


def same(a, b) -> bool:
    from tests.records.conftest import assert_batches_equal

    if isinstance(a, str) or isinstance(b, str):
        return a == b
    try:
        assert_batches_equal(a, b)
    except AssertionError:
        return False
    return True


class Fallbacks:
    """Counts the batches the compiled walker hands to the reference parser."""

    def __init__(self) -> None:
        self.count = 0
        self._reference = example_module.decode_batch_reference

    def __call__(self, *args):
        self.count += 1
        return self._reference(*args)


def decoder_case(rng, reference, fallbacks: Fallbacks) -> bool:
    records = [example(rng) for _ in range(int(rng.integers(1, 7)))]
    if rng.random() < 0.3:
        i = int(rng.integers(0, len(records)))
        records[i] = mutate(records[i], rng)
    spec = random_spec(rng)
    before = fallbacks.count
    fast = outcome(decode_batch, records, spec)
    ref = outcome(reference, records, spec)
    if not same(fast, ref):
        raise Failure(f"decoder: {records!r} {spec!r}: fast {fast!r} != reference {ref!r}")
    return fallbacks.count == before


# --- map keys ------------------------------------------------------------------------------------


def utf8(c: int, n: int) -> bytes:
    """Code point ``c`` in ``n`` bytes of UTF-8's bit layout, whether or not that is valid."""
    if n == 1:
        return bytes([c])
    lead = (0xC0, 0xE0, 0xF0)[n - 2] | (c >> (6 * (n - 1)))
    return bytes([lead] + [0x80 | (c >> (6 * k)) & 0x3F for k in range(n - 2, -1, -1)])


def random_key(rng) -> bytes:
    """Valid UTF-8 around one piece that is valid or breaks it one way."""
    what = int(rng.integers(0, 8))
    if what == 0:  # valid: one to four bytes
        n = int(rng.integers(1, 5))
        lo, hi = [(0, 0x80), (0x80, 0x800), (0x800, 0x10000), (0x10000, 0x110000)][n - 1]
        c = int(rng.integers(lo, hi))
        piece = utf8(0xE000 if 0xD800 <= c <= 0xDFFF else c, n)
    elif what == 1:  # overlong: a code point in more bytes than it needs
        n = int(rng.integers(2, 5))
        piece = utf8(int(rng.integers(0, [0x80, 0x800, 0x10000][n - 2])), n)
    elif what == 2:  # a UTF-16 surrogate, alone or as a CESU-8 pair
        piece = utf8(int(rng.integers(0xD800, 0xE000)), 3)
        if rng.random() < 0.5:
            piece = utf8(int(rng.integers(0xD800, 0xDC00)), 3) + utf8(
                int(rng.integers(0xDC00, 0xE000)), 3)
    elif what == 3:  # past U+10FFFF
        piece = utf8(int(rng.integers(0x110000, 0x200000)), 4)
    elif what == 4:  # a multi-byte sequence cut short
        n = int(rng.integers(2, 5))
        piece = utf8([0xE9, 0x20AC, 0x1D11E][n - 2], n)[: int(rng.integers(1, n))]
    elif what == 5:  # a stray continuation byte or a byte that never starts a sequence
        piece = bytes([int(rng.choice([int(rng.integers(0x80, 0xC0)), 0xC0, 0xC1,
                                       int(rng.integers(0xF5, 0x100))]))])
    elif what == 6:
        piece = b"\0"
    else:
        piece = NAMES[int(rng.integers(0, len(NAMES)))]
    before = "é-"[: int(rng.integers(0, 3))].encode()
    after = "a€"[: int(rng.integers(0, 3))].encode()
    return before + piece + after if what != 7 else piece


def key_entry(rng) -> bytes:
    key = random_key(rng)
    value = ld(2, feature(rng), rng)
    how = int(rng.integers(0, 5))
    if how == 0:
        return ld(1, key, rng) + value
    if how == 1:  # the value first
        return value + ld(1, key, rng)
    if how == 2:  # two key fields: protobuf checks both, keeps the last
        keys = [ld(1, key, rng), ld(1, random_key(rng), rng)]
        return b"".join(keys[:: int(rng.choice([1, -1]))]) + value
    if how == 3:  # no key at all: the empty string
        return value
    return ld(1, key, rng) + value + maybe_unknown(rng, 0.2)


def key_example(rng) -> bytes:
    entries = [ld(1, key_entry(rng) if rng.random() < 0.6 else entry(rng), rng)
               for _ in range(int(rng.integers(1, 5)))]
    if rng.random() < 0.2:  # Features in two fields
        cut = int(rng.integers(0, len(entries) + 1))
        return ld(1, b"".join(entries[:cut]), rng) + ld(1, b"".join(entries[cut:]), rng)
    return ld(1, b"".join(entries), rng)


def key_case(rng, reference) -> None:
    records = [key_example(rng) for _ in range(int(rng.integers(1, 4)))]
    spec = random_spec(rng) if rng.random() < 0.8 else {}
    fast = outcome(decode_batch, records, spec)
    ref = outcome(reference, records, spec)
    if not same(fast, ref):
        raise Failure(f"keys: {records!r} {spec!r}: fast {fast!r} != reference {ref!r}")


def block_case(rng, reference) -> None:
    records = [example(rng) for _ in range(int(rng.integers(1, 5)))]
    block = RecordBlock.from_records(records)
    n = len(records)
    offsets, lengths = block.offsets.copy(), block.lengths.copy()
    for _ in range(int(rng.integers(1, 3))):
        i = int(rng.integers(0, n))
        what = int(rng.integers(0, 4))
        if what == 0:
            offsets[i] = min(max(offsets[i], -(2**62)), 2**62) + int(rng.integers(-50, 50))
        elif what == 1:
            lengths[i] = min(max(lengths[i], -(2**62)), 2**62) + int(rng.integers(-50, 50))
        elif what == 2:
            offsets[i] = int(rng.choice([2**62, -(2**62), 2**63 - 1, len(block.buf)]))
        else:
            lengths[i] = int(rng.choice([2**62, 2**63 - 1, -1, 0]))
    spec = random_spec(rng)
    bad = (offsets < 0) | (lengths < 0) | (lengths > len(block.buf) - offsets)
    try:
        fast = outcome(decode_batch, RecordBlock(block.buf, offsets, lengths), spec)
    except ValueError as err:
        if not bad.any() or "RecordBlock record" not in str(err):
            raise Failure(f"block: unexpected {err!r} for {offsets}, {lengths}") from None
        return
    if bad.any():
        raise Failure(f"block: out-of-range spans accepted: {offsets}, {lengths}")
    spans = [block.buf[o : o + n].tobytes() for o, n in zip(offsets, lengths)]
    ref = outcome(reference, spans, spec)
    if not same(fast, ref):
        raise Failure(f"block: {spans!r} {spec!r}: fast {fast!r} != reference {ref!r}")


# --- index files -------------------------------------------------------------------------------


class Shards:
    def __init__(self, directory: str, rng) -> None:
        self.records = [rng.bytes(int(n)) for n in rng.integers(0, 400, size=150)]
        self.paths = []
        for suffix in (".tfrecord", ".tfrecord.gz"):
            path = os.path.join(directory, "train", f"part-00000-of-00001{suffix}")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with TFRecordWriter(path, index=True, flush_every=512) as w:
                w.write_block(RecordBlock.from_records(self.records))
            self.paths.append(path)
        self.original = {p: (open(p, "rb").read(), open(index_path(p), "rb").read())
                         for p in self.paths}

    def restore(self, path: str) -> None:
        shard, index = self.original[path]
        open(path, "wb").write(shard)
        open(index_path(path), "wb").write(index)


def _rewrite_columns(raw: bytes, rng) -> bytes:
    """A lying index with a valid columns checksum: entries shifted, swapped or resized."""
    import google_crc32c

    magic, n, ncols, size, stream, checksum, _ = _HEADER.unpack_from(raw)
    wide = 2 if ncols == 3 else 4  # int64 columns, then uint32 tags[, flush checks]
    body = raw[_HEADER.size :]
    cols = np.concatenate([
        np.frombuffer(body, dtype="<i8", count=wide * n).reshape(wide, n),
        np.frombuffer(body, dtype="<u4", offset=wide * n * 8).reshape(ncols - wide, n),
    ])
    what = int(rng.integers(0, 6))
    c = int(rng.integers(0, ncols))
    i, j = (int(x) for x in rng.integers(0, n, size=2))
    if what == 0:
        cols[c, i], cols[c, j] = cols[c, j], cols[c, i]
    elif what == 1:
        cols[c, i] += int(rng.choice([-17, -16, -1, 1, 16, 17, 4096]))
    elif what == 2:
        cols[c, i:] += int(rng.choice([-16, 16, 1]))
    elif what == 3 and i + 1 < n and rng.random() < 0.5:  # two entries merged, the rest moved
        cols[1, i] += cols[1, i + 1] + 16
        cols = np.delete(cols, i + 1, axis=1)
        n -= 1
    elif what == 3:  # move bytes from one record to the next: the total stays right
        k = int(rng.integers(1, 20))
        cols[1, i] += k
        cols[1, (i + 1) % n] -= k
        cols[0, 1:] = np.cumsum(cols[1, :-1] + 16)
    elif what == 4:  # drop the last records
        k = int(rng.integers(1, n))
        cols = cols[:, : n - k].copy()
        n -= k
    else:
        stream += int(rng.choice([-16, 16, 2**40]))
    data = cols[:wide].astype("<i8").tobytes() + (cols[wide:] & 0xFFFFFFFF).astype("<u4").tobytes()
    return _HEADER.pack(magic, n, ncols, size, stream & (2**64 - 1), checksum,
                        google_crc32c.value(data)) + data


def index_case(rng, shards: Shards) -> None:
    path = shards.paths[int(rng.integers(0, len(shards.paths)))]
    shard, raw = shards.original[path]
    what = int(rng.integers(0, 5))
    if what == 0:
        b = bytearray(raw)
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(0, len(b)))] ^= 1 << int(rng.integers(0, 8))
        raw = bytes(b)
    elif what == 1:
        raw = raw[: int(rng.integers(0, len(raw)))]
    elif what == 2:
        raw = raw[:8] + rng.bytes(int(rng.integers(0, len(raw))))
    elif what == 3:
        raw = _rewrite_columns(raw, rng)
    else:  # the shard changed under its index: other records, or the same ones cut or extended
        tmp = path + ".new"
        others = [rng.bytes(int(n)) for n in rng.integers(0, 400, size=int(rng.integers(1, 300)))]
        with TFRecordWriter(tmp, compression="auto" if path.endswith(".gz") else None) as w:
            w.write_block(RecordBlock.from_records(others))
        os.replace(tmp, path)
    open(index_path(path), "wb").write(raw)
    current = shards.records if what != 4 else None
    try:
        rf = RecordFile(path, verify=bool(rng.random() < 0.7))
        if current is None:
            raise Failure(f"index: a changed shard opened under its old index ({path})")
        if len(rf) > len(current):
            raise Failure(f"index: {len(rf)} records through a damaged index, not {len(current)}")
        # fewer: two entries merged, which only reading every record could see on open; then
        # every read from the merge on must fail
        for _ in range(5):
            i = int(rng.integers(0, len(rf)))
            try:
                got = rf[i]
            except CorruptRecordError:
                continue
            if got != current[i]:
                raise Failure(f"index: rf[{i}] returned another record ({path}, case {what})")
        a = int(rng.integers(0, len(rf)))
        try:
            block = rf.read_block(a, a + int(rng.integers(1, 40)))
            if list(block) != current[a : a + len(block)]:
                raise Failure(f"index: read_block({a}) returned other records ({path})")
        except CorruptRecordError:
            pass
    except (IndexFileError, CorruptRecordError):
        pass
    finally:
        shards.restore(path)


def framing_case(rng, shards: Shards) -> None:
    """A damaged shard read without its index (the compiled scan and resync): what comes back is
    original records, in order."""
    path = shards.paths[int(rng.integers(0, len(shards.paths)))]
    gz = path.endswith(".gz")
    # a gzip shard's damage goes into its records (then compressed again): bits flipped in the
    # compressed bytes can turn an LZ77 back-reference into a verbatim copy of an earlier,
    # intact record, which no framing check can tell apart from the real one (gzip's CRC-32
    # comes at the end of the stream); seed 1400979619 did, on the code before this test too
    data = bytearray(gzip.decompress(shards.original[path][0]) if gz else
                     shards.original[path][0])
    for _ in range(int(rng.integers(1, 4))):
        data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
    if gz:
        data = bytearray(gzip.compress(bytes(data)))
    if rng.random() < 0.3:
        del data[int(rng.integers(0, len(data))):]
    scratch = os.path.join(os.path.dirname(os.path.dirname(path)), "loose",
                           os.path.basename(path))
    os.makedirs(os.path.dirname(scratch), exist_ok=True)
    open(scratch, "wb").write(bytes(data))
    reader = read_records(scratch, on_corrupt="skip")
    originals = iter(shards.records)
    for record in reader:
        if not any(record == o for o in originals):
            raise Failure(f"framing: a record that was never written came out of {scratch}")


def run(seconds: float, seed: int) -> dict:
    logging.getLogger("shardforge.records").setLevel(logging.ERROR)  # skipped records: expected
    rng = np.random.default_rng(seed)
    fallbacks = Fallbacks()
    reference = fallbacks._reference
    example_module.decode_batch_reference = fallbacks
    counts = {"decoder": 0, "decoder_compiled": 0, "keys": 0, "block": 0, "index": 0,
              "framing": 0, "seed": seed}
    tmp = tempfile.mkdtemp(prefix="sf-fuzz-")
    try:
        shards = Shards(tmp, rng)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(20):
                counts["decoder_compiled"] += decoder_case(rng, reference, fallbacks)
                counts["decoder"] += 1
            for _ in range(10):
                key_case(rng, reference)
                counts["keys"] += 1
            for _ in range(5):
                block_case(rng, reference)
                counts["block"] += 1
            index_case(rng, shards)
            counts["index"] += 1
            framing_case(rng, shards)
            counts["framing"] += 1
    finally:
        example_module.decode_batch_reference = reference
        shutil.rmtree(tmp, ignore_errors=True)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float,
                        default=float(os.environ.get("SHARDFORGE_FUZZ_SECONDS", 3)))
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "little"))
    args = parser.parse_args()
    try:
        counts = run(args.seconds, args.seed)
    except Failure as err:
        print(f"FUZZ FAILURE (seed {args.seed}): {err}", file=sys.stderr)
        return 1
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
