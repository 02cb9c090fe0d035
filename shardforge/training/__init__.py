"""From shards to PyTorch: ShardDataset, sequence packing, models, trainer, memory planner.

Data side (exported lazily, so ``import shardforge.training`` stays cheap)::

    from shardforge.training import packed_loader, ShardDataset
    loader = packed_loader("out/train", packing_length=4096, num_workers=2, seed=0)

- :func:`packed_loader`, :class:`ShardLoader`, :func:`shard_loader`
  (``shardforge.training.loader``); a :class:`Mixture` of :class:`Source` s
  (``shardforge.training.mixture``) is read by the same loaders
- :class:`ShardDataset` and the :class:`Packer` it is handed (``shardforge.training.dataset``):
  :class:`TextPacker` (``shardforge.training.packing``), ``MultimodalPacker``
  (``shardforge.training.mm_packing``)
- packing: :func:`plan_packs`, :class:`PackPlan`, :func:`pack_documents`,
  :func:`build_packed_batch`, :func:`flatten_documents`, :func:`collate_flattened`,
  :func:`split_documents`, :func:`shift_labels`, :func:`hf_kwargs`, :func:`unpad_input`,
  :func:`pad_input`, :func:`packed_from_padded`, ``IGNORE_INDEX``
  (``shardforge.training.packing``)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ShardDataset": "dataset",
    "Mixture": "mixture",
    "Source": "mixture",
    "Packer": "dataset",
    "ShardLoader": "loader",
    "TextPacker": "packing",
    "packed_loader": "loader",
    "shard_loader": "loader",
    "IGNORE_INDEX": "packing",
    "PackPlan": "packing",
    "plan_packs": "packing",
    "split_documents": "packing",
    "pack_documents": "packing",
    "build_packed_batch": "packing",
    "batch_from_plan": "packing",
    "flatten_documents": "packing",
    "collate_flattened": "packing",
    "shift_labels": "packing",
    "hf_kwargs": "packing",
    "unpad_input": "packing",
    "pad_input": "packing",
    "packed_from_padded": "packing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
