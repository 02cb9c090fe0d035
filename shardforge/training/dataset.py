"""ShardDataset: sharded, shuffled, exactly resumable reading of TFRecord shards into batches.

How an epoch's records are ordered and split (everything is a pure function of the seed, the
epoch and the shard sizes read from the index files, so every process computes it alone):

0. **Sources.** The dataset reads a :class:`~shardforge.training.mixture.Mixture` of sources (one
   output is a mixture of one): an epoch's order ``G`` interleaves the sources' own streams by
   the mixture's deterministic schedule (:class:`MixtureOrder`); each source's stream is its
   epochs, each ordered as in step 1. Everything below works on positions of ``G`` alone.
1. **Global order.** The records of all shards are cut into blocks of ``block_size`` consecutive
   records; the blocks of all shards are shuffled together with a per-epoch seed (which shuffles
   the shard order and the record blocks at once), then the sequence is cut into windows of
   ``shuffle_buffer`` records and each window is permuted (a shuffle buffer whose contents are
   known in advance). ``shuffle=False`` keeps the file order. Call this permutation ``G``.
2. **Work list.** An epoch reads a list of ranges of ``G`` (all of it, or what a checkpoint left
   over), concatenated into a virtual sequence ``V`` of ``M`` records.
3. **Ranks.** Rank ``r`` of ``R`` gets ``V[r*P : (r+1)*P]``, the same count ``P`` for every rank:
   ``remainder="drop"`` rounds ``M / R`` down to whole batches (the last ``< R * batch_size``
   records wait for the next epoch's reshuffle), ``"wrap"`` rounds up and wraps around to the
   start of ``V`` (a few records are read twice), ``"keep"`` splits ``M`` as evenly as possible
   with a partial last batch (for evaluation: ranks may differ by one batch).
4. **Workers.** A rank's part is cut into chunks (a batch; a packing window for the packed loader)
   and each DataLoader worker reads a contiguous run of chunks. No record is read twice within an
   epoch across ranks and workers (except the wrap-around).

**Position and resumption.** The position of a rank is, for each worker, the number of chunks
(and items of the current chunk) already *consumed by the training loop*; batches carry their
(worker, chunk, item) so that the loader in the main process knows it exactly even while workers
prefetch ahead. Resuming re-derives the partition and seeks every worker straight to its chunk:
at most one shuffle window is read again, nothing consumed is replayed. A state saved by ``R``
ranks × ``W`` workers can be loaded by a different topology: the remaining ranges of ``G`` become
the new work list, so every remaining record is still read exactly once.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from shardforge.records import fs
from shardforge.records.manifest import check_shards
from shardforge.records.spec import Batch, Spec
from shardforge.training.mixture import Mixture, Source, changes, check_features, source_tokens

if TYPE_CHECKING:
    from shardforge.features.state import Schema

POSITION_KEY = "_sf_position"  # (worker, epoch, chunk, item, items_in_chunk); the loader strips it
GROUP_KEY = "_sf_group"  # items a worker sends as one message
REMAINDER = ("drop", "wrap", "keep")
STATE_VERSION = 2
READ_AHEAD = 4  # blocks each worker fetches ahead of the one it decodes
CACHE_BYTES = 10 << 30  # default bound of a local block cache (cache_dir)
SETUP_THREADS = 16  # requests at once when a dataset reads its shards' index headers


# --------------------------------------------------------------------------------------------
# Sources: shard paths, record counts, parse spec
# --------------------------------------------------------------------------------------------


def resolve_shards(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Shard paths of a split directory (``out/train``), a glob or a list of paths."""
    from shardforge.records import list_shards

    if isinstance(source, (str, os.PathLike)):
        paths = list_shards(source)
    else:
        paths = [os.fspath(p) for p in source]
    if not paths:
        raise FileNotFoundError(f"no TFRecord shards in {source!r}")
    return paths


def shard_sizes(paths: Sequence[str]) -> np.ndarray:
    """Records per shard, from the index files' headers (one small read each, up to
    ``SETUP_THREADS`` at once; an index is checked when a worker opens its shard); a shard
    without one is scanned once."""
    from shardforge.records import RecordFile
    from shardforge.records.index import index_records

    def records(path: str) -> int:
        try:
            return index_records(path)
        except FileNotFoundError:
            return len(RecordFile(path))

    if len(paths) < 2 or not any(fs.is_remote(p) for p in paths):
        return np.asarray([records(p) for p in paths], dtype=np.int64)
    with ThreadPoolExecutor(min(SETUP_THREADS, len(paths)), "sf-shard-sizes") as pool:
        return np.asarray(list(pool.map(records, paths)), dtype=np.int64)


def resolve_schema(spec_or_schema: Schema | Spec | str | os.PathLike | None,
                   paths: Sequence[str]) -> Schema | Spec:
    """What the shards hold: a given :class:`~shardforge.features.Schema` or parse spec as is; a
    path, the schema loaded from it (``sf.load_schema``); ``None``, the ``schema.pbtxt`` beside or
    above the shards, else a spec inferred from the first records."""
    from shardforge.features.state import Schema, load_schema

    if isinstance(spec_or_schema, (dict, Schema)):
        return spec_or_schema
    if spec_or_schema is None:
        from shardforge.records.layout import find_schema

        spec_or_schema = find_schema(paths[0])
    if spec_or_schema is not None:
        return load_schema(spec_or_schema)
    from shardforge.records import RecordFile, infer_spec

    with RecordFile(paths[0]) as rf:
        return infer_spec(rf.read_range(0, 256))


def spec_of(schema: Schema | Spec) -> Spec:
    """The parse spec of what :func:`resolve_schema` returns."""
    return schema if isinstance(schema, dict) else schema.spec


