"""Mixtures of sources: what a weighted mixture is (data), and its deterministic schedule.

A :class:`Mixture` is a list of :class:`Source` s (a job output or URL, its split, a weight,
an upsampling cap) handed to the same :class:`~shardforge.training.dataset.ShardDataset` and
packer a single output is read with::

    mix = Mixture([Source("web/", weight=0.7), Source("code/", weight=0.2),
                   Source("books/", weight=0.1, epochs=4)])
    loader = packed_loader(mix, packing_length=4096, num_workers=2, seed=0)

**One mixture epoch.** Source ``i`` of ``n_i`` documents, weight ``w_i`` (normalized) and cap
``epochs_i`` gives ``c_i`` documents to each mixture epoch of ``L = Σ c_i`` documents: ``L`` is
the largest length at which no source is read more than ``epochs_i`` times per mixture epoch
(``L = min_i n_i·epochs_i / w_i``), and ``c_i`` apportions ``L`` by the weights (largest
remainder). Source ``i``'s documents form an endless stream of its own epochs, each shuffled by
the seed; mixture epoch ``e`` takes positions ``[e·c_i, (e+1)·c_i)`` of it, so a down-weighted
source goes on where the last mixture epoch stopped and an upsampled one starts its next pass:
every document is read once per epoch of its source.

**The schedule** (:func:`interleave`): the ``j``-th document of source ``i`` gets the ideal
position ``t = ⌊(2j+1)·L / 2c_i⌋`` and the epoch reads documents in order of ``(t, i)`` (stride
scheduling, a low-discrepancy interleaving). It is a pure function of the counts, so every
process computes any range of it alone (``O(S·log L)`` to find a range's start, then
``O(m·S)`` for ``m`` positions). **Bound:** in *any* window of ``m`` consecutive positions,
source ``i`` holds ``n`` documents with ``|n − m·c_i/L| < 1 + (S + 4)·c_i/L`` (``S`` sources;
``< 2`` for two sources of equal weight), exactly, not in probability; ``c_i/L`` is within
``1/L`` of ``w_i``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from shardforge.records.spec import VarLen

if TYPE_CHECKING:
    from shardforge.features.state import Schema


@dataclass
class Source:
    """One source of a mixture.

    ``path``: a job's output directory or URL (its shards are ``path/split``), or with
    ``split=""`` a split directory, a glob or a tuple of shard paths. ``weight``: its share of
    the mixture's documents (normalized over the sources; ``None`` for every source: shares in
    proportion to the sources' sizes, or to their tokens raised to the mixture's
    ``temperature``). ``epochs``: the most passes over this source one mixture epoch may make
    (its upsampling cap). ``name``: what metrics and errors call it (default: the path's last
    component). ``missing``: variable-length features the recipe reads that this source does
    not have, read as empty (a text-only source in an image–text mixture:
    ``missing=("image",)``); any other feature a source lacks is an error.

    >>> Source("out/code", weight=0.3).name
    'code'
    """

    path: str | tuple[str, ...]
    weight: float | None = None
    split: str = "train"
    epochs: float = 1.0
    name: str = ""
    missing: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.missing = tuple(self.missing)
        if not isinstance(self.path, str):
            self.path = tuple(os.fspath(p) for p in self.path)
        if not self.name:
            last = self.path if isinstance(self.path, str) else self.path[0]
            self.name = posixpath.basename(os.fspath(last).rstrip("/"))
        if self.weight is not None and not (self.weight > 0 and math.isfinite(self.weight)):
            raise ValueError(f"source {self.name!r}: weight must be > 0, got {self.weight!r}")
        if not self.epochs > 0:
            raise ValueError(f"source {self.name!r}: epochs must be > 0, got {self.epochs!r}")

    @property
    def location(self) -> str | tuple[str, ...]:
        """Where its shards are: ``path/split`` (or ``path`` itself with ``split=""``)."""
        if not self.split or not isinstance(self.path, str):
            return self.path
        return self.path.rstrip("/") + "/" + self.split

    @classmethod
    def parse(cls, value: str | Mapping[str, Any] | Source, split: str = "train") -> Source:
        """A source from a config entry: ``"out/web"``, ``"out/web:0.7"`` (path:weight) or a
        mapping of the fields (``{path: out/web, weight: 0.7, epochs: 2}``)."""
        if isinstance(value, Source):
            return value
        if isinstance(value, str):
            path, sep, weight = value.rpartition(":")
            try:
                return cls(path, weight=float(weight), split=split) if sep else cls(value,
                                                                                  split=split)
            except ValueError:  # a colon of a URL ("gs://b/out"), not a weight
                return cls(value, split=split)
        if not isinstance(value, Mapping) or "path" not in value:
            raise ValueError(f"a data source is a path, 'path:weight' or a mapping with a "
                             f"'path', got {value!r}")
        fields = {"path", "weight", "split", "epochs", "name", "missing"}
        unknown = sorted(set(value) - fields)
        if unknown:
            raise ValueError(f"data source {value['path']!r}: unknown keys {unknown}; "
                             f"choose from {sorted(fields)}")
        values = {"split": split, **value}
        for key in ("weight", "epochs"):
            if values.get(key) is not None:
                values[key] = float(values[key])
        return cls(**values)


@dataclass
class Mixture:
    """Sources read as one weighted stream (module docstring). ``temperature`` (α) sets the
    weights to ``tokens_i^α`` instead (α=1: natural proportions, α→0: uniform), with the tokens
    of ``token_feature`` each source's job counted (:func:`source_tokens`). ``reweight``: a
    loader state saved under another mixture is loaded as a re-weighted restart instead of
    refused (:meth:`~shardforge.training.dataset.ShardDataset.load_state_dict`).

    >>> mix = Mixture.parse(["out/web:0.75", "out/code:0.25"])
    >>> [s.name for s in mix.sources], mix.epoch_counts([1000, 1000]).tolist()
    (['web', 'code'], [1000, 333])
    """

    sources: tuple[Source, ...]
    temperature: float | None = None
    token_feature: str = "tokens"
    reweight: bool = False

    def __post_init__(self) -> None:
        self.sources = tuple(self.sources)
        if not self.sources:
            raise ValueError("a mixture needs at least one source")
        names = [s.name for s in self.sources]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"sources must have distinct names, {twice} appear twice: give "
                             f"each a name")
        given = [s.weight is not None for s in self.sources]
        if any(given) and not all(given):
            missing = [s.name for s in self.sources if s.weight is None]
            raise ValueError(f"give every source a weight or none; {missing} have none")
        if self.temperature is not None and any(given):
            raise ValueError("give weights or a temperature, not both")

    @classmethod
    def parse(cls, value: Any, split: str = "train") -> Mixture:
        """A mixture from a config's ``data``: one path, a list of sources (paths,
        ``path:weight`` strings, mappings), or ``{sources: [...], temperature: α,
        token_feature: name, reweight: bool}``."""
        if isinstance(value, Mixture):
            return value
        settings: dict[str, Any] = {}
        if isinstance(value, Mapping) and "sources" in value:
            keys = {"sources", "temperature", "token_feature", "reweight"}
            unknown = sorted(set(value) - keys)
            if unknown:
                raise ValueError(f"data: unknown keys {unknown}; choose from {sorted(keys)}")
            settings = {k: v for k, v in value.items() if k != "sources"}
            if settings.get("temperature") is not None:
                settings["temperature"] = float(settings["temperature"])
            value = value["sources"]
        if isinstance(value, (str, Mapping, Source)):
            value = [value]
        return cls(tuple(Source.parse(v, split) for v in value), **settings)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    def for_split(self, split: str) -> Mixture:
        """The same mixture over another split of each source (e.g. ``"eval"``)."""
        return replace(self, sources=tuple(replace(s, split=split) if s.split else s
                                           for s in self.sources))

    def weights(self, sizes: Sequence[int], tokens: Sequence[int] | None = None) -> np.ndarray:
        """Normalized weights: the given ones, ``tokens^temperature``, or the sizes'
        proportions."""
        if self.sources[0].weight is not None:
            w = np.array([s.weight for s in self.sources], dtype=np.float64)
        elif self.temperature is not None:
            if tokens is None:
                raise ValueError("a temperature needs the sources' token counts")
            w = np.asarray(tokens, dtype=np.float64) ** self.temperature
        else:
            w = np.asarray(sizes, dtype=np.float64)
        if not w.sum() > 0:
            raise ValueError(f"the sources {self.names} are empty")
        return w / w.sum()

    def epoch_counts(self, sizes: Sequence[int], tokens: Sequence[int] | None = None
                     ) -> np.ndarray:
        """Documents of each source in one mixture epoch (module docstring)."""
        sizes = np.asarray(sizes, dtype=np.int64)
        w = self.weights(sizes, tokens)
        empty = [s.name for s, n, wi in zip(self.sources, sizes, w) if n == 0 and wi > 0]
        if empty:
            raise ValueError(f"sources {empty} have no documents but a weight")
        caps = np.array([int(n * s.epochs) for s, n in zip(self.sources, sizes)], np.int64)
        length = int(min(cap / wi for cap, wi in zip(caps, w) if wi > 0))
        counts = apportion(length, w)
        return np.minimum(counts, caps)

    def describe(self, sizes: Sequence[int], tokens: Sequence[int] | None = None) -> dict:
        """Plain data a checkpoint keeps: what decides the sequence of (source, document)."""
        return {"sources": [{"name": s.name, "path": s.location if isinstance(s.location, str)
                             else list(s.location), "epochs": s.epochs, "documents": int(n)}
                            for s, n in zip(self.sources, sizes)],
                "weights": [round(float(w), 12) for w in self.weights(sizes, tokens)],
                "counts": self.epoch_counts(sizes, tokens).tolist()}


def source_tokens(source: Source, feature: str) -> int:
    """The number of ``feature`` values (tokens) in ``source``'s split, as its job counted them
    in ``stats.json``."""
    if not isinstance(source.path, str) or not source.split:
        raise ValueError(f"source {source.name!r}: a temperature needs the job output's "
                         f"stats.json: give the output directory and its split")
    path = source.path.rstrip("/") + "/stats.json"
    try:
        with open(path) as f:
            outputs = json.load(f)["by_split"][source.split]["outputs"]
    except (OSError, KeyError, json.JSONDecodeError) as err:
        raise ValueError(f"source {source.name!r}: a temperature needs the token counts of "
                         f"{path} ({type(err).__name__}: {err}); give weights instead") from None
    for entry in outputs:
        if entry["name"] == feature and ("ids" in entry or "num_values" in entry):
            if "ids" in entry:  # a categorical output: ids counted, plus values without one
                return int(entry["ids"]) + int(entry.get("no_id", 0))
            return int(entry["num_values"])
    raise ValueError(f"source {source.name!r}: {path} counts no values of feature {feature!r}; "
                     f"give weights instead")


def apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """``total`` split in proportion to ``weights`` (largest remainder: each share within one of
    ``total·w``; a positive weight gets at least one when ``total`` allows)."""
    ideal = total * np.asarray(weights, dtype=np.float64)
    counts = np.floor(ideal).astype(np.int64)
    left = total - int(counts.sum())
    order = np.lexsort((np.arange(len(ideal)), -(ideal - counts)))
    counts[order[:left]] += 1
    return counts


def changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What differs between two :meth:`Mixture.describe` s, in words (empty: the same)."""
    out = []
    old = {s["name"]: (s, w) for s, w in zip(saved["sources"], saved["weights"])}
    new = {s["name"]: (s, w) for s, w in zip(current["sources"], current["weights"])}
    out += [f"source {n!r} was removed" for n in old if n not in new]
    out += [f"source {n!r} was added" for n in new if n not in old]
    for name in (n for n in new if n in old):
        (a, wa), (b, wb) = old[name], new[name]
        if not math.isclose(wa, wb, rel_tol=1e-9):
            out.append(f"source {name!r}: weight {wa:.4g} -> {wb:.4g}")
        out += [f"source {name!r}: {key} {a[key]!r} -> {b[key]!r}"
                for key in ("path", "epochs", "documents") if a[key] != b[key]]
    if not out and list(old) != list(new):
        out.append(f"the sources' order changed: {list(old)} -> {list(new)}")
    return out


