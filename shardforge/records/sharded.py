"""Sharded writing: ``{prefix}-{i:05d}-of-{n:05d}.tfrecord[.gz]`` plus one ``.idx`` per shard."""

from __future__ import annotations

import os
import uuid

from shardforge.records.framing import PathLike, TFRecordWriter, resolve_compression

DEFAULT_SHARD_SIZE = 256 << 20
_EXT = {None: ".tfrecord", "gzip": ".tfrecord.gz", "zlib": ".tfrecord.zz"}


class ShardedWriter:
    """Write records across shards; shards appear under their final names only on close.

    Give ``num_shards`` (records are dealt round-robin, so shards end up the same size) or
    ``shard_size`` (bytes; a new shard starts when the current one reaches it, so the count is
    only known on close). With neither, shards of 256 MiB. Each shard and its index are written
    under a hidden temporary name and renamed on a clean close, so a crash never leaves a half
    shard under a final name (an exception inside ``with`` deletes the temporaries).

    >>> with ShardedWriter("out/train", num_shards=4, compression="gzip") as w:
    ...     for rec in records:
    ...         w.write(rec)
    >>> w.paths   # ['out/train/part-00000-of-00004.tfrecord.gz', ...]
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
        w = TFRecordWriter(tmp, self.compression, index=self.index, index_path=tmp + ".idx")
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
            final = os.path.join(
                self.directory, f"{self.prefix}-{i:05d}-of-{n:05d}{_EXT[self.compression]}"
            )
            if self.index:
                os.replace(w.path + ".idx", final + ".idx")
            os.replace(w.path, final)
            self.paths.append(final)
        return self.paths

    def abort(self) -> None:
        """Close and delete the temporaries: nothing appears under a final name."""
        self._closed = True
        for w in self._writers:
            w.close()
            for p in (w.path, w.path + ".idx"):
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
