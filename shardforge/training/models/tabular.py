"""A tabular model: the schema's :class:`FeatureLayer` followed by an MLP.

Binary classification (``n_classes=2``) has one logit per row and a sigmoid cross-entropy;
more classes have one logit per class and a softmax cross-entropy.

    schema = sf.load_schema("out/")
    model = TabularModel(schema, TabularConfig(hidden=(64, 32)))
    logits = model(batch)                     # batch: columnar dict from ShardDataset
    loss = model.loss(logits, batch["label"])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TabularConfig:
    hidden: tuple[int, ...] = (128, 64)
    n_classes: int = 2
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, not {self.n_classes}")
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden sizes must be >= 1, not {list(self.hidden)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout!r}")


class TabularModel(nn.Module):
    def __init__(self, schema, cfg: TabularConfig | None = None) -> None:
        super().__init__()
        from shardforge.features.layer import FeatureLayer

        self.cfg = cfg or TabularConfig()
        self.features = FeatureLayer(schema)
        layers: list[nn.Module] = []
        width = self.features.output_dim
        for hidden in self.cfg.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if self.cfg.dropout:
                layers.append(nn.Dropout(self.cfg.dropout))
            width = hidden
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1 if self.cfg.n_classes == 2 else self.cfg.n_classes)

    def repeated_blocks(self) -> list[nn.Module]:
        """None: an MLP this small is recomputed and sharded as one unit
        (:class:`~shardforge.training.models.TrainableModel`)."""
        return []

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits: ``[B]`` for binary, ``[B, n_classes]`` otherwise."""
        logits = self.head(self.mlp(self.features(batch)))
        return logits.squeeze(-1) if self.cfg.n_classes == 2 else logits

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.reshape(-1)
        if self.cfg.n_classes == 2:
            return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
        return F.cross_entropy(logits.float(), labels.long())

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """P(label = 1) for binary, class probabilities otherwise."""
        return torch.sigmoid(logits) if self.cfg.n_classes == 2 else torch.softmax(logits, -1)


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve from ranks (Mann-Whitney U), ties given half credit."""
    import numpy as np

    labels = np.asarray(labels).reshape(-1).astype(bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