def as_mixture(source: str | os.PathLike | Sequence[str | os.PathLike] | Mixture) -> Mixture:
    """``source`` as a mixture: a split directory, glob or list of shards is one source."""
    if isinstance(source, Mixture):
        return source
    path = os.fspath(source) if isinstance(source, (str, os.PathLike)) else tuple(source)
    return Mixture((Source(path, split=""),))


def bind_packer(packer: Packer, schemas: Mapping[str, Schema | Spec]) -> Packer:
    """``packer`` bound to the sources' schemas, which must set it up alike (e.g. the same image
    normalization); raises naming the source that differs."""
    names = list(schemas)
    bound = packer.bind(schemas[names[0]])
    for name in names[1:]:
        other = packer.bind(schemas[name])
        if other != bound:
            raise ValueError(f"source {name!r} sets the packer up differently from source "
                             f"{names[0]!r} ({other} vs {bound}); mix sources made alike, or "
                             f"give the packer's settings (e.g. mean and std) explicitly")
    return bound


class DocumentError(ValueError):
    """A document a packer cannot pack; ``index`` is its row in the window (the dataset names
    its shard and its record there)."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


class Packer(Protocol):
    """What :class:`ShardDataset` hands each window of documents to, to turn it into batches
    (:class:`~shardforge.training.packing.TextPacker`,
    :class:`~shardforge.training.mm_packing.MultimodalPacker`).

    The dataset reads ``lookahead`` records per window (in its shuffled, rank- and worker-split
    order), decodes :meth:`features`, and asks :meth:`plan` how many batches the window makes;
    :meth:`batch` builds one of them in a picklable form (what a DataLoader worker sends) and
    :meth:`to_torch` turns it into what the training loop gets. For an exact resume the dataset
    saves :meth:`layout` with its position, and :meth:`consumed` says which documents the
    batches already taken hold entirely (under a saved layout, after a change of topology).
    """

    @property
    def lookahead(self) -> int:
        """Documents per window: what the dataset reads, splits over workers and resumes in."""
        ...

    def bind(self, schema: Schema | Spec) -> Packer:
        """This packer set up for shards with ``schema`` (settings left to the job's, e.g. an
        image column's normalization, come from it)."""
        ...

    def features(self, spec: Spec) -> Spec:
        """The part of ``spec`` it decodes; raises naming a missing or mistyped feature."""
        ...

    def layout(self) -> dict:
        """The settings that decide how a window is cut into batches (plain data)."""
        ...

    def plan(self, docs: Batch, doc_ids: np.ndarray, layout: Mapping[str, Any]) -> Sized:
        """One window of decoded documents (global record ids ``doc_ids``) planned under
        ``layout``; its ``len`` is the number of batches. Raises :class:`DocumentError` for a
        document it cannot pack."""
        ...

    def batch(self, window: Any, i: int) -> dict:
        """Batch ``i`` of a planned window, picklable."""
        ...

    def consumed(self, window: Any, items: int) -> np.ndarray:
        """Bool per document of the window: held entirely by its first ``items`` batches."""
        ...

    def to_torch(self, batch: dict) -> dict:
        """What the training loop gets from :meth:`batch`'s form."""
        ...


# --------------------------------------------------------------------------------------------
# The epoch's global order G and reading ranges of it
# --------------------------------------------------------------------------------------------


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in keys])


