"""Loaders: DataLoader worker processes with an exact, O(1) resumable position, and packed loaders.

``packed_loader("out/train", packing_length=4096)`` is the entry point for language models: it
reads token sequences from the shards (:class:`~shardforge.training.dataset.ShardDataset`'s
order and rank/worker split), packs each window of ``lookahead`` documents into padding-free
batches of at most ``packing_length`` tokens (first-fit-decreasing), and yields them as torch
tensors (see :mod:`shardforge.training.packing` for the batch format and the label convention).

    loader = packed_loader("out/train", packing_length=4096, num_workers=2, seed=0)
    for batch in loader:                  # one epoch; iterate again for the next
        loss = step(model, batch)
        if time_to_checkpoint:
            torch.save({"model": ..., "loader": loader.state_dict()}, path)
    ...
    loader.load_state_dict(torch.load(path)["loader"])   # continues exactly where it stopped
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from shardforge.training.dataset import (
    GROUP_KEY,
    POSITION_KEY,
    EpochOrder,
    FileCache,
    ShardDataset,
    concat_blocks,
    spec_for,
)
from shardforge.training.packing import (
    batch_from_plan,
    flatten_documents,
    packed_to_numpy,
    packed_to_torch,
    plan_packs,
)


def _identity(item: Any) -> Any:
    return item


class ShardLoader:
    """Iterates a :class:`ShardDataset` (or :class:`PackedDataset`) with ``num_workers`` DataLoader
    worker processes, and knows exactly which items the training loop has consumed.

    Every item carries its (worker, chunk, item) position out of the worker; the loader strips it
    and advances the dataset's position only when the item is handed to the caller, so
    ``state_dict()`` is exact even while workers prefetch ahead. One ``iter()`` is one epoch
    (the rest of it after ``load_state_dict``); the next ``iter()`` starts the next epoch.
    """

    def __init__(self, dataset: ShardDataset, *, num_workers: int = 0, prefetch_factor: int = 2,
                 pin_memory: bool = False, multiprocessing_context: Any = None) -> None:
        self.dataset = dataset
        self.num_workers = int(num_workers)
        dataset.set_num_workers(max(1, self.num_workers))
        # items cross processes as numpy and become tensors here, so pinning happens here too
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self._kwargs: dict[str, Any] = {}
        if self.num_workers:
            self._kwargs.update(prefetch_factor=prefetch_factor,
                                multiprocessing_context=multiprocessing_context)

    def _deliver(self, item: dict) -> dict:
        if self.pin_memory:
            return {k: v.pin_memory() if isinstance(v, torch.Tensor) else v
                    for k, v in item.items()}
        return item

    def __iter__(self) -> Iterator[dict]:
        ds = self.dataset
        if self.num_workers == 0:
            for item in ds:
                yield self._deliver(item)
            return
        ds.emit_positions, ds.rotate = True, ds.next_worker
        loader = DataLoader(ds, batch_size=None, num_workers=self.num_workers,
                            collate_fn=_identity, **self._kwargs)
        for message in loader:
            for item in message[GROUP_KEY]:
                ds.advance(item.pop(POSITION_KEY))
                yield self._deliver(ds.from_transport(item))
        ds.set_epoch(ds.epoch + 1)

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def state_dict(self) -> dict:
        """This rank's exact position (call it on every rank; save them all)."""
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict | Sequence[dict]) -> None:
        """Restore a position: this rank's state, or the list of all ranks' states (needed to
        resume on a different number of ranks or workers)."""
        self.dataset.load_state_dict(state)


