"""Index files and random access to records.

A shard's index holds, for every record, the offset of its header and the length of its data
(``read_index(path) -> (offsets, lengths)``). Offsets count bytes of the *uncompressed record
stream*: for an uncompressed shard that is the file itself, so record ``i`` is one ``pread``.

**Where it lives.** ``index_path(shard)``: ``<dir>/../.index/<dir name>/<shard name>.idx``, i.e.
``out/train/part-00000-of-00004.tfrecord`` has its index in
``out/.index/train/part-00000-of-00004.tfrecord.idx``.
Not beside the shard because TensorFlow's ``tf.io.gfile.glob("out/train/*")`` and Beam's
``FileSystems.match`` return hidden files and folders too, and a ``TFRecordDataset`` over an index
file fails; in a sibling folder no glob of the shards' folder (``*``, ``part-*``, ``*.tfrecord*``)
matches it, with Python's, TensorFlow's or Beam's matcher.

Every record also has a *tag*: the CRC-32C of ``(ordinal, offset, length, masked data CRC)``
(the last from the record's own frame). Reading record ``i`` recomputes the tag from the frame it
finds and refuses the read if it differs, so an entry moved to another position (entries shifted,
swapped, or two records merged into one) names no record: a record is only ever returned as the
ordinal it was written as.

For a GZIP/ZLIB shard the index also stores, per record, the flush block it starts in: the
compressed file offset of the last full-flush point before the record, the stream offset at
that point (shards written by shardforge have one every 64 KiB of records), and the CRC-32C of
the first ``FLUSH_CHECK_SPAN`` stream bytes that point decompresses to. Reading record ``i`` seeks
to that point, decompresses at most one block plus the records asked for, and checks those first
bytes, so a file offset paired with another block's stream offset is refused before any record
of it is. A compressed file written elsewhere has no flush points we know of: its index
(``build_index``) has a single block at offset 0, and reading record ``i`` decompresses from the
start of the file.

File layout (little-endian): ``b"SFIDX003"``; ``uint64 n_records, n_columns`` (3 or 6),
``uint64 shard_size, stream_size``, ``uint32 shard_checksum, columns_checksum``; then each column
as ``n_records`` values: int64 offsets, lengths[, block_file_offsets, block_stream_offsets], then
uint32 tags[, block_checks]. ``shard_checksum`` is the CRC-32C of the shard's first and last
64 KiB and its size: with the size it binds the index to the file it was written for (a rewritten
shard is stale, not misread). An index of an older format is refused (IndexFileError) with the
command that rebuilds it: ``shardforge index <shard>``.

What the checks cannot stop: the index lives beside the data, so someone who can write it and
recomputes every tag and check the way the writer does can describe the records in another
order. The tags make an index that was edited, shifted, copied from elsewhere or damaged an
error; they are not a signature.

**Checked on load** (``load_index``, so before any offset is followed): the format version, the
columns' checksum, the shard's size and checksum, and that the offsets start at 0 and run back to
back with the lengths to the end of the stream (the file's size when uncompressed); a compressed
shard's flush blocks must lie in the file and start at records, and the records of one block
must agree about its stream offset and check. Any failure is an
:class:`~shardforge.records.errors.IndexFileError` naming the index, the shard and what is wrong.
Reading then checks each record's stored length against the index, its tag, its CRCs
(``verify``) and, for a compressed shard, the first bytes of the flush block it starts in.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import struct
import zlib

import google_crc32c
import numpy as np

from shardforge.records import _kernels as K
from shardforge.records import fs
from shardforge.records.errors import CorruptRecordError, IndexFileError
from shardforge.records.framing import (
    _WBITS,
    FLUSH_EVERY,
    PathLike,
    RecordBlock,
    data_crcs,
    iter_blocks,
    resolve_compression,
)
from shardforge.records.layout import INDEX_SUFFIX, index_path

log = logging.getLogger("shardforge.records")

VERSION = 3
MAGIC = b"SFIDX%03d" % VERSION
_HEADER = struct.Struct("<8sQQQQII")
FINGERPRINT_SPAN = 64 << 10  # bytes at each end of a shard that its index's checksum covers
FLUSH_CHECK_SPAN = 64  # stream bytes after a flush point that its check covers
FRAMING = K.HEADER + K.FOOTER
_WARNED: set[str] = set()  # shards whose old-layout index was reported


@dataclasses.dataclass
class Index:
    """One shard's index: int64 columns of one entry per record (see the module docstring)."""

    offsets: np.ndarray
    lengths: np.ndarray
    tags: np.ndarray
    block_offsets: np.ndarray | None = None  # compressed shards only
    block_stream_offsets: np.ndarray | None = None
    block_checks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def stream_size(self) -> int:
        """Bytes of the (uncompressed) record stream the index describes."""
        return int(self.offsets[-1] + self.lengths[-1]) + FRAMING if len(self) else 0


