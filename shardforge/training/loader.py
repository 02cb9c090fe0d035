"""Loaders: DataLoader worker processes with an exact, O(1) resumable position; entry points.

``packed_loader("out/train", packing_length=4096)`` is the entry point for language models: a
:class:`~shardforge.training.dataset.ShardDataset` handed a
:class:`~shardforge.training.packing.TextPacker` reads token sequences from the shards (in its
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

A weighted mixture of job outputs is a source too (:mod:`shardforge.training.mixture`)::

    mix = Mixture([Source("web/", weight=0.7), Source("code/", weight=0.3)])
    loader = packed_loader(mix, packing_length=4096, num_workers=2, seed=0)

The same loader composed by hand (a multimodal loader hands it a ``MultimodalPacker``)::

    loader = ShardLoader(ShardDataset("out/train", packer=TextPacker(packing_length=4096),
                                      seed=0), num_workers=2)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from shardforge.training.dataset import GROUP_KEY, POSITION_KEY, Packer, ShardDataset
from shardforge.training.mixture import Mixture
from shardforge.training.packing import TextPacker

Sources = str | os.PathLike | Sequence[str | os.PathLike] | Mixture


def _identity(item: Any) -> Any:
    return item


class ShardLoader:
    """Iterates a :class:`ShardDataset` (with or without a packer) with ``num_workers`` DataLoader
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


_LOADER_SETTINGS = ("num_workers", "prefetch_factor", "pin_memory", "multiprocessing_context")


def build_loader(source: Sources, settings: dict[str, Any], packer_type: type[Packer] | None = None
                 ) -> ShardLoader:
    """A :class:`ShardLoader` over a :class:`ShardDataset` (handed a ``packer_type`` built from
    its fields), each taking its own keyword arguments out of ``settings``: one definition of
    every setting and its default, in the class that uses it."""
    settings = dict(settings)
    loader = {name: settings.pop(name) for name in _LOADER_SETTINGS if name in settings}
    if packer_type is not None:
        fields = {f.name for f in dataclasses.fields(packer_type)}
        settings["packer"] = packer_type(**{name: settings.pop(name) for name in list(settings)
                                            if name in fields})
    return ShardLoader(ShardDataset(source, **settings), **loader)


def packed_loader(source: Sources, **settings: Any) -> ShardLoader:
    """Padding-free packed batches from TFRecord shards, resumable exactly:
    ``ShardDataset(source, packer=TextPacker(...))`` read by a :class:`ShardLoader`.

    >>> loader = packed_loader("out/train", packing_length=4096, num_workers=2, seed=0)
    >>> batch = next(iter(loader))
    >>> batch["input_ids"].shape, batch["cu_seqlens"].dtype, batch["packing_efficiency"]
    (torch.Size([4093]), torch.int32, 0.99926...)

    ``settings``: the :class:`~shardforge.training.packing.TextPacker`'s (``packing_length``
    4096 tokens a batch, ``None`` to flatten ``lookahead`` documents a batch;
    ``token_feature``, ``side_features``, ``strategy``, ``lookahead``, ``overflow``), the
    :class:`ShardLoader`'s (``num_workers``, ``prefetch_factor``, ``pin_memory``) and the
    :class:`~shardforge.training.dataset.ShardDataset`'s (``seed``, ``shuffle``, ``rank``,
    ``world_size``, ``remainder``, ``spec_or_schema``, ...).
    """
    return build_loader(source, settings, TextPacker)


def shard_loader(source: Sources, **settings: Any) -> ShardLoader:
    """Columnar batches (:class:`ShardDataset`'s keyword arguments, ``batch_size`` among them)
    read by ``num_workers`` worker processes (:class:`ShardLoader`'s arguments), with an exact
    resumable position."""
    return build_loader(source, settings)
