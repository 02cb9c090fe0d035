"""Small readable models for packed batches and tabular features.

- :class:`PackedLM` / :class:`LMConfig` (``lm.py``): decoder-only LM over padding-free packed
  batches (RoPE from ``position_ids``, GQA through ``flash_attn_varlen``, SwiGLU, QK-norm, z-loss).
- :class:`TabularModel` / :class:`TabularConfig` (``tabular.py``): ``FeatureLayer`` + MLP.
"""

from shardforge.training.models.lm import LMConfig, LMOutput, PackedLM
from shardforge.training.models.tabular import TabularConfig, TabularModel, roc_auc

__all__ = ["LMConfig", "LMOutput", "PackedLM", "TabularConfig", "TabularModel", "roc_auc"]