def legacy_index_path(shard_path: PathLike) -> str:
    """Where shardforge before index format 2 put an index: beside the shard."""
    return os.fspath(shard_path) + INDEX_SUFFIX


def shard_fingerprint(path: PathLike | fs.Ranges) -> tuple[int, int]:
    """``(size, checksum)`` of a shard: CRC-32C of its first and last 64 KiB and its size. Given
    the shard's open :class:`~shardforge.records.fs.Ranges`, the ends read stay kept there, so
    reading the records after costs no byte twice."""
    f = path if isinstance(path, fs.Ranges) else fs.Ranges(path)
    size = f.size
    head = f.pread(FINGERPRINT_SPAN, 0)
    tail_at = max(0, size - FINGERPRINT_SPAN)
    start = max(tail_at, len(head))  # what the head holds is not read again
    rest = f.pread(size - start, start)
    f.keep(0, head)
    f.keep(start, rest)
    if f is not path:
        f.close()
    tail = rest if start == tail_at else (head + rest)[tail_at:]
    return size, google_crc32c.value(head + tail + struct.pack("<Q", size))


def index_records(shard_path: PathLike) -> int:
    """The number of records a shard's index lists, from its header alone (one small read; the
    index is checked when the shard is opened). FileNotFoundError when it has no index."""
    where = index_path(shard_path)
    raw = fs.read_range(where, 0, _HEADER.size)
    magic, n, *_ = _HEADER.unpack_from(raw) if len(raw) == _HEADER.size else (b"", 0)
    if magic != MAGIC:
        return len(load_index(shard_path))  # raises the error that says what is wrong
    return int(n)


def make_index(
    path: PathLike, offsets: np.ndarray, lengths: np.ndarray, data_crcs: np.ndarray, *,
    compression: str | None = None, block_offsets: np.ndarray | None = None,
    block_stream_offsets: np.ndarray | None = None,
) -> Index:
    """The index of the shard at ``path`` from each record's stream offset, data length and
    masked data CRC (from its frame), and for a compressed shard each record's flush point
    (file and stream offset): computes the tags, and the checks by decompressing the file at
    each flush point."""
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    tags = np.empty(len(offsets), dtype=np.int64)
    K.record_tags(0, offsets, lengths, np.asarray(data_crcs, dtype=np.int64), K.CRC_TABLES,
                  K.CRC_FN, tags)
    index = Index(offsets, lengths, tags)
    if compression is None:
        return index
    return _with_flush_points(path, compression, index, block_offsets, block_stream_offsets)


