"""Writing one TFRecord file, and its index (:mod:`shardforge.records.index`) on close.

Compressed files are single standard GZIP/ZLIB streams with a full flush every ``FLUSH_EVERY``
bytes of records (:mod:`shardforge.records.framing`), which index-based random access seeks to.
"""

from __future__ import annotations

import os
import zlib

import numpy as np

from shardforge.records import _kernels as K
from shardforge.records.framing import (
    _WBITS,
    FLUSH_EVERY,
    PathLike,
    RecordBlock,
    data_crcs,
    frame,
    frame_block,
    resolve_compression,
)
from shardforge.records.index import make_index, write_index


class TFRecordWriter:
    """Write records to one TFRecord file.

    >>> with TFRecordWriter("/tmp/x.tfrecord.gz") as w:  # gzip from the suffix
    ...     w.write(b"hello")
    ...     w.write_block(RecordBlock.from_records([b"a", b"bc"]))  # many records, one call

    With ``index=True`` the shard's index is written on close, to ``index_path(path)`` unless
    ``index_path`` names another file (see :mod:`shardforge.records.index`).
    """

    def __init__(
        self, path: PathLike, compression: str | None = "auto", *, index: bool = False,
        index_path: PathLike | None = None, flush_every: int = FLUSH_EVERY,
    ) -> None:
        self.path = os.fspath(path)
        self.compression = resolve_compression(path, compression)
        self._file = open(self.path, "wb")
        self._zip = None
        if self.compression:
            self._zip = zlib.compressobj(6, zlib.DEFLATED, _WBITS[self.compression])
        self._index = index or index_path is not None
        self._index_file = os.fspath(index_path) if index_path is not None else None
        self._flush_every = flush_every
        self._written = 0  # bytes in the file so far
        self._ustream = 0  # bytes of the uncompressed stream so far
        self._block = (0, 0)  # (file offset, stream offset) of the current flush block
        self._records = 0
        self._offsets: list[int] = []
        self._lengths: list[int] = []
        self._crcs: list[int] = []  # masked data CRCs, for the index's tags
        self._blocks: list[tuple[int, int]] = []

    def write(self, data: bytes) -> None:
        record = frame(data)
        self._records += 1
        if self._index:
            self._offsets.append(self._ustream)
            self._lengths.append(len(data))
            self._crcs.append(int.from_bytes(record[-K.FOOTER:], "little"))
            if self._zip is not None:
                self._blocks.append(self._block)
        self._ustream += len(record)
        if self._zip is None:
            self._file.write(record)
            return
        self._emit(self._zip.compress(record))
        if self._ustream - self._block[1] >= self._flush_every:
            self._full_flush()

    def write_block(self, block: RecordBlock) -> None:
        """Write every record of ``block`` (framed by compiled code in one pass): the same bytes
        and index as ``write`` record by record."""
        framed = frame_block(block)
        n = len(block)
        lengths = np.asarray(block.lengths, dtype=np.int64)
        ends = np.cumsum(lengths + K.HEADER + K.FOOTER)  # of each record, in ``framed``
        starts = ends - (lengths + K.HEADER + K.FOOTER)
        base = self._ustream
        if self._index:
            self._offsets += (starts + base).tolist()
            self._lengths += lengths.tolist()
            self._crcs += data_crcs(framed, ends - K.FOOTER).tolist()
        self._records += n
        if self._zip is None:
            self._file.write(framed)
            self._ustream += len(framed)
            return
        pos = 0
        while pos < n:
            # the records up to the first that takes the flush block to flush_every bytes share
            # the block; write() flushes right after that one
            limit = self._block[1] + self._flush_every - base
            stop = min(int(np.searchsorted(ends, limit, side="left")) + 1, n)
            if self._index:
                self._blocks += [self._block] * (stop - pos)
            a = int(starts[pos])
            b = int(ends[stop - 1])
            self._emit(self._zip.compress(framed[a:b]))
            self._ustream = base + b
            if self._ustream - self._block[1] >= self._flush_every:
                self._full_flush()
            pos = stop

    def _full_flush(self) -> None:
        self._emit(self._zip.flush(zlib.Z_FULL_FLUSH))
        self._block = (self._written, self._ustream)

    def _emit(self, out: bytes) -> None:
        if out:
            self._file.write(out)
            self._written += len(out)

    def __len__(self) -> int:
        return self._records

    @property
    def bytes_written(self) -> int:
        """Bytes in the file so far (compressed bytes lag by what the compressor holds)."""
        return self._written if self._zip is not None else self._ustream

    def close(self) -> None:
        if self._file.closed:
            return
        if self._zip is not None:
            self._emit(self._zip.flush(zlib.Z_FINISH))
        self._file.close()
        if self._index:

            blocks = np.array(self._blocks, dtype=np.int64).reshape(-1, 2)
            write_index(self.path, make_index(
                self.path, self._offsets, self._lengths, self._crcs,
                compression=self.compression, block_offsets=blocks[:, 0],
                block_stream_offsets=blocks[:, 1],
            ), index_file=self._index_file)

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