# --------------------------------------------------------------------------------------------
# The schedule: which source each position of a mixture epoch reads, and its rank there
# --------------------------------------------------------------------------------------------


def _ints(values: np.ndarray, length: int) -> np.ndarray:
    # (2j+1)·L must not overflow int64: exact Python ints past ~3e9 documents an epoch
    return values.astype(object) if 2 * length * length >= 2**62 else values.astype(np.int64)


def _before(counts: Sequence[int], key: int) -> list[int]:
    """Per source, how many of its documents have a schedule key below ``key``."""
    total, n_sources, out = sum(counts), len(counts), []
    for i, c in enumerate(counts):
        t = -(-(key - i) // n_sources)  # key (t, i) < key  <=>  t < ceil((key - i) / S)
        # floor((2j+1)L / 2c) < t  <=>  j < (2ct - L) / 2L
        out.append(min(c, max(0, -((total - 2 * c * t) // (2 * total)))) if c else 0)
    return out


def ranks_before(counts: Sequence[int], position: int) -> list[int]:
    """Per source, its documents among the first ``position`` positions of the schedule."""
    counts = [int(c) for c in counts]
    lo, hi = 0, sum(counts) * len(counts)  # smallest key with `position` keys below it
    while lo < hi:
        mid = (lo + hi) // 2
        if sum(_before(counts, mid)) >= position:
            hi = mid
        else:
            lo = mid + 1
    return _before(counts, lo)


def interleave(counts: Sequence[int], a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """``(source, rank)`` of positions ``a..b-1`` of a mixture epoch with ``counts`` documents
    per source: position ``p`` reads the ``rank[p]``-th document of source ``source[p]`` in
    this epoch.

    >>> source, rank = interleave([2, 4], 0, 6)
    >>> source.tolist(), rank.tolist()
    ([1, 0, 1, 1, 0, 1], [0, 0, 1, 2, 1, 3])
    """
    counts = [int(c) for c in counts]
    length, m = sum(counts), b - a
    start = ranks_before(counts, a)
    keys, sources, ranks = [], [], []
    for i, (c, r) in enumerate(zip(counts, start)):
        j = np.arange(r, min(c, r + m), dtype=np.int64)
        t = np.asarray((_ints(2 * j + 1, length) * length) // (2 * c), dtype=np.int64)
        keys.append(t * len(counts) + i)
        sources.append(np.full(len(j), i, dtype=np.int64))
        ranks.append(j)
    keys_all = np.concatenate(keys)
    order = np.argsort(keys_all, kind="stable")[:m]
    return np.concatenate(sources)[order], np.concatenate(ranks)[order]


# --------------------------------------------------------------------------------------------
# Safety: sources must mean the same thing by the features a recipe reads
# --------------------------------------------------------------------------------------------


def feature_fingerprint(schema: Schema | Mapping[str, Any], feature: str) -> dict:
    """What a feature's values mean, for comparing sources: its type, and for ids (a token or
    categorical feature) the size and a hash of the vocabulary the job learned for it."""
    if isinstance(schema, Mapping):  # a parse spec only: the type is all it says
        return {"type": str(schema[feature])}
    from shardforge.features.analyzers import Vocab

    f = schema.feature(feature)
    out: dict[str, Any] = {"type": str(schema.spec[feature]), "column_type": f.column_type,
                           "num_buckets": int(f.num_buckets)}
    digest = hashlib.sha256()
    found = False
    for key in dict.fromkeys((f.name, f.source)):
        for analyzer, state in sorted(schema.state.columns.get(key, {}).items()):
            if isinstance(state, Vocab) and len(state):
                values = [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes)
                          else int(v) for v in state.values]
                digest.update(json.dumps([key, analyzer, values]).encode())
                found = True
    if found:
        out["vocabulary"] = digest.hexdigest()[:16]
    return out


def check_features(schemas: Mapping[str, Schema | Mapping[str, Any]],
                   features: Mapping[str, Any], missing: Mapping[str, Sequence[str]]) -> None:
    """Every source (name -> its schema or spec) has ``features`` (name -> parse spec entry),
    each meaning what it means in the first source that has it: same type, and for ids the same
    vocabulary (by hash); only a variable-length feature may be declared ``missing`` in a
    source (read as empty). Raises naming the source and the feature."""
    for feature, kind in features.items():
        reference, first = None, None
        for name, schema in schemas.items():
            spec = schema if isinstance(schema, Mapping) else schema.spec
            if feature in missing.get(name, ()):
                if not isinstance(kind, VarLen):
                    raise ValueError(f"source {name!r}: only a variable-length feature can be "
                                     f"missing (read as empty), {feature!r} is {kind}")
                continue
            if feature not in spec:
                raise KeyError(f"source {name!r} has no feature {feature!r} (the mixture reads "
                               f"it; its features: {sorted(spec)})")
            fp = feature_fingerprint(schema, feature)
            if reference is None:
                reference, first = fp, name
                continue
            differ = {k: (reference.get(k), fp.get(k)) for k in reference.keys() | fp.keys()
                      if reference.get(k) != fp.get(k)}
            if differ:
                detail = ", ".join(f"{k} {a!r} in {first!r} but {b!r} in {name!r}"
                                   for k, (a, b) in sorted(differ.items()))
                raise ValueError(f"source {name!r}: feature {feature!r} does not mean what it "
                                 f"means in source {first!r} ({detail}): ids would mean "
                                 f"different things; mix sources made with the same "
                                 f"vocabulary or tokenizer")