def _with_flush_points(path: PathLike, compression: str, index: Index, block_offsets: np.ndarray,
                       block_stream_offsets: np.ndarray) -> Index:
    """``index`` with these flush points and their checks, from decompressing the file at each."""
    bfile = np.asarray(block_offsets, dtype=np.int64)
    bstream = np.asarray(block_stream_offsets, dtype=np.int64)
    starts, first = np.unique(bfile, return_index=True)
    checks = np.empty(len(starts), dtype=np.int64)
    with fs.Ranges(path) as f:
        for k, (pos, i) in enumerate(zip(starts.tolist(), first.tolist())):
            span = min(FLUSH_CHECK_SPAN, index.stream_size - int(bstream[i]))
            head = _decompress_at(f, compression, pos, span, 4096)
            checks[k] = google_crc32c.value(head[:span])
    return dataclasses.replace(index, block_offsets=bfile, block_stream_offsets=bstream,
                               block_checks=checks[np.searchsorted(starts, bfile)])


def _decompress_at(src: fs.Ranges, compression: str, pos: int, want: int, chunk: int) -> bytes:
    """``want`` bytes of the stream decompressed from the flush point at file offset ``pos``,
    reading ``chunk`` bytes at a time (fewer at the end of the file); raises zlib.error on a bad
    stream."""
    d = zlib.decompressobj(_WBITS[compression] if pos == 0 else -15)
    out = []
    got = 0
    while got < want:
        data = d.unconsumed_tail or src.pread(chunk, pos)
        if not d.unconsumed_tail:
            pos += len(data)
        if not data:
            break
        piece = d.decompress(data, want - got)
        out.append(piece)
        got += len(piece)
        if d.eof and got < want:
            # a concatenated member/stream: continue with a fresh decompressor
            pos -= len(d.unused_data)
            d = zlib.decompressobj(_WBITS[compression])
    return b"".join(out)


def _columns(index: Index) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The index's int64 and uint32 columns, in file order."""
    if index.block_offsets is None:
        return [index.offsets, index.lengths], [index.tags]
    return ([index.offsets, index.lengths, index.block_offsets, index.block_stream_offsets],
            [index.tags, index.block_checks])


def write_index(shard_path: PathLike, index: Index, *, index_file: PathLike | None = None) -> str:
    """Write the index of ``shard_path`` (to ``index_path(shard_path)`` unless ``index_file`` is
    given), bound to the shard's current size and checksum; returns the index file's path."""
    out = os.fspath(index_file) if index_file is not None else index_path(shard_path, mkdir=True)
    wide, narrow = _columns(index)
    data = b"".join([np.ascontiguousarray(c, dtype="<i8").tobytes() for c in wide]
                    + [np.ascontiguousarray(c, dtype="<u4").tobytes() for c in narrow])
    size, checksum = shard_fingerprint(shard_path)
    header = _HEADER.pack(MAGIC, len(index), len(wide) + len(narrow), size, index.stream_size,
                          checksum, google_crc32c.value(data))
    return fs.write_bytes(out, header + data)


def _problem(index: Index, stream_size: int, file_size: int, compressed: bool) -> str | None:
    """What is inconsistent in an index, or None."""
    offs, lens = index.offsets, index.lengths
    n = len(offs)
    impossible = (lens < 0) | (lens >= K.HUGE)
    if impossible.any():
        return f"record {int(np.argmax(impossible))} has an impossible length"
    if float((lens + FRAMING).astype(np.float64).sum()) >= K.HUGE:
        return "the records add up to an impossible stream size"  # int64 sums would wrap
    if n and offs[0] != 0:
        return f"record 0 is at byte {int(offs[0])}, not 0"
    gaps = np.flatnonzero(offs[1:] != offs[:-1] + lens[:-1] + FRAMING)
    if len(gaps):
        i = int(gaps[0]) + 1
        return (f"record {i} is at byte {int(offs[i])} but record {i - 1} ends at byte "
                f"{int(offs[i - 1] + lens[i - 1]) + FRAMING} (offsets must run back to back)")
    if index.stream_size != stream_size:
        return (f"the records end at byte {index.stream_size} but the header says the stream "
                f"has {stream_size}")
    if not compressed:
        if stream_size != file_size:
            return f"the records end at byte {stream_size} but the shard has {file_size} bytes"
        return None
    bfile, bstream = index.block_offsets, index.block_stream_offsets
    if n == 0:
        return None
    if (bfile < 0).any() or (bfile >= max(file_size, 1)).any():
        return "a flush block starts outside the shard"
    if (np.diff(bfile) < 0).any() or (np.diff(bstream) < 0).any():
        return "flush blocks are not in file order"
    if ((bfile == 0) != (bstream == 0)).any():
        return "a flush block's file and stream offsets disagree about the stream's start"
    same = np.diff(bfile) == 0
    if (same & ((np.diff(bstream) != 0) | (np.diff(index.block_checks) != 0))).any():
        return "records of one flush block disagree about its stream offset or check"
    if (bstream > offs).any():
        return "a record starts before its flush block"
    at = np.searchsorted(offs, bstream)
    if (offs[np.minimum(at, n - 1)] != bstream).any():
        return "a flush block does not start at a record"
    return None