class PackedDataset(ShardDataset):
    """Packed, padding-free token batches from shards: each chunk of ``lookahead`` documents
    (records, in the dataset's shuffled order) is planned into bins of ``packing_length`` tokens
    and yielded bin by bin. ``packing_length=None`` flattens each chunk into one batch instead
    (HuggingFace's ``DataCollatorWithFlattening``: ``lookahead`` documents per batch).

    Every batch also has ``epoch`` (int). Ranks read the same number of *documents* per epoch
    but the number of packed batches depends on their lengths, so ranks may reach the end of an
    epoch a few steps apart: run a DDP loop for a fixed number of steps over an endless stream
    of epochs (as :class:`shardforge.training.trainer.Batches` does), not ``for batch in loader``.
    """

    items_per_chunk_fixed = False
    transport_group = 32

    def __init__(self, source: str | os.PathLike | Sequence[str | os.PathLike], *,
                 packing_length: int | None, token_feature: str = "tokens",
                 side_features: Sequence[str] = (), strategy: str = "ffd",
                 lookahead: int = 4096, overflow: str = "split", **kwargs: Any) -> None:
        super().__init__(source, batch_size=lookahead, **kwargs)
        self.packing_length = None if packing_length is None else int(packing_length)
        self.token_feature, self.side_features = token_feature, tuple(side_features)
        self.strategy, self.overflow = strategy, overflow
        self.decode_spec = spec_for(token_feature, self.side_features, self.spec)

    @property
    def rank_unit(self) -> int:
        return 1

    def __len__(self) -> int:
        raise TypeError("the number of packed batches depends on the data; it has no len()")

    def to_transport(self, item: dict) -> dict:
        return packed_to_numpy(item)

    def from_transport(self, item: dict) -> dict:
        return packed_to_torch(item)

    def layout(self) -> dict:
        return {"packing_length": self.packing_length, "strategy": self.strategy,
                "overflow": self.overflow}

    def _plan(self, block: Any, ids: np.ndarray, layout: dict | None = None
              ) -> tuple[Any, dict, Any]:
        layout = self.layout() if layout is None else layout
        batch = self.decode(block, ids, self.decode_spec)
        tokens = batch.pop(self.token_feature)
        batch.pop("record_id", None)
        if layout["packing_length"] is None:
            return tokens, batch, None
        plan = plan_packs(tokens.row_lengths(), layout["packing_length"],
                          strategy=layout["strategy"], overflow=layout["overflow"])
        return tokens, batch, plan

    def chunk(self, block: Any, ids: np.ndarray) -> tuple[int, Callable[[int], dict]]:
        tokens, side, plan = self._plan(block, ids)
        epoch = self.epoch

        def make(i: int) -> dict:
            if plan is None:
                out = flatten_documents(tokens, side_features=side, doc_ids=ids)
            else:
                out = batch_from_plan(tokens, plan, i, side_features=side, doc_ids=ids)
            out["epoch"] = epoch
            return out

        if plan is None:
            return int(tokens.row_lengths().sum() > 0), make
        return len(plan), make

    def consumed_in_chunk(self, order: EpochOrder, files: FileCache,
                          g_ranges: list[tuple[int, int]], items: int, layout: dict
                          ) -> list[tuple[int, int]]:
        """A document counts as consumed once all its pieces were (a split document whose first
        pieces were consumed is read again in full: tokens may repeat, none is lost)."""
        parts = [order.read(files, a, b) for a, b in g_ranges]
        block = concat_blocks([p[0] for p in parts])
        ids = np.concatenate([p[1] for p in parts])
        tokens, _, plan = self._plan(block, ids, layout)
        g_pos = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in g_ranges])
        if plan is None:
            return list(g_ranges)
        consumed = np.zeros(len(plan.piece_doc), dtype=bool)
        consumed[plan.order[: plan.bin_splits[items]]] = True
        pieces_left = np.bincount(plan.piece_doc[~consumed], minlength=len(ids))
        has_pieces = np.bincount(plan.piece_doc, minlength=len(ids)) > 0
        # empty documents have no piece: consumed with the chunk's first item
        done = np.flatnonzero((pieces_left == 0) & (has_pieces | (items > 0)))
        return [(int(p), int(p) + 1) for p in g_pos[done]]


def packed_loader(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    packing_length: int | None = 4096,
    token_feature: str = "tokens",
    side_features: Sequence[str] = (),
    num_workers: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    strategy: str = "ffd",
    lookahead: int = 4096,
    overflow: str = "split",
    spec_or_schema: Any = None,
    rank: int | None = None,
    world_size: int | None = None,
    remainder: str = "drop",
    block_size: int = 256,
    shuffle_buffer: int = 8192,
    prefetch_factor: int = 2,
    pin_memory: bool = False,
    verify: bool = True,
) -> ShardLoader:
    """Padding-free packed batches from TFRecord shards, resumable exactly.

    >>> loader = packed_loader("out/train", packing_length=4096, num_workers=2, seed=0)
    >>> batch = next(iter(loader))
    >>> batch["input_ids"].shape, batch["cu_seqlens"].dtype, batch["packing_efficiency"]
    (torch.Size([4093]), torch.int32, 0.99926...)

    ``token_feature``: the int64 token-id feature of each record; ``side_features``: per-document
    features carried along (one row per document of the batch). ``packing_length`` is the token
    budget of a batch (``None``: flatten ``lookahead`` documents per batch); ``strategy``
    ``"ffd"`` / ``"bfd"`` / ``"nf"`` over windows of ``lookahead`` documents; ``overflow``
    ``"split"`` / ``"truncate"`` for documents longer than the budget. Shuffling, rank/worker
    split and ``remainder`` as in :class:`~shardforge.training.dataset.ShardDataset`.
    """
    dataset = PackedDataset(
        source, packing_length=packing_length, token_feature=token_feature,
        side_features=side_features, strategy=strategy, lookahead=lookahead, overflow=overflow,
        spec_or_schema=spec_or_schema, shuffle=shuffle, seed=seed, rank=rank,
        world_size=world_size, remainder=remainder, block_size=block_size,
        shuffle_buffer=shuffle_buffer, verify=verify,
    )
    return ShardLoader(dataset, num_workers=num_workers, prefetch_factor=prefetch_factor,
                       pin_memory=pin_memory)


def shard_loader(source: str | os.PathLike | Sequence[str | os.PathLike], *, batch_size: int,
                 num_workers: int = 0, prefetch_factor: int = 2, pin_memory: bool = False,
                 **kwargs: Any) -> ShardLoader:
    """Columnar batches (:class:`ShardDataset`, same keyword arguments) read by ``num_workers``
    worker processes, with an exact resumable position."""
    return ShardLoader(ShardDataset(source, batch_size=batch_size, **kwargs),
                       num_workers=num_workers, prefetch_factor=prefetch_factor,
                       pin_memory=pin_memory)
