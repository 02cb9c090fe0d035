"""Small readable models for packed batches and tabular features.

- :class:`PackedLM` / :class:`LMConfig` (``lm.py``): decoder-only LM over padding-free packed
  batches (RoPE from ``position_ids``, GQA through ``flash_attn_varlen``, SwiGLU, QK-norm, z-loss).
- :class:`TabularModel` / :class:`TabularConfig` (``tabular.py``): ``FeatureLayer`` + MLP.
- :class:`~shardforge.training.models.vision.VisionEncoder` and
  :class:`~shardforge.training.models.vision.VisionLanguageModel` (``vision.py``).

Every model the recipes train is a :class:`TrainableModel`: it lists its repeated blocks, the
unit that activation checkpointing recomputes and ZeRO-3 shards
(:func:`shardforge.training.parallel.parallelize`).
"""

from typing import Protocol, runtime_checkable

from torch import nn

from shardforge.training.models.lm import LMConfig, LMOutput, PackedLM
from shardforge.training.models.tabular import TabularConfig, TabularModel, roc_auc


@runtime_checkable
class TrainableModel(Protocol):
    """A model the recipes can parallelize: an ``nn.Module`` that lists its repeated blocks.

    >>> model = PackedLM(LMConfig(vocab_size=64, n_layer=2, n_head=2, n_kv_head=1, d_model=16))
    >>> isinstance(model, TrainableModel), len(model.repeated_blocks())
    (True, 2)
    """

    def repeated_blocks(self) -> list[nn.Module]:
        """The blocks (submodules) to recompute in backward and to shard one by one, each
        called once per forward; a composite model lists its parts' blocks."""
        ...


__all__ = ["LMConfig", "LMOutput", "PackedLM", "TabularConfig", "TabularModel",
           "TrainableModel", "roc_auc"]