def load_index(shard_path: PathLike, *, index_file: PathLike | None = None,
               compression: str | None = "auto", shard: fs.Ranges | None = None) -> Index:
    """The index of a shard, checked against the shard (see the module docstring): raises
    :class:`IndexFileError` naming the file and what is wrong. ``shard``: the shard's open
    reads, which keep the ends the check reads.

    >>> idx = load_index("out/train/part-00000-of-00004.tfrecord")  # doctest: +SKIP
    >>> len(idx), idx.offsets[:3]
    """
    src = shard
    shard = os.fspath(shard_path)
    where = os.fspath(index_file) if index_file is not None else index_path(shard)

    def bad(reason: str) -> IndexFileError:
        return IndexFileError(where, shard, reason)

    raw = fs.read_bytes(where)
    if raw[:5] != MAGIC[:5]:
        raise bad("not a shardforge index file")
    if raw[:8] != MAGIC:
        version = raw[5:8].decode("ascii", "replace")
        raise bad(f"index format version {version} is not supported (written by an older or "
                  f"newer shardforge; this one reads version {VERSION})")
    if len(raw) < _HEADER.size:
        raise bad("truncated header")
    _, n, ncols, size, stream_size, checksum, cols_checksum = _HEADER.unpack_from(raw)
    data = memoryview(raw)[_HEADER.size:]
    compressed = resolve_compression(shard, compression) is not None
    wide, narrow = (4, 2) if compressed else (2, 1)
    if ncols != wide + narrow:
        raise bad(f"{ncols} columns, but a {'compressed' if compressed else 'plain'} shard's "
                  f"index has {wide + narrow}")
    row = 8 * wide + 4 * narrow
    if len(data) != n * row:
        raise bad(f"{len(data)} bytes of columns where {n} records need {n * row} "
                  "(truncated or damaged)")
    if google_crc32c.value(bytes(data)) != cols_checksum:
        raise bad("checksum mismatch (the index file is damaged)")
    actual_size, actual_checksum = shard_fingerprint(src if src is not None else shard)
    if actual_size != size:
        raise bad(f"stale: written for a shard of {size} bytes, the shard has {actual_size}")
    if actual_checksum != checksum:
        raise bad("stale: the shard's contents changed since the index was written")
    ints = np.frombuffer(data, dtype="<i8", count=wide * n).astype(np.int64).reshape(wide, n)
    checks = np.frombuffer(data, dtype="<u4", offset=8 * wide * n).astype(np.int64)
    checks = checks.reshape(narrow, n)
    index = Index(ints[0], ints[1], checks[0])
    if compressed:
        index.block_offsets, index.block_stream_offsets = ints[2], ints[3]
        index.block_checks = checks[1]
    reason = _problem(index, stream_size, actual_size, compressed)
    if reason:
        raise bad(reason)
    return index


def read_index(shard_path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets, lengths)``: each record's header offset in the (uncompressed) record stream and
    its data length, from the shard's checked index."""
    idx = load_index(shard_path)
    return idx.offsets, idx.lengths


