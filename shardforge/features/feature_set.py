"""``FeatureSet``: typed inputs (coerce), one-pass analysis (fit), pure vectorized transform."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shardforge.features.columns import (
    CategoricalColumn,
    Column,
    CrossedColumn,
    Ctx,
    Input,
)
from shardforge.features.state import TransformState, column_state_to_proto, spec_from_features
from shardforge.protos import schema_pb2
from shardforge.records.spec import Batch, FixedLen, Spec, VarLen, batch_size, take_rows

_PROTO_DTYPE = {"int64": schema_pb2.INT64, "float32": schema_pb2.FLOAT32, "bytes": schema_pb2.BYTES}


@dataclass(frozen=True)
class RowError:
    """A row that could not be coerced or transformed: route it to the errors output."""

    row: Any
    feature: str
    value: Any
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}: feature {self.feature!r}: {self.reason} (value {self.value!r})"


class TransformError(ValueError):
    """Raised by ``transform(..., errors="raise")``; ``.errors`` lists every failed row."""

    def __init__(self, errors: list[RowError]) -> None:
        self.errors = errors
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        super().__init__("; ".join(str(e) for e in errors[:3]) + more)


def _walk(col: Column) -> Iterable[Column]:
    yield col
    for child in col.children():
        yield from _walk(child)


class FeatureSet:
    """The declared features of a dataset: inputs, learned state, outputs.

    >>> import shardforge.features as sf
    >>> x = sf.numeric("x", default=0.0, normalize="zscore")
    >>> fs = sf.FeatureSet([x], label=sf.numeric("y"))
    >>> state = fs.fit([{"x": np.array([1.0, 3.0]), "y": np.array([0.0, 1.0])}])
    >>> fs.transform({"x": np.array([2.0]), "y": np.array([1.0])}, state)["x"].tolist()
    [0.0]
    """

    def __init__(self, columns: Sequence[Column], label: Column | Sequence[Column] | None = None):
        self.columns = list(columns)
        labels = [] if label is None else [label] if isinstance(label, Column) else list(label)
        self.labels = labels
        for col in self.columns + labels:
            if not isinstance(col, Column):
                raise ValueError(f"FeatureSet takes feature columns, got {col!r}")
        if not self.columns:
            raise ValueError("FeatureSet needs at least one column")
        self._by_key: dict[str, Column] = {}
        for top in self.columns + labels:
            for col in _walk(top):
                prev = self._by_key.setdefault(col.key, col)
                if prev != col:
                    raise ValueError(
                        f"two different columns are named {col.key!r}: {prev} and {col}"
                    )
        self._inputs: dict[str, Input] = {}
        for col in self._by_key.values():
            for inp in col.inputs():
                self._add_input(inp, col)
        for col in self._by_key.values():
            if isinstance(col, CrossedColumn):
                for k in col.raw_keys():
                    inp = self._inputs.get(k)
                    if inp is None:
                        raise ValueError(
                            f"crossed column {col.name!r} refers to unknown input {k!r}; "
                            "declare it with "
                            f"another column (declared inputs: {sorted(self._inputs)})"
                        )
                    if inp.dtype == "float32" or inp.shape:
                        raise ValueError(
                            f"crossed column {col.name!r}: input {k!r} must be a bytes "
                            "or int64 scalar/multivalued input (bucketize floats first)"
                        )
                col.resolve(self._inputs)
        names: dict[str, Column] = {}
        for col in self.columns + labels:
            for out_name in self._feature_names(col):
                prev = names.setdefault(out_name, col)
                if prev is not col and _source(prev) != _source(col):
                    raise ValueError(
                        f"two columns produce the output feature {out_name!r}: {prev} and {col}"
                    )
        self._label_names = [n for col in labels for n in self._feature_names(col)]

    def _add_input(self, inp: Input, col: Column) -> None:
        prev = self._inputs.setdefault(inp.name, inp)
        if prev != inp:
            raise ValueError(
                f"input {inp.name!r} is declared twice differently: {prev} and {inp} "
                f"(column {col.name!r})"
            )

    @staticmethod
    def _feature_names(col: Column) -> list[str]:
        src = _source(col)
        names = [src.name]
        if hasattr(src, "weights_name"):
            names.append(src.weights_name)
        return names

    # ------------------------------------------------------------------ inputs

    @property
    def input_columns(self) -> list[Input]:
        """The raw inputs (name, dtype, shape, multivalued, default; ``required``)."""
        return list(self._inputs.values())

    def input_spec(self) -> Spec:
        """Parse spec of raw tf.Examples holding the inputs (missing floats decode as NaN)."""
        spec: Spec = {}
        for inp in self._inputs.values():
            if inp.multivalued:
                spec[inp.name] = VarLen(inp.dtype)
            elif inp.default is None:
                spec[inp.name] = FixedLen(inp.dtype, inp.shape)
            else:
                default = np.nan if inp.dtype == "float32" else inp.default
                spec[inp.name] = FixedLen(inp.dtype, inp.shape, default)
        return spec

    @property
    def output_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for col in self.columns + self.labels:
            for n in self._feature_names(col):
                seen.setdefault(n)
        return list(seen)

    @property
    def label_names(self) -> list[str]:
        return list(self._label_names)

    def coerce(
        self, raw: dict[str, Any], row_ids: Sequence | None = None
    ) -> tuple[Batch, list[RowError]]:
        """Raw values (CSV strings, JSON values, ``None``/``""`` for missing) -> typed input batch.

        Rows with a value that does not parse, or a missing required value, are removed from the
        batch and reported as :class:`RowError` (``row`` from ``row_ids``, else the index).
        """
        from shardforge.features.coerce import coerce

        return coerce(self._inputs.values(), raw, row_ids)

    # ------------------------------------------------------------------ analysis

    def analyzer(self) -> FeatureSetAnalyzer:
        """One combined, picklable analyzer for every statistic of the feature set (one pass)."""
        return FeatureSetAnalyzer(self)

    def fit(self, batches: Iterable[Batch]) -> TransformState:
        """Learn the state in one pass over typed input batches (in-process)."""
        an = self.analyzer()
        acc = an.create()
        for batch in batches:
            acc = an.add_batch(acc, batch)
        return an.extract(acc)

    def build_state(self, results: dict[str, dict[str, dict]]) -> TransformState:
        columns = {key: col.finalize(results.get(key, {})) for key, col in self._by_key.items()}
        proto = schema_pb2.Schema(version=1, labels=self._label_names)
        for key, st in columns.items():
            if st:
                proto.state.columns.append(column_state_to_proto(key, st))
        # Outputs are described from the state as it will be reloaded (bit-identical transforms).
        reloaded = TransformState(proto).columns
        for inp in self._inputs.values():
            proto.inputs.append(_input_proto(inp))
        seen: set[str] = set()
        for col in self.columns + self.labels:
            for feat in _source(col).features(reloaded):
                if feat.name not in seen:
                    seen.add(feat.name)
                    feat.is_label = feat.name in self._label_names
                    proto.features.append(feat)
        for col in self.columns:
            proto.dense.extend(col.dense(reloaded))
        return TransformState(proto)

    # ------------------------------------------------------------------ transform

    def transform(
        self,
        batch: Batch,
        state: TransformState,
        errors: str = "raise",
        row_ids: Sequence | None = None,
    ) -> Batch | tuple[Batch, list[RowError]]:
        """Output features of a typed input batch: a pure, vectorized function of (batch, state).

        ``errors="raise"``: a failed row raises :class:`TransformError`; ``errors="collect"``:
        returns ``(batch without the failed rows, list[RowError])``.
        """
        if errors not in ("raise", "collect"):
            raise ValueError(f"errors={errors!r}; expected 'raise' or 'collect'")
        missing = [k for k, c in self._by_key.items() if c.analyzers() and k not in state.columns]
        if missing:
            raise ValueError(
                f"the state has no entry for columns {missing}: fitted with another feature set?"
            )
        n = batch_size(batch)
        ctx = Ctx(batch, state.columns, n)
        out: Batch = {}
        for col in self.columns + self.labels:
            for name, value in col.outputs(ctx).items():
                out.setdefault(name, value)
        if not ctx.failures:
            return (out, []) if errors == "collect" else out
        ids = list(range(n)) if row_ids is None else list(row_ids)
        errs, bad_rows = [], set()
        for feature, rows, values, reason in ctx.failures:
            for r, v in zip(rows.tolist(), values):
                if r not in bad_rows or errors == "raise":
                    errs.append(RowError(ids[r], feature, v, reason))
                bad_rows.add(r)
        if errors == "raise":
            raise TransformError(errs)
        keep = np.setdiff1d(np.arange(n), np.fromiter(bad_rows, dtype=np.int64))
        return take_rows(out, keep), errs

    def output_spec(self, state: TransformState) -> Spec:
        """Parse spec of the transformed records."""
        return spec_from_features(state.proto.features)

    def schema(self, state: TransformState):
        """The :class:`~shardforge.features.state.Schema` of ``state`` (outputs + state)."""
        from shardforge.features.state import Schema

        return Schema(state.proto)

    def __repr__(self) -> str:
        return f"FeatureSet({[c.name for c in self.columns]}, labels={self._label_names})"


def _source(col: Column) -> Column:
    """The column whose ids/values a wrapper (embedding, indicator) outputs."""
    while hasattr(col, "categorical") and not isinstance(col, CategoricalColumn):
        col = col.categorical
    return col


def _input_proto(inp: Input) -> schema_pb2.InputFeature:
    p = schema_pb2.InputFeature(
        name=inp.name,
        dtype=_PROTO_DTYPE[inp.dtype],
        shape=inp.shape,
        multivalued=inp.multivalued,
        required=inp.required,
    )
    if inp.default is not None:
        vals = np.ravel(np.asarray(inp.default, dtype=object)).tolist()
        if inp.dtype == "bytes":
            p.default.bytes_values.extend(vals)
        elif inp.dtype == "int64":
            p.default.int64_values.extend(int(v) for v in vals)
        else:
            p.default.float_values.extend(float(v) for v in vals)
    return p


class FeatureSetAnalyzer:
    """``create / add_batch / merge / extract`` over every analyzer of a feature set.

    The accumulator is a dict ``{column key: {analyzer name: accumulator}}`` of plain Python
    and numpy values; the object and its accumulators pickle, so it wraps as a Beam CombineFn.
    """

    def __init__(self, feature_set: FeatureSet) -> None:
        self.feature_set = feature_set
        self.tasks = [
            (key, name, an)
            for key, col in feature_set._by_key.items()
            for name, an in col.analyzers().items()
        ]

    def create(self) -> dict:
        acc: dict = {}
        for key, name, an in self.tasks:
            acc.setdefault(key, {})[name] = an.create()
        return acc

    def add_batch(self, acc: dict, batch: Batch) -> dict:
        cols = self.feature_set._by_key
        for key, name, an in self.tasks:
            values = cols[key].analyze_values(batch, name)
            acc[key][name] = an.add_batch(acc[key][name], values)
        return acc

    def merge(self, accs: Iterable[dict]) -> dict:
        accs = list(accs)
        out: dict = {}
        for key, name, an in self.tasks:
            out.setdefault(key, {})[name] = an.merge([a[key][name] for a in accs])
        return out

    def extract(self, acc: dict) -> TransformState:
        results: dict[str, dict[str, dict]] = {}
        for key, name, an in self.tasks:
            results.setdefault(key, {})[name] = an.extract(acc[key][name])
        return self.feature_set.build_state(results)


def load_feature_set(path: str, attribute: str = "FEATURES") -> FeatureSet:
    """Import a Python file and return its ``FEATURES`` (a :class:`FeatureSet`)."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"feature file {path!r} does not exist")
    mod_name = "shardforge_features_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    fs = getattr(module, attribute, None)
    if not isinstance(fs, FeatureSet):
        raise ValueError(
            f"{path} must define {attribute} = sf.FeatureSet([...]), found {type(fs).__name__}"
        )
    return fs
