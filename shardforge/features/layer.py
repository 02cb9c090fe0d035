"""``FeatureLayer``: transformed features -> one dense ``[B, D]`` tensor (PyTorch).

The dense output concatenates the schema's ``dense`` parts in the FeatureSet's declaration order
(labels excluded): numeric columns as float values (flattened), bucketized columns used directly
and ``indicator`` columns as one-hot / multi-hot counts (weights for weighted columns),
``embedding`` columns as the combined embedding of their ids (``nn.EmbeddingBag``; ``mean``,
``sum`` or ``sqrtn``). Negative ids mean "no id" and contribute nothing. ``layer.part_names`` and
``layer.part_slices`` give each part's position in ``[B, D]``.

>>> layer = FeatureLayer(load_schema("out/"))       # doctest: +SKIP
>>> # x: [B, layer.output_dim]; q: [B, T, 32] and lengths [B]
>>> x = layer(batch)                                 # doctest: +SKIP
>>> q, lengths = layer.sequence(batch, "query_embedding")   # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from shardforge.features.state import Schema, load_schema
from shardforge.protos import schema_pb2
from shardforge.records.spec import Ragged

_DENSE = schema_pb2.DenseColumn


class FeatureLayer(nn.Module):
    """Dense input layer built from a schema (or the path of ``schema.pbtxt`` / its directory)."""

    def __init__(self, schema: Schema | str) -> None:
        super().__init__()
        self.schema = load_schema(schema) if isinstance(schema, str) else schema
        self.parts_spec = [p for p in self.schema.dense]
        self.features = {f.name: f for f in self.schema.features}
        tables: dict[str, tuple[int, int, float]] = {}
        for p in self.parts_spec:
            if p.type == _DENSE.EMBEDDING:
                table = p.shared_group or p.name
                rows = self.features[p.feature].num_buckets
                prev = tables.get(table, (0, p.dim, p.max_norm))
                if prev[1] != p.dim:
                    raise ValueError(f"shared embedding {table!r} has different dims")
                tables[table] = (max(prev[0], rows), p.dim, p.max_norm)
        # follows .to(device) even when the layer has no embedding table (no parameters)
        self.register_buffer("_anchor", torch.empty(0), persistent=False)
        self.tables = nn.ModuleDict()
        for name, (rows, dim, max_norm) in tables.items():
            bag = nn.EmbeddingBag(rows, dim, mode="sum", max_norm=max_norm or None)
            nn.init.trunc_normal_(bag.weight, std=1 / math.sqrt(dim))  # TF's embedding_column init
            self.tables[name] = bag
        self.part_names = [p.name for p in self.parts_spec]
        widths = [int(p.width) for p in self.parts_spec]
        starts = np.concatenate([[0], np.cumsum(widths)]).astype(int).tolist()
        self.part_slices = {n: slice(a, b) for n, a, b in zip(self.part_names, starts, starts[1:])}
        self.output_dim = int(sum(widths))

    def _device(self) -> torch.device:
        return self._anchor.device

    def _bags(
        self, batch: dict, feature: str, weight_feature: str = ""
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """(ids clamped >= 0, per-value weights (0 for negative ids), bag of each value, rows)."""
        ids, splits = _ragged(batch[feature], self._device())
        n = len(splits) - 1
        bag = torch.repeat_interleave(torch.arange(n, device=ids.device), splits.diff())
        w = (ids >= 0).to(torch.float32)
        if weight_feature:
            wv, _ = _ragged(batch[weight_feature], ids.device)
            w = w * wv.to(torch.float32)
        return ids.clamp_min(0), w, bag, n

    def _embedding(self, batch: dict, p: Any) -> torch.Tensor:
        ids, w, bag, n = self._bags(batch, p.feature, p.weight_feature)
        if p.combiner in (schema_pb2.MEAN, schema_pb2.SQRTN):
            sq = p.combiner == schema_pb2.SQRTN
            denom = torch.zeros(n, device=ids.device).index_add_(0, bag, w * w if sq else w)
            denom = denom.sqrt() if sq else denom
            w = w / torch.where(denom > 0, denom, torch.ones_like(denom))[bag]
        offsets = (
            torch.searchsorted(bag, torch.arange(n, device=ids.device))
            if len(bag)
            else torch.zeros(n, dtype=torch.long, device=ids.device)
        )
        table = self.tables[p.shared_group or p.name]
        return table(ids, offsets, per_sample_weights=w)

    def _indicator(self, batch: dict, p: Any) -> torch.Tensor:
        f = self.features[p.feature]
        col = batch[p.feature]
        nb = int(f.num_buckets)
        if not f.varlen and len(f.shape):  # fixed [B, k] ids: k one-hots side by side
            ids = torch.as_tensor(np.asarray(col), device=self._device())
            ids = ids.reshape(len(col), math.prod(f.shape))
            ids = ids + torch.arange(ids.shape[1], device=ids.device) * nb
            col = Ragged(ids.reshape(-1).cpu().numpy(), np.arange(len(col) + 1) * ids.shape[1])
        ids, w, bag, n = self._bags(
            {
                p.feature: col,
                **({p.weight_feature: batch[p.weight_feature]} if p.weight_feature else {}),
            },
            p.feature,
            p.weight_feature,
        )
        out = torch.zeros(n, int(p.width), device=ids.device)
        out.index_put_((bag, ids), w, accumulate=True)
        return out

    def parts(self, batch: dict) -> dict[str, torch.Tensor]:
        """Each dense part by name, ``[B, width]``, in the documented order."""
        out: dict[str, torch.Tensor] = {}
        for p in self.parts_spec:
            if p.type == _DENSE.NUMERIC:
                x = torch.as_tensor(
                    np.asarray(batch[p.feature])
                    if not torch.is_tensor(batch[p.feature])
                    else batch[p.feature],
                    device=self._device(),
                )
                out[p.name] = x.reshape(len(x), int(p.width)).to(torch.float32)
            elif p.type == _DENSE.EMBEDDING:
                out[p.name] = self._embedding(batch, p)
            else:
                out[p.name] = self._indicator(batch, p)
        return out

    def forward(self, batch: dict) -> torch.Tensor:
        """``[B, output_dim]``: the parts concatenated in declaration order."""
        return torch.cat(list(self.parts(batch).values()), dim=1)

    def sequence(self, batch: dict, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded per-position embeddings ``[B, T, D]`` (zeros past each row's length) and the
        lengths ``[B]`` of an embedding part (by part or feature name) over varlen ids."""
        p = next(
            (
                q
                for q in self.parts_spec
                if q.type == _DENSE.EMBEDDING and name in (q.name, q.feature)
            ),
            None,
        )
        if p is None:
            raise KeyError(f"no embedding part named {name!r}; parts: {self.part_names}")
        ids, splits = _ragged(batch[p.feature], self._device())
        n = len(splits) - 1
        lengths = splits.diff()
        table = self.tables[p.shared_group or p.name]
        emb = F.embedding(ids.clamp_min(0), table.weight, max_norm=table.max_norm)
        emb = emb * (ids >= 0).unsqueeze(1)
        if p.weight_feature:
            wv, _ = _ragged(batch[p.weight_feature], ids.device)
            emb = emb * wv.to(emb.dtype).unsqueeze(1)
        t = int(lengths.max()) if n and len(ids) else 0
        bag = torch.repeat_interleave(torch.arange(n, device=ids.device), lengths)
        pos = torch.arange(len(ids), device=ids.device) - splits[:-1][bag]
        padded = torch.zeros(n, t, emb.shape[1], device=ids.device, dtype=emb.dtype)
        padded[bag, pos] = emb
        return padded, lengths


def _ragged(col: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, row_splits)`` tensors of a Ragged, a ``(values, splits)`` pair, or dense ids."""
    if isinstance(col, Ragged):
        values, splits = col.values, col.row_splits
    elif isinstance(col, tuple):
        values, splits = col
    else:
        values = col if torch.is_tensor(col) else np.asarray(col)
        flat = values.reshape(len(values), math.prod(values.shape[1:]))
        splits = np.arange(len(values) + 1, dtype=np.int64) * flat.shape[1]
        values = flat.reshape(-1)
    values = torch.as_tensor(
        values if torch.is_tensor(values) else np.asarray(values), device=device
    )
    splits = torch.as_tensor(
        splits if torch.is_tensor(splits) else np.asarray(splits, np.int64), device=device
    )
    return values, splits.to(torch.long)