def scan_index(path: PathLike, *, compression: str | None = "auto", verify: bool = True) -> Index:
    """Index a shard by reading it (raises CorruptRecordError on damage)."""
    offs, lens, crcs = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for _, stream_offsets, block in iter_blocks(path, verify=verify, compression=compression):
        offs.append(stream_offsets)
        lens.append(block.lengths)
        crcs.append(data_crcs(block.buf, block.offsets + block.lengths))
    offsets = np.concatenate(offs)
    comp = resolve_compression(path, compression)
    zeros = np.zeros(len(offsets), dtype=np.int64) if comp is not None else None
    return make_index(path, offsets, np.concatenate(lens), np.concatenate(crcs), compression=comp,
                      block_offsets=zeros, block_stream_offsets=zeros)


def build_index(path: PathLike, *, compression: str | None = "auto") -> str:
    """(Re)build the index of a shard by reading it; returns the index path (``index_path``).

    The flush points of a compressed shard are not recorded in the file itself: they are kept
    from the index being replaced (this format's or format 2's) where its entries are the ones
    the read found and each flush point decompresses to the record it names; otherwise the
    rebuilt index has one block (seeks decompress from the start).
    """
    index = scan_index(path, compression=compression)
    comp = resolve_compression(path, compression)
    previous = _previous_flush_points(index_path(path), index) if comp and len(index) else None
    if previous is not None:
        try:
            kept = _with_flush_points(path, comp, index, *previous)
            if _problem(kept, index.stream_size, fs.size(path), True) is None:
                write_index(path, kept)
                with RecordFile(path, compression=comp) as rf:  # each block's first record
                    for i in np.unique(kept.block_offsets, return_index=True)[1].tolist():
                        rf.read_block(i, i + 1)
                return index_path(path)
        except (ValueError, OSError, zlib.error):  # IndexFileError, CorruptRecordError too
            pass
    return write_index(path, index)


def _previous_flush_points(where: str, index: Index) -> tuple[np.ndarray, np.ndarray] | None:
    """The (file, stream) flush-point columns of the index file at ``where`` (format 2 or this
    one), if it indexes the same records as ``index``."""
    try:
        raw = fs.read_bytes(where)
    except OSError:
        return None
    if raw[:8] not in (b"SFIDX002", MAGIC) or len(raw) < _HEADER.size:
        return None
    _, n, ncols, *_ = _HEADER.unpack_from(raw)
    if n != len(index) or ncols not in (4, 6) or len(raw) < _HEADER.size + 32 * n:
        return None
    cols = np.frombuffer(raw, dtype="<i8", count=4 * n, offset=_HEADER.size).reshape(4, n)
    if (cols[0] != index.offsets).any() or (cols[1] != index.lengths).any():
        return None
    return cols[2].astype(np.int64), cols[3].astype(np.int64)


