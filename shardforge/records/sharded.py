"""Sharded writing: shards named by ``layout.shard_name`` (``part-00000-of-00004.tfrecord``,
``.tfrecord.gz``, ``.tfrecord.zz``) plus one index per shard (in ``layout.index_path(shard)``,
a folder beside the shards' one)."""

from __future__ import annotations

import os
import uuid

import numpy as np

from shardforge.records import _kernels as K
from shardforge.records.framing import (
    FLUSH_EVERY,
    PathLike,
    RecordBlock,
    resolve_compression,
)
from shardforge.records.layout import DEFAULT_SHARD_SIZE, index_path, shard_name
from shardforge.records.writer import TFRecordWriter


class ShardedWriter:
    """Write records across shards; shards appear under their final names only on close.

    Give ``num_shards`` (records are dealt round-robin, so shards end up the same size) or
    ``shard_size`` (bytes; a new shard starts when the current one reaches it, so the count is
    only known on close). With neither, shards of ``layout.DEFAULT_SHARD_SIZE`` (128 MiB). Each
    shard and its index are written under a hidden temporary name and renamed on a clean close,
    so a crash never leaves a half shard under a final name (an exception inside ``with``
    deletes the temporaries).

    >>> with ShardedWriter("out/train", num_shards=4, compression="gzip") as w:
    ...     for rec in records:
    ...         w.write(rec)
    >>> w.paths   # ['out/train/part-00000-of-00004.tfrecord.gz', ...]

    ``write_block(block)`` writes a whole :class:`RecordBlock` in a few compiled calls, dealing its
    records to the shards as ``write`` one by one would (the same files). With ``shard_size`` and
    compression the size is checked every 64 KiB of records rather than every record, so a shard
    may end up to a flush block away from where ``write`` would have ended it.
    """

    def __init__(
        self, directory: PathLike, prefix: str = "part", num_shards: int | None = None,
        shard_size: int | None = None, compression: str | None = None, index: bool = True,
    ) -> None:
        if num_shards is not None and shard_size is not None:
            raise ValueError("give num_shards or shard_size, not both")
        if num_shards is not None and num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        self.directory = os.fspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.prefix = prefix
        self.compression = resolve_compression("", compression)
        self.index = index
        self.num_shards = num_shards
        self.shard_size = shard_size if num_shards is None else None
        if self.num_shards is None and self.shard_size is None:
            self.shard_size = DEFAULT_SHARD_SIZE
        self._tag = uuid.uuid4().hex[:8]
        self._writers: list[TFRecordWriter] = []
        self._next = 0
        self.paths: list[str] = []
        self.records = 0
        self._closed = False
        if self.num_shards is not None:
            for _ in range(self.num_shards):
                self._open()

    def _open(self) -> TFRecordWriter:
        i = len(self._writers)
        tmp = os.path.join(self.directory, f".{self.prefix}-{i:05d}.tmp-{self._tag}")
        w = TFRecordWriter(tmp, self.compression, index=self.index)  # index: index_path(tmp)
        self._writers.append(w)
        return w

    def write(self, data: bytes) -> None:
        if self.num_shards is not None:
            w = self._writers[self._next]
            self._next = (self._next + 1) % self.num_shards
        else:
            w = self._writers[-1] if self._writers else self._open()
            if len(w) and w.bytes_written >= self.shard_size:
                w.close()
                w = self._open()
        w.write(data)
        self.records += 1

    def write_block(self, block: RecordBlock) -> None:
        """Write every record of ``block``, dealt to the shards as ``write`` would deal them."""
        block.checked()  # before any shard has its part: a bad block writes nothing
        n = len(block)
        if self.num_shards is not None:
            k = self.num_shards
            for s in range(k):  # record i goes to shard (next + i) % k, as write() deals them
                part = block[(s - self._next) % k :: k]
                if len(part):
                    self._writers[s].write_block(part)
            self._next = (self._next + n) % k
            self.records += n
            return
        framed = np.asarray(block.lengths, dtype=np.int64) + K.HEADER + K.FOOTER
        ahead = np.cumsum(framed) - framed  # bytes of the block before each record
        pos = 0
        while pos < n:
            w = self._writers[-1] if self._writers else self._open()
            if len(w) and w.bytes_written >= self.shard_size:
                w.close()
                w = self._open()
            # plain: a record joins the shard while the shard is under shard_size before it;
            # compressed: at most a flush block at a time, after which bytes_written is exact
            room = self.shard_size - w.bytes_written if w.compression is None else FLUSH_EVERY
            take = int(np.searchsorted(ahead, ahead[pos] + room, "left")) - pos
            take = max(take, 1)
            w.write_block(block[pos : pos + take])
            pos += take
        self.records += n

    def close(self) -> list[str]:
        """Finish every shard and rename it (index first) to its final name; returns the paths."""
        if self._closed:
            return self.paths
        self._closed = True
        if not self._writers:
            self._open()  # zero records still make one (empty) shard
        n = len(self._writers)
        for i, w in enumerate(self._writers):
            w.close()
            final = os.path.join(self.directory, shard_name(i, n, self.compression, self.prefix))
            if self.index:
                os.replace(index_path(w.path), index_path(final))
            os.replace(w.path, final)
            self.paths.append(final)
        return self.paths

    def abort(self) -> None:
        """Close and delete the temporaries: nothing appears under a final name."""
        self._closed = True
        for w in self._writers:
            w.close()
            for p in (w.path, index_path(w.path)):
                if os.path.exists(p):
                    os.remove(p)
        self._writers = []

    def __enter__(self) -> ShardedWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
