"""Index files and random access to records.

``<shard>.idx`` holds, for every record, the offset of its header and the length of its data
(``read_index(path) -> (offsets, lengths)``). Offsets count bytes of the *uncompressed record
stream*: for an uncompressed shard that is the file itself, so record ``i`` is one ``pread``.

For a GZIP/ZLIB shard the index also stores, per record, the flush block it starts in: the
compressed file offset of the last full-flush point before the record and the stream offset at
that point (shards written by shardforge have one every 64 KiB of records). Reading record ``i``
seeks to that point and decompresses at most one block plus the records asked for. A compressed
file written elsewhere has no flush points we know of: its index (``build_index``) has a single
block at offset 0, and reading record ``i`` decompresses from the start of the file.

File layout (little-endian): ``b"SFIDX001"``, ``uint64 n_records``, ``uint64 n_columns`` (2 or
4), then each column as ``n_records`` int64: offsets, lengths[, block_file_offsets,
block_stream_offsets].
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from shardforge.records import _kernels as K
from shardforge.records.errors import CorruptRecordError
from shardforge.records.framing import (
    _WBITS,
    CHUNK,
    PathLike,
    RecordBlock,
    iter_blocks,
    resolve_compression,
)

MAGIC = b"SFIDX001"
INDEX_SUFFIX = ".idx"


@dataclass
class Index:
    offsets: np.ndarray
    lengths: np.ndarray
    block_offsets: np.ndarray | None = None  # compressed shards only
    block_stream_offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.offsets)


def index_path(path: PathLike) -> str:
    path = os.fspath(path)
    return path if path.endswith(INDEX_SUFFIX) else path + INDEX_SUFFIX


def write_index(path: PathLike, index: Index) -> None:
    cols = [index.offsets, index.lengths]
    if index.block_offsets is not None:
        cols += [index.block_offsets, index.block_stream_offsets]
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(MAGIC + struct.pack("<QQ", len(index), len(cols)))
        for c in cols:
            f.write(np.ascontiguousarray(c, dtype="<i8").tobytes())
    os.replace(tmp, path)


def load_index(path: PathLike) -> Index:
    """The full index of a shard (``path`` is the shard or its ``.idx``)."""
    with open(index_path(path), "rb") as f:
        head = f.read(24)
        if len(head) < 24 or head[:8] != MAGIC:
            raise ValueError(f"{index_path(path)} is not a shardforge index file")
        n, ncols = struct.unpack("<QQ", head[8:])
        data = np.frombuffer(f.read(), dtype="<i8")
    if ncols not in (2, 4) or len(data) != n * ncols:
        raise ValueError(
            f"{index_path(path)} is truncated or damaged; rebuild it: shardforge index"
        )
    cols = [data[i * n : (i + 1) * n].astype(np.int64) for i in range(ncols)]
    return Index(*cols) if ncols == 4 else Index(cols[0], cols[1])


def read_index(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets, lengths)``: each record's header offset in the (uncompressed) record stream and
    its data length."""
    idx = load_index(path)
    return idx.offsets, idx.lengths


def scan_index(path: PathLike, *, compression: str | None = "auto", verify: bool = True) -> Index:
    """Index a shard by reading it (raises CorruptRecordError on damage)."""
    offs, lens = [], []
    for _, stream_offsets, block in iter_blocks(path, verify=verify, compression=compression):
        offs.append(stream_offsets)
        lens.append(block.lengths)
    offsets = np.concatenate(offs) if offs else np.zeros(0, np.int64)
    lengths = np.concatenate(lens) if lens else np.zeros(0, np.int64)
    if resolve_compression(path, compression) is None:
        return Index(offsets, lengths)
    zeros = np.zeros(len(offsets), dtype=np.int64)
    return Index(offsets, lengths, zeros, zeros.copy())


def build_index(path: PathLike, *, compression: str | None = "auto") -> str:
    """(Re)build ``<path>.idx`` by reading the shard; returns the index path.

    A compressed shard's rebuilt index has one block (seeks decompress from the start), since the
    flush points are not recorded in the file itself.
    """
    out = index_path(path)
    write_index(out, scan_index(path, compression=compression))
    return out


class RecordFile:
    """Random access to the records of one shard through its index.

    >>> rf = RecordFile("out/train/part-00000-of-00004.tfrecord")
    >>> len(rf), rf[10], rf.read_range(100, 200)   # bytes, list of 100 bytes objects

    Every read checks the records' CRCs (``verify=True``) and that the file agrees with the index.
    Without an ``.idx`` file the shard is scanned once on open. Picklable (the file handle is
    reopened lazily), so it can be handed to DataLoader workers.
    """

    def __init__(
        self, path: PathLike, *, verify: bool = True, compression: str | None = "auto"
    ) -> None:
        self._fd: int | None = None
        self.path = os.fspath(path)
        self.compression = resolve_compression(self.path, compression)
        self.verify = verify
        idx = index_path(self.path)
        self.index = load_index(idx) if os.path.exists(idx) else scan_index(
            self.path, compression=self.compression, verify=verify
        )
        if self.compression is None and len(self.index):
            end = int(self.index.offsets[-1] + self.index.lengths[-1]) + K.HEADER + K.FOOTER
            size = os.path.getsize(self.path)
            if end != size:
                raise ValueError(
                    f"{idx} does not match {self.path} (index ends at byte {end}, file has "
                    f"{size}); rebuild it: shardforge index"
                )

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
        if self.verify:
            bad, why = K.verify_framed(buf, rel, lengths, K.CRC_TABLES, K.CRC_FN)
            if bad >= 0:
                reason = {
                    1: "stored length differs from the index (stale index? run `shardforge index`)",
                    2: "length checksum mismatch", 3: "data checksum mismatch",
                }[why]
                raise CorruptRecordError(self.path, start + bad, int(offsets[bad]), reason)
        return RecordBlock(buf, rel + K.HEADER, lengths.copy())

    def _read_stream(self, start: int, first: int, end: int) -> bytes:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        if self.compression is None:
            return os.pread(self._fd, end - first, first)
        block_file = int(self.index.block_offsets[start])
        skip = first - int(self.index.block_stream_offsets[start])
        wbits = _WBITS[self.compression] if block_file == 0 else -15
        d = zlib.decompressobj(wbits)
        want = skip + end - first
        out = []
        got = 0
        pos = block_file
        try:
            while got < want:
                data = d.unconsumed_tail or os.pread(self._fd, CHUNK, pos)
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
                    d = zlib.decompressobj(_WBITS[self.compression])
        except zlib.error as err:
            raise CorruptRecordError(
                self.path, start, first, f"{self.compression} stream is corrupt: {err}"
            ) from None
        return b"".join(out)[skip:]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RecordFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fd"] = None
        return state