class RecordFile:
    """Random access to the records of one shard through its index.

    >>> rf = RecordFile("out/train/part-00000-of-00004.tfrecord")
    >>> len(rf), rf[10], rf.read_range(100, 200)   # bytes, list of 100 bytes objects

    The index is checked against the shard on open (see :func:`load_index`); every read checks that
    each record's stored length is the indexed one, that its tag names the entry read, the first
    bytes of a compressed shard's flush block, and (``verify=True``) the records' CRCs.
    Without an index file (``index_path(path)``) the shard is scanned once on open. Picklable (the
    file handle is reopened lazily), so it can be handed to DataLoader workers. ``cache``: a
    :class:`~shardforge.records.fs.BlockCache` for a remote shard's reads.

    Opening a remote shard costs four requests (its size and version, its index, the first and
    last 64 KiB the index is bound to); each :meth:`read_block` after is one ranged request, less
    any bytes those ends already hold.
    """

    def __init__(
        self, path: PathLike, *, verify: bool = True, compression: str | None = "auto",
        cache: fs.BlockCache | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self._src = fs.Ranges(self.path, cache)
        self.compression = resolve_compression(self.path, compression)
        self.verify = verify
        try:
            self.index = load_index(self.path, compression=self.compression, shard=self._src)
        except FileNotFoundError:
            if not fs.exists(self.path):
                raise
            if self.path not in _WARNED and fs.exists(legacy_index_path(self.path)):
                _WARNED.add(self.path)  # once per process: loaders reopen shards often
                log.warning("%s: ignoring %s (an index in the layout before format 2); "
                            "scanning the shard instead. Write the new index once with: "
                            "shardforge index %s", self.path, legacy_index_path(self.path),
                            self.path)
            self.index = scan_index(self.path, compression=self.compression, verify=verify)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> bytes:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"record {i} out of range: {self.path} has {n} records")
        i %= n
        return self.read_block(i, i + 1)[0]

    def read_range(self, start: int, stop: int) -> list[bytes]:
        """Records ``start..stop-1`` (clipped to the file) as bytes."""
        return list(self.read_block(start, stop))

    def read_block(self, start: int, stop: int) -> RecordBlock:
        """Records ``start..stop-1`` as one :class:`RecordBlock` (decode_batch's fast input)."""
        start, stop = max(0, start), min(stop, len(self))
        if stop <= start:
            return RecordBlock(np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64))
        offsets = self.index.offsets[start:stop]
        lengths = self.index.lengths[start:stop]
        first = int(offsets[0])
        end = int(offsets[-1] + lengths[-1]) + K.HEADER + K.FOOTER
        raw = self._read_stream(start, first, end)
        buf = np.frombuffer(raw, dtype=np.uint8)
        rel = offsets - first
        if len(buf) < end - first:
            raise CorruptRecordError(self.path, start, first, "file is shorter than its index says")
        # the header at each indexed offset must hold the indexed length (and its checksum) even
        # without verify: a record is never read from a position the file does not confirm
        bad, why = K.verify_framed(buf, rel, lengths, self.verify, start, first,
                                   self.index.tags[start:stop], K.CRC_TABLES, K.CRC_FN)
        if why == 4:
            raise IndexFileError(index_path(self.path), self.path, (
                f"entry {start + bad} names a record other than the one at byte "
                f"{int(offsets[bad])} (entries shifted, swapped or merged, or the record damaged)"
            ))
        if bad >= 0:
            reason = {
                1: "stored length differs from the index (stale index? run `shardforge index`)",
                2: "length checksum mismatch", 3: "data checksum mismatch",
            }[why]
            raise CorruptRecordError(self.path, start + bad, int(offsets[bad]), reason)
        return RecordBlock(buf, rel + K.HEADER, lengths.copy())

    def _read_stream(self, start: int, first: int, end: int) -> bytes:
        if self.compression is None:  # one read (one request for a URL) per block of records
            return self._src.pread(end - first, first)
        block_file = int(self.index.block_offsets[start])
        block_stream = int(self.index.block_stream_offsets[start])
        skip = first - block_stream
        span = min(FLUSH_CHECK_SPAN, self.index.stream_size - block_stream)
        try:
            # read a flush block's worth at a time: one block compresses to about that or less
            raw = _decompress_at(self._src, self.compression, block_file,
                                 max(skip + end - first, span), FLUSH_EVERY)
        except zlib.error as err:
            raise CorruptRecordError(
                self.path, start, first, f"{self.compression} stream is corrupt: {err}"
            ) from None
        if google_crc32c.value(raw[:span]) != int(self.index.block_checks[start]):
            raise IndexFileError(index_path(self.path), self.path, (
                f"the flush point at compressed byte {block_file} does not decompress to the "
                f"stream at byte {block_stream} it is indexed with (record {start})"
            ))
        return raw[skip:]

    def close(self) -> None:
        self._src.close()

    def __enter__(self) -> RecordFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if "_src" in self.__dict__:
            self.close()