class EpochOrder:
    """The permutation ``G`` of all records of one source for one epoch, and reads of ranges of
    it. ``source``: the source's index in a mixture (salts its shuffles; 0 keeps a single
    output's order), ``first_shard`` / ``first_record``: where its shards and records start in
    the dataset's global numbering."""

    def __init__(self, sizes: np.ndarray, *, seed: int, epoch: int, shuffle: bool,
                 block_size: int, shuffle_buffer: int, source: int = 0, first_shard: int = 0,
                 first_record: int = 0) -> None:
        self.total = int(sizes.sum())
        self.shard_start = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.shard_start[1:])
        self.shard_start += first_record
        self.first_shard, self.source = first_shard, source
        salt = (source,) if source else ()
        step = block_size if shuffle else max(int(sizes.max(initial=1)), 1)
        per_shard = -(-sizes // step)
        shard = np.repeat(np.arange(len(sizes), dtype=np.int64), per_shard)
        first = np.cumsum(per_shard) - per_shard
        start = (np.arange(len(shard), dtype=np.int64) - first[shard]) * step
        if shuffle:
            perm = _rng(seed, epoch, 0x5EED, *salt).permutation(len(shard))
            shard, start = shard[perm], start[perm]
        length = np.minimum(sizes[shard] - start, step)
        self.block_shard, self.block_first = shard, start
        self.block_pos = np.zeros(len(shard) + 1, dtype=np.int64)  # S position of each block
        np.cumsum(length, out=self.block_pos[1:])
        self.window = int(shuffle_buffer) if shuffle and shuffle_buffer > 1 else 0
        self.seed, self.epoch, self.salt = seed, epoch, salt

    def _read_s(self, files: FileCache, a: int, b: int) -> tuple[Any, np.ndarray]:
        """Records at positions ``a:b`` of the block-shuffled sequence (before windows)."""
        k0 = int(np.searchsorted(self.block_pos, a, side="right")) - 1
        k1 = int(np.searchsorted(self.block_pos, b, side="left"))
        blocks, ids = [], []
        for k in range(k0, k1):
            lo = max(a, int(self.block_pos[k])) - int(self.block_pos[k])
            hi = min(b, int(self.block_pos[k + 1])) - int(self.block_pos[k])
            shard, first = int(self.block_shard[k]), int(self.block_first[k])
            blocks.append(files.read_block(self.first_shard + shard, first + lo, first + hi))
            ids.append(np.arange(first + lo, first + hi, dtype=np.int64) + self.shard_start[shard])
        return concat_blocks(blocks), np.concatenate(ids) if ids else np.zeros(0, np.int64)

    def read(self, files: FileCache, a: int, b: int) -> tuple[Any, np.ndarray]:
        """Records ``G[a:b]`` as one RecordBlock plus their global record ids."""
        if not self.window:
            return self._read_s(files, a, b)
        parts = []
        for w in range(a // self.window, (b - 1) // self.window + 1):
            block, ids = files.window(self, w)
            lo, hi = max(a, w * self.window) - w * self.window, min(b, (w + 1) * self.window)
            parts.append((block[lo : hi - w * self.window], ids[lo : hi - w * self.window]))
        return concat_blocks([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def read_window(self, files: FileCache, w: int) -> tuple[Any, np.ndarray]:
        a = w * self.window
        block, ids = self._read_s(files, a, min(a + self.window, self.total))
        perm = _rng(self.seed, self.epoch, w, 0xB0FF, *self.salt).permutation(len(ids))
        return type(block)(block.buf, block.offsets[perm], block.lengths[perm]), ids[perm]


def concat_blocks(blocks: list) -> Any:
    """One RecordBlock holding the records of several, in order. A slice of a shuffle window
    refers to the whole window's buffer: such blocks are gathered record by record, so a chunk
    copies its own records' bytes, not whole windows."""
    from shardforge.records.framing import RecordBlock

    if len(blocks) == 1:
        return blocks[0]
    if not blocks:
        return RecordBlock(np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64))
    lengths = np.concatenate([b.lengths for b in blocks])
    if all(len(b.buf) <= 2 * int(b.lengths.sum()) for b in blocks):
        shift = np.cumsum([0] + [len(b.buf) for b in blocks[:-1]])
        return RecordBlock(np.concatenate([b.buf for b in blocks]),
                           np.concatenate([b.offsets + s for b, s in zip(blocks, shift)]),
                           lengths)
    parts = [b.buf[o : o + n] for b in blocks
             for o, n in zip(b.offsets.tolist(), b.lengths.tolist())]
    buf = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    return RecordBlock(buf, np.cumsum(lengths) - lengths, lengths)


class ShardFiles:
    """The shards one process reads, each opened on first use (at most ``max_open`` held open),
    read a block of records at a time: ``read_block(shard, start, stop)``. Safe to call from
    :class:`ReadAhead`'s threads (a shard dropped from the open set closes once no read holds
    it)."""

    def __init__(self, paths: Sequence[str], verify: bool, cache: Any = None,
                 max_open: int = 64) -> None:
        self.paths, self.verify, self.cache, self.max_open = paths, verify, cache, max_open
        self._files: OrderedDict[int, Any] = OrderedDict()
        self._opening: dict[int, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, shard: int) -> Any:
        from shardforge.records import RecordFile

        with self._lock:
            rf = self._files.get(shard)
            if rf is not None:
                self._files.move_to_end(shard)
                return rf
            opening = self._opening.setdefault(shard, threading.Lock())
        with opening:  # one thread opens a shard; others asking for it wait for that one
            with self._lock:
                rf = self._files.get(shard)
            if rf is None:
                rf = RecordFile(self.paths[shard], verify=self.verify, cache=self.cache)
                with self._lock:
                    self._files[shard] = rf
                    while len(self._files) > self.max_open:
                        self._files.popitem(last=False)
        return rf

    def read_block(self, shard: int, start: int, stop: int) -> Any:
        return self.get(shard).read_block(start, stop)

    def close(self) -> None:
        with self._lock:
            files, self._files = list(self._files.values()), OrderedDict()
        for rf in files:
            rf.close()


class ReadAhead:
    """Reads blocks of records before they are asked for: ``plan`` says which
    ``(shard, start, stop)`` reads will come, in order, and up to ``depth`` requests for them are
    in flight in as many threads while the caller decodes. Planned reads that continue one
    another in a shard are fetched as one request of up to ``max_records`` records (a block
    that a shuffle window boundary cuts in two is one request, not two). Memory: at most
    ``depth`` requests' blocks beyond the one being used. A read that is not the next planned
    one is made on the spot (the plan is a hint: what is returned never depends on it);
    ``depth=0`` reads everything on the spot."""

    def __init__(self, read: Callable[[int, int, int], Any],
                 plan: Iterator[tuple[int, int, int]], depth: int, max_records: int) -> None:
        self.read, self.depth, self.max_records = read, int(depth), int(max_records)
        self.plan = iter(plan)
        self.next_key = next(self.plan, None) if self.depth > 0 else None
        # (read, its request, its first record in the request, last read of that request)
        self.pending: deque[tuple[tuple[int, int, int], Future, int, bool]] = deque()
        self.requests = 0  # requests in self.pending
        self.pool = ThreadPoolExecutor(self.depth, "sf-read-ahead") if self.depth > 0 else None

    def _take(self) -> tuple[int, int, int] | None:
        key, self.next_key = self.next_key, next(self.plan, None)
        return key

    def _fill(self) -> None:
        while self.requests < self.depth and self.next_key is not None:
            group = [self._take()]
            shard, start = group[0][0], group[0][1]
            while (self.next_key is not None and self.next_key[0] == shard
                   and self.next_key[1] == group[-1][2]
                   and self.next_key[2] - start <= self.max_records):
                group.append(self._take())
            future = self.pool.submit(self.read, shard, start, group[-1][2])
            self.requests += 1
            self.pending += [(k, future, k[1] - start, k is group[-1]) for k in group]

    def read_block(self, shard: int, start: int, stop: int) -> Any:
        key = (shard, start, stop)
        self._fill()
        while self.pending:
            planned, future, first, last = self.pending.popleft()
            self.requests -= last
            if planned == key:
                block = future.result()
                self._fill()
                whole = first == 0 and len(block) == stop - start
                return block if whole else block[first : first + stop - start]
            if last:
                future.cancel()
        return self.read(*key)

    def close(self) -> None:
        for _, future, _, _ in self.pending:
            future.cancel()
        self.pending.clear()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _no_records(n: int) -> Any:
    """A block of ``n`` empty records: what planning the reads of a chunk stands in for data."""
    from shardforge.records.framing import RecordBlock

    return RecordBlock(np.zeros(0, np.uint8), np.zeros(n, np.int64), np.zeros(n, np.int64))


class FileCache:
    """What one pass of reads goes through: ``read_block(shard, start, stop)`` (shard files,
    read ahead or not; or, to plan the reads, a recorder) and the last shuffle window read of
    each source."""

    def __init__(self, read_block: Callable[[int, int, int], Any]) -> None:
        self.read_block = read_block
        self._windows: dict[int, tuple[tuple[int, int, int], Any]] = {}

    def window(self, order: EpochOrder, w: int) -> tuple[Any, np.ndarray]:
        key = (order.seed, order.epoch, w)
        cached = self._windows.get(order.source)
        if cached is None or cached[0] != key:
            cached = self._windows[order.source] = (key, order.read_window(self, w))
        return cached[1]


class MixtureOrder:
    """The order ``G`` of one mixture epoch (a single output is a mixture of one source).

    Position ``p`` reads the ``rank``-th document of source ``s`` in this epoch
    (:func:`~shardforge.training.mixture.interleave`): position ``base_s + epoch·c_s + rank`` of
    the source's endless stream of its own shuffled epochs (:class:`EpochOrder`), so every
    document is read once per epoch of its source, and a range of ``G`` reads one contiguous
    run of each source's stream.
    """

    def __init__(self, source_sizes: Sequence[np.ndarray], counts: Sequence[int],
                 base: Sequence[int], *, seed: int, epoch: int, **order: Any) -> None:
        self.source_sizes, self.counts, self.base = source_sizes, [int(c) for c in counts], base
        self.total = sum(self.counts)
        self.seed, self.epoch, self.settings = seed, epoch, order
        self.first_shard = np.cumsum([0] + [len(s) for s in source_sizes])
        self.first_record = np.cumsum([0] + [int(s.sum()) for s in source_sizes])
        self._orders: dict[tuple[int, int], EpochOrder] = {}

    def source_order(self, source: int, epoch: int) -> EpochOrder:
        """The order of epoch ``epoch`` of source ``source``."""
        key = (source, epoch)
        if key not in self._orders:
            if len(self._orders) > 8:
                self._orders.clear()
            self._orders[key] = EpochOrder(
                self.source_sizes[source], seed=self.seed, epoch=epoch, source=source,
                first_shard=int(self.first_shard[source]),
                first_record=int(self.first_record[source]), **self.settings)
        return self._orders[key]

    def read(self, files: FileCache, a: int, b: int) -> tuple[Any, np.ndarray]:
        """Records ``G[a:b]`` as one RecordBlock plus their global record ids."""
        from shardforge.training.mixture import interleave

        source, rank = interleave(self.counts, a, b)
        blocks, ids, where = [], [], []
        for s in np.unique(source):
            at = np.flatnonzero(source == s)
            n = int(self.source_sizes[s].sum())
            k = int(self.base[s]) + self.epoch * self.counts[s] + int(rank[at[0]])
            end = k + len(at)
            while k < end:
                epoch, first = divmod(k, n)
                take = min(end - k, n - first)
                block, i = self.source_order(int(s), epoch).read(files, first, first + take)
                blocks.append(block)
                ids.append(i)
                k += take
            where.append(at)
        block, ids = concat_blocks(blocks), np.concatenate(ids) if ids else np.zeros(0, np.int64)
        if len(where) < 2:
            return block, ids
        order = np.argsort(np.concatenate(where))
        return type(block)(block.buf, block.offsets[order], block.lengths[order]), ids[order]


# --------------------------------------------------------------------------------------------
# Partition of an epoch's work list over ranks, workers and chunks
# --------------------------------------------------------------------------------------------


def rank_span(m: int, rank: int, world: int, unit: int, remainder: str) -> tuple[int, int]:
    """The ``V`` positions ``[lo, hi)`` of ``rank`` (``hi`` may pass ``m``: wrap-around)."""
    if remainder == "keep":
        return m * rank // world, m * (rank + 1) // world
    if remainder == "drop":
        per_rank = m // world // unit * unit
    elif m == 0:
        per_rank = 0
    else:
        per_rank = -(-m // (world * unit)) * unit
    return rank * per_rank, (rank + 1) * per_rank


def worker_chunks(n_chunks: int, worker: int, workers: int) -> tuple[int, int]:
    """The contiguous run of chunk indices ``[c0, c1)`` of ``worker``."""
    return n_chunks * worker // workers, n_chunks * (worker + 1) // workers


class WorkList:
    """Ranges of ``G`` read in order as one virtual sequence ``V``."""

    def __init__(self, ranges: Sequence[Sequence[int]]) -> None:
        self.ranges = np.asarray([r for r in ranges if r[1] > r[0]], dtype=np.int64).reshape(-1, 2)
        self.cum = np.zeros(len(self.ranges) + 1, dtype=np.int64)
        np.cumsum(self.ranges[:, 1] - self.ranges[:, 0], out=self.cum[1:])

    def __len__(self) -> int:
        return int(self.cum[-1])

    def to_g(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """``G`` ranges of ``V[lo:hi]``, wrapping around past the end of ``V``."""
        m, out = len(self), []
        while lo < hi and m:
            a, b = lo % m, min(hi - lo + lo % m, m)
            k = int(np.searchsorted(self.cum, a, side="right")) - 1
            while a < b:
                g0 = int(self.ranges[k, 0] + a - self.cum[k])
                take = min(b - a, int(self.cum[k + 1]) - a)
                out.append((g0, g0 + take))
                a += take
                k += 1
            lo += b - lo % m
        return out


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Join ranges that touch (keeps their order)."""
    out: list[tuple[int, int]] = []
    for a, b in ranges:
        if b <= a:
            continue
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def subtract_ranges(ranges: list[tuple[int, int]], taken: list[tuple[int, int]]
                    ) -> list[tuple[int, int]]:
    """``ranges`` minus every position in ``taken`` (order of ``ranges`` kept)."""
    cuts = sorted(taken)
    out = []
    for a, b in ranges:
        for c, d in cuts:
            if d <= a or c >= b:
                continue
            if c > a:
                out.append((a, c))
            a = max(a, d)
            if a >= b:
                break
        if a < b:
            out.append((a, b))
    return out


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ShardDataset(IterableDataset):
    """Columnar batches (``dict[str, np.ndarray | Ragged]``) from TFRecord shards, split over DDP
    ranks and DataLoader workers at record granularity, shuffled per epoch, exactly resumable;
    or, handed a :class:`Packer`, the packer's batches of each window of documents.

    >>> ds = ShardDataset("out/train", batch_size=256, seed=0)
    >>> for batch in ds:                      # one epoch; the next `iter` starts the next one
    ...     train_step(batch)
    >>> state = ds.state_dict()                # exact position, O(1) to restore
    >>> ds.load_state_dict(state)
    >>> packed = ShardDataset("out/train", packer=TextPacker(packing_length=4096))

    ``source``: a split directory, a glob, a list of shard paths, or a
    :class:`~shardforge.training.mixture.Mixture` of sources. ``spec_or_schema``: a parse
    spec, a schema (``sf.load_schema``), a path to load one from, or ``None`` for the
    ``schema.pbtxt`` of the output dir (:func:`resolve_schema`); ``features`` keeps only those
    columns. ``batch_size``: records per batch, without a packer (a packer reads windows of its
    ``lookahead`` documents instead). ``rank`` / ``world_size`` default to
    ``torch.distributed``'s. ``remainder``: ``"drop"`` / ``"wrap"`` / ``"keep"`` (module docstring).
    ``record_ids=True`` adds a ``record_id`` column (global index of the record in the shards).

    Reading (local paths and ``gs://`` / ``s3://`` URLs alike): each worker reads a block of up to
    ``block_size`` records with one read (one ranged request from a bucket). From a bucket,
    ``read_ahead`` threads (default 4) fetch the next blocks it will read while it decodes, so
    a worker holds at most ``read_ahead`` blocks beyond the shuffle window it is serving
    (``shuffle_buffer`` records); local shards are read in place (the OS reads ahead).
    ``cache_dir``: a local directory that keeps the blocks read from a bucket for later epochs
    and other workers (:class:`~shardforge.records.fs.BlockCache`: at most ``cache_bytes``,
    least recently used evicted, entries CRC-checked; records' CRCs are checked as always).
    Neither changes what is read: the batches and their order are the same.

    Packed batches also carry ``epoch`` (int). Ranks read the same number of *documents* per
    epoch but the number of packed batches depends on their lengths, so ranks may reach the end
    of an epoch a few steps apart: run a DDP loop for a fixed number of steps over an endless
    stream of epochs (as :class:`shardforge.training.trainer.Batches` does), not
    ``for batch in loader``.

    Iterated directly it reads in the calling process; for worker processes wrap it in
    :class:`shardforge.training.loader.ShardLoader`, which keeps the exact position.
    """

    def __init__(
        self,
        source: str | os.PathLike | Sequence[str | os.PathLike] | Mixture,
        *,
        batch_size: int | None = None,
        packer: Packer | None = None,
        spec_or_schema: Schema | Spec | str | os.PathLike | None = None,
        features: Sequence[str] | None = None,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        remainder: str = "drop",
        block_size: int = 256,
        shuffle_buffer: int = 8192,
        record_ids: bool = False,
        verify: bool = True,
        read_ahead: int = READ_AHEAD,
        cache_dir: str | os.PathLike | None = None,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        if remainder not in REMAINDER:
            raise ValueError(f"remainder must be one of {REMAINDER}, got {remainder!r}")
        if (batch_size is None) == (packer is None):
            raise ValueError("give batch_size (columnar batches) or a packer (its windows of "
                             "lookahead documents), not both")
        if packer is None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.mixture = as_mixture(source)
        self.source_names = self.mixture.names
        source_paths = []
        for src in self.mixture.sources:
            paths = resolve_shards(src.location)
            check_shards(paths)  # a job output must be complete: records/manifest.py
            source_paths.append(paths)
        self.paths = [p for paths in source_paths for p in paths]
        self.source_sizes = [shard_sizes(paths) for paths in source_paths]
        self.sizes = np.concatenate(self.source_sizes)
        self.shard_start = np.concatenate(([0], np.cumsum(self.sizes)))  # global id of record 0
        # global id of each source's first record (and one past the last)
        self.source_start = np.cumsum([0] + [int(s.sum()) for s in self.source_sizes])
        schemas = {src.name: resolve_schema(spec_or_schema, paths)
                   for src, paths in zip(self.mixture.sources, source_paths)}
        complete = {src.name: schemas[src.name] for src in self.mixture.sources
                    if not src.missing}  # the sources that set the packer up
        if not complete:
            raise ValueError("every source declares missing features: at least one must have "
                             "all the features read")
        schema = next(iter(complete.values()))
        spec = spec_of(schema)
        if features is not None:
            missing = sorted(set(features) - set(spec))
            if missing:
                raise KeyError(f"features {missing} are not in the spec ({sorted(spec)})")
            spec = {name: spec[name] for name in features}
        self.spec: Spec = spec
        self.packer = None if packer is None else bind_packer(packer, complete)
        self.decode_spec = spec if self.packer is None else self.packer.features(spec)
        check_features(schemas, self.decode_spec,
                       {src.name: src.missing for src in self.mixture.sources})
        documents = [int(sizes.sum()) for sizes in self.source_sizes]
        tokens = (None if self.mixture.temperature is None
                  else [source_tokens(src, self.mixture.token_feature)
                        for src in self.mixture.sources])
        self.counts = self.mixture.epoch_counts(documents, tokens)
        self.mixture_state = self.mixture.describe(documents, tokens)
        self.epoch_length = int(self.counts.sum())
        self.base = [0] * len(self.counts)  # stream offsets, moved by a re-weighted restart
        dist_rank, dist_world = _dist_rank_world()
        self.rank = dist_rank if rank is None else int(rank)
        self.world_size = dist_world if world_size is None else int(world_size)
        self.batch_size = int(batch_size if self.packer is None else self.packer.lookahead)
        self.shuffle, self.seed, self.remainder = shuffle, int(seed), remainder
        self.block_size, self.shuffle_buffer = int(block_size), int(shuffle_buffer)
        self.record_ids, self.verify = record_ids, verify
        if read_ahead < 0:
            raise ValueError(f"read_ahead must be >= 0 blocks, got {read_ahead}")
        self.read_ahead = int(read_ahead)
        self.cache = None if cache_dir is None else fs.BlockCache(cache_dir, cache_bytes)
        self.num_workers = 1  # set by ShardLoader
        self.emit_positions = False  # set by ShardLoader: batches carry POSITION_KEY
        self.rotate = 0  # logical worker of physical worker 0 (keeps order across a resume)
        self._reset(0)

    # -- the unit of work ----------------------------------------------------------------------

    @property
    def chunk_size(self) -> int:
        """Records per chunk (one batch; one window with a packer)."""
        return self.batch_size

    @property
    def rank_unit(self) -> int:
        """Per-rank record counts are multiples of this (whole batches; any count of documents
        with a packer)."""
        return self.batch_size if self.packer is None else 1

    @property
    def transport_group(self) -> int:
        """Items a worker sends per message: a DataLoader message costs far more than pickling a
        few KiB, so small items (packed batches) travel in groups; columnar batches are big."""
        return 1 if self.packer is None else 32

    def chunk(self, block: Any, ids: np.ndarray) -> tuple[int, Callable[[int], dict]]:
        """What one chunk of records turns into: ``(n_items, make_item)``: one columnar batch,
        or the packer's batches of the window (picklable: see :meth:`from_transport`)."""
        if self.packer is None:
            return 1, lambda i: self.decode(block, ids)
        packer, window, epoch = self.packer, self.plan(block, ids, self.layout()), self.epoch
        return len(window), lambda i: {**packer.batch(window, i), "epoch": epoch}

    def from_transport(self, item: dict) -> dict:
        """What the caller gets from an item as a worker process sends it."""
        return item if self.packer is None else self.packer.to_torch(item)

    def decode(self, block: Any, ids: np.ndarray) -> Batch:
        """The columnar batch of a block of records (``record_id`` added if asked for)."""
        batch = self._decode(block, ids, self.spec)
        if self.record_ids:
            batch["record_id"] = ids
        return batch

    def plan(self, block: Any, ids: np.ndarray, layout: Mapping[str, Any]) -> Sized:
        """The packer's plan of a window of records under ``layout``."""
        docs = self._decode(block, ids, self.decode_spec)
        try:
            return self.packer.plan(docs, ids, layout)
        except DocumentError as err:
            path, record = self._locate(int(ids[err.index]))
            raise ValueError(f"{path}: record {record}: {err}") from None

    def _decode(self, block: Any, ids: np.ndarray, spec: Spec) -> Batch:
        from shardforge.records import ExampleDecodeError, decode_batch

        try:
            return decode_batch(block, spec)
        except ExampleDecodeError as err:  # name the shard and the record's index in it
            raise err.at(*self._locate(int(ids[err.index]))) from None

    def _locate(self, record: int) -> tuple[str, int]:
        """The shard of a global record id and the record's index in it."""
        shard = int(np.searchsorted(self.shard_start, record, side="right")) - 1
        return self.paths[shard], record - int(self.shard_start[shard])

    # -- epochs and positions ------------------------------------------------------------------

    def _reset(self, epoch: int, work: Sequence[Sequence[int]] | None = None) -> None:
        self.epoch = int(epoch)
        total = self.epoch_length
        self.work = [(0, total)] if work is None else [tuple(map(int, r)) for r in work]
        self.positions = [[0, 0, 0] for _ in range(self.num_workers)]
        self.next_worker = 0

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning (no-op when already in it: keeps a loaded state)."""
        if int(epoch) != self.epoch:
            self._reset(epoch)

    def set_num_workers(self, num_workers: int) -> None:
        num_workers = max(1, int(num_workers))
        if num_workers != self.num_workers:
            if any(p != [0, 0, 0] for p in self.positions):
                raise RuntimeError("change the number of workers through load_state_dict")
            self.num_workers = num_workers
            self.positions = [[0, 0, 0] for _ in range(num_workers)]

    def order(self, epoch: int | None = None) -> MixtureOrder:
        """The order ``G`` of ``epoch`` (default: the current one)."""
        return MixtureOrder(self.source_sizes, self.counts, self.base, seed=self.seed,
                            epoch=self.epoch if epoch is None else epoch, shuffle=self.shuffle,
                            block_size=self.block_size, shuffle_buffer=self.shuffle_buffer)

    def source_of(self, doc_ids: np.ndarray) -> np.ndarray:
        """The index (in :attr:`source_names`) of the source of each global record id."""
        return np.searchsorted(self.source_start, np.asarray(doc_ids), side="right") - 1

    def source_counts(self, batch: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Documents begun and tokens of a packed batch, per source (in :attr:`source_names`'
        order): a document split over batches counts where its first piece is."""
        source = self.source_of(batch["doc_ids"])
        n = len(self.source_names)
        tokens = np.bincount(source, weights=np.diff(np.asarray(batch["cu_seqlens"])),
                             minlength=n)
        first = np.asarray(batch["doc_offsets"]) == 0
        return np.bincount(source[first], minlength=n), tokens

    def worker_plan(self, worker: int) -> tuple[WorkList, int, int, int, int]:
        """``(work, lo, hi, c0, c1)``: the worker reads chunks ``c0..c1-1`` of ``V[lo:hi]``."""
        work = WorkList(self.work)
        lo, hi = rank_span(len(work), self.rank, self.world_size, self.rank_unit, self.remainder)
        c0, c1 = worker_chunks(-(-(hi - lo) // self.chunk_size), worker, self.num_workers)
        return work, lo, hi, c0, c1

    def __len__(self) -> int:
        """Batches per rank in a full epoch (exact for columnar batches)."""
        if self.packer is not None:
            raise TypeError("the number of packed batches depends on the data; it has no len()")
        lo, hi = rank_span(self.epoch_length, self.rank, self.world_size, self.rank_unit,
                           self.remainder)
        return -(-(hi - lo) // self.chunk_size)

    def _read_chunk(self, order: MixtureOrder, files: FileCache, work: WorkList, lo: int,
                    hi: int, c: int) -> tuple[Any, np.ndarray]:
        """The records of chunk ``c`` of ``V[lo:hi]`` and their global ids."""
        a, b = lo + c * self.chunk_size, min(lo + (c + 1) * self.chunk_size, hi)
        parts = [order.read(files, g0, g1) for g0, g1 in work.to_g(a, b)]
        ids = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
        return concat_blocks([p[0] for p in parts]), ids

    def _planned_reads(self, worker: int, first: int) -> Iterator[tuple[int, int, int]]:
        """The ``(shard, start, stop)`` block reads ``worker`` makes from its chunk ``first`` on,
        in order: the reading code run on a recorder instead of the shards."""
        work, lo, hi, c0, c1 = self.worker_plan(worker)
        order, planned = self.order(), []
        files = FileCache(lambda shard, start, stop: planned.append((shard, start, stop))
                          or _no_records(stop - start))
        for c in range(c0 + first, c1):
            self._read_chunk(order, files, work, lo, hi, c)
            yield from planned
            planned.clear()

    def _iter_worker(self, worker: int) -> Iterator[dict]:
        work, lo, hi, c0, c1 = self.worker_plan(worker)
        order = self.order()
        chunk_done, item_done, _ = self.positions[worker]
        shards = ShardFiles(self.paths, self.verify, self.cache)
        # local shards are read in place: the OS reads ahead, threads would only cost
        depth = self.read_ahead if any(fs.is_remote(p) for p in self.paths) else 0
        ahead = ReadAhead(shards.read_block, self._planned_reads(worker, chunk_done), depth,
                          max(self.block_size, self.chunk_size))
        files = FileCache(ahead.read_block)
        try:
            for c in range(c0 + chunk_done, c1):
                block, ids = self._read_chunk(order, files, work, lo, hi, c)
                n_items, make = self.chunk(block, ids)
                for i in range(item_done, n_items):
                    item = make(i)
                    if self.emit_positions:
                        item[POSITION_KEY] = (worker, self.epoch, c - c0, i, n_items)
                    yield item
                item_done = 0
        finally:
            ahead.close()
            shards.close()

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        if info is not None:  # inside a DataLoader worker: the loader tracks the position
            worker = (info.id + self.rotate) % info.num_workers
            served, group = self.positions[worker][2], []
            for item in self._iter_worker(worker):
                group.append(item)
                served += 1
                # group boundaries depend only on the worker's item count, so a resumed run
                # sends the same groups and the DataLoader interleaves them in the same order
                if served % self.transport_group == 0:
                    yield {GROUP_KEY: group}
                    group = []
            if group:
                yield {GROUP_KEY: group}
            return
        if self.num_workers != 1:
            raise RuntimeError("this dataset is set up for worker processes: iterate its loader")
        emit, self.emit_positions = self.emit_positions, True
        try:
            for item in self._iter_worker(0):
                self.advance(item.pop(POSITION_KEY))
                item = self.from_transport(item)
                if emit:
                    item[POSITION_KEY] = None
                yield item
        finally:
            self.emit_positions = emit
        self._reset(self.epoch + 1)

    def advance(self, position: tuple) -> None:
        """Record that the item at ``position`` was consumed."""
        worker, epoch, chunk, item, n_items = position
        if epoch != self.epoch:
            return
        served = self.positions[worker][2] + 1
        self.positions[worker] = ([chunk + 1, 0, served] if item + 1 == n_items
                                  else [chunk, item + 1, served])
        # the DataLoader takes a whole group from a worker before moving to the next one
        self.next_worker = worker if served % self.transport_group else (worker + 1) % \
            self.num_workers

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """This rank's exact position (plain Python: ints and lists, JSON/pickle friendly)."""
        return {
            "version": STATE_VERSION, "kind": type(self.packer or self).__name__,
            "seed": self.seed,
            "shuffle": self.shuffle, "mixture": self.mixture_state, "base": list(self.base),
            "epoch": self.epoch,
            "work": [list(r) for r in self.work], "rank": self.rank,
            "world_size": self.world_size, "num_workers": self.num_workers,
            "chunk_size": self.chunk_size, "rank_unit": self.rank_unit, "layout": self.layout(),
            "remainder": self.remainder, "block_size": self.block_size,
            "shuffle_buffer": self.shuffle_buffer, "positions": [list(p) for p in self.positions],
            "next_worker": self.next_worker,
        }

    def load_state_dict(self, state: dict | Sequence[dict]) -> None:
        """Restore a position saved by :meth:`state_dict`.

        Pass this rank's state for the same topology. To resume on a different number of ranks,
        workers (or a different batch size), pass the list of *all* ranks' states (e.g. gathered
        with ``all_gather_object``): the records none of them consumed become this epoch's work
        list, split over the new topology, each read exactly once.
        """
        states = [state] if isinstance(state, dict) else list(state)
        if states[0].get("version") == 1 and len(self.source_names) == 1:
            states = [self._from_version_1(s) for s in states]
        first = states[0]
        if first.get("version") != STATE_VERSION:
            raise ValueError(f"unknown loader state version {first.get('version')!r}")
        for key, mine in (("seed", self.seed), ("shuffle", self.shuffle),
                          ("block_size", self.block_size), ("shuffle_buffer", self.shuffle_buffer)):
            if first[key] != mine:
                raise ValueError(f"state was saved with {key}={first[key]!r}, this loader has "
                                 f"{mine!r}: not the same data order")
        changed = changes(first["mixture"], self.mixture_state)
        if changed and not self.mixture.reweight:
            raise ValueError(f"the data changed since this state was saved ({'; '.join(changed)})"
                             f": not the same data order. To go on with the new mixture, ask "
                             f"for a re-weighted restart (Mixture(..., reweight=True); in a "
                             f"config, data: {{sources: [...], reweight: true}})")
        if changed:
            self._reweighted_restart(first)
            return
        self.base = [int(b) for b in first["base"]]
        same = (first["world_size"] == self.world_size and first["num_workers"] == self.num_workers
                and first["chunk_size"] == self.chunk_size and first["rank_unit"] == self.rank_unit
                and first["remainder"] == self.remainder and first["layout"] == self.layout())
        if same:
            mine = next((s for s in states if s["rank"] == self.rank), None)
            if mine is None and len(states) > 1:
                raise ValueError(f"no state for rank {self.rank} among the given states")
            mine = mine or first
            self.epoch = int(mine["epoch"])
            self.work = [tuple(r) for r in mine["work"]]
            self.positions = [list(p) for p in mine["positions"]]
            self.next_worker = int(mine["next_worker"])
            return
        self._reset(first["epoch"], self.remaining_work(states))

    def _from_version_1(self, state: dict) -> dict:
        """A state saved before mixtures (one output): the same position, in this version."""
        if state["num_records"] != self.epoch_length:
            raise ValueError(f"state was saved with num_records={state['num_records']!r}, this "
                             f"loader has {self.epoch_length!r}: not the same data order")
        return {**state, "version": STATE_VERSION, "mixture": self.mixture_state, "base": [0]}

    def _reweighted_restart(self, state: dict) -> None:
        """Start a new mixture epoch 0 under this mixture: each source unchanged in its
        documents goes on in its own stream after what the saved epoch had planned for it (the
        part of that epoch not consumed yet is skipped, not read twice); a new or changed source
        starts its stream anew."""
        saved = {s["name"]: (s, c, b) for s, c, b in zip(
            state["mixture"]["sources"], state["mixture"]["counts"], state["base"])}
        next_epoch = int(state["epoch"]) + 1
        self.base = []
        for described in self.mixture_state["sources"]:
            old = saved.get(described["name"])
            same = old is not None and all(old[0][k] == described[k]
                                           for k in ("path", "documents"))
            self.base.append(int(old[2]) + next_epoch * int(old[1]) if same else 0)
        self._reset(0)

    def remaining_work(self, states: Sequence[dict]) -> list[tuple[int, int]]:
        """The ranges of ``G`` that no rank of ``states`` consumed (in their ``V`` order)."""
        first = states[0]
        world, workers = first["world_size"], first["num_workers"]
        if len(states) != world:
            if len(states) == 1 and self.packer is None:
                # batch dataset: ranks step in lockstep, so every rank is where this one is
                states = [dict(first, rank=r) for r in range(world)]
            else:
                raise ValueError(f"resuming on a new topology needs the states of all {world} "
                                 f"ranks, got {len(states)}")
        work = WorkList(first["work"])
        order = self.order(first["epoch"])
        shards = ShardFiles(self.paths, self.verify, self.cache)
        files = FileCache(shards.read_block)
        left, taken = [], []
        try:
            for state in states:
                for w in range(workers):
                    lo, hi = rank_span(len(work), state["rank"], world, first["rank_unit"],
                                       first["remainder"])
                    chunk = first["chunk_size"]
                    c0, c1 = worker_chunks(-(-(hi - lo) // chunk), w, workers)
                    done, item, _ = state["positions"][w]
                    cut = lo + min((c0 + done) * chunk, hi - lo)
                    taken += work.to_g(lo + c0 * chunk, cut)
                    end = lo + min(c1 * chunk, hi - lo)
                    if item and cut < end:
                        a, b = cut, min(cut + chunk, end)
                        used = self.consumed_in_chunk(order, files, work.to_g(a, b), item,
                                                      first["layout"])
                        taken += used
                        left += subtract_ranges(work.to_g(a, b), used)
                        cut = b
                    left += work.to_g(cut, end)
        finally:
            shards.close()
        out: list[tuple[int, int]] = []
        for a, b in left:  # drop wrap-around repeats and anything consumed
            out += subtract_ranges([(a, b)], taken + out)
        return merge_ranges(out)

    def layout(self) -> dict:
        """What, besides the chunk size, decides how a chunk's items are numbered."""
        return {} if self.packer is None else self.packer.layout()

    def consumed_in_chunk(self, order: MixtureOrder, files: FileCache,
                          g_ranges: list[tuple[int, int]], items: int, layout: dict
                          ) -> list[tuple[int, int]]:
        """``G`` ranges of the records consumed by the first ``items`` items of a chunk that was
        cut up under ``layout``."""
        if self.packer is None:
            return list(g_ranges) if items else []
        parts = [order.read(files, a, b) for a, b in g_ranges]
        ids = np.concatenate([p[1] for p in parts])
        window = self.plan(concat_blocks([p[0] for p in parts]), ids, layout)
        g_pos = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in g_ranges])
        done = g_pos[self.packer.consumed(window, items)]
        return merge_ranges([(int(p), int(p) + 1) for p in done])

