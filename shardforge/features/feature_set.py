"""``FeatureSet``: typed inputs (coerce), one-pass analysis (fit), pure vectorized transform.

The feature set walks its columns' ``inputs()`` into a graph (columns by name, raw inputs by
name), runs every analyzer of the graph in one pass, and evaluates the graph per batch: each
column once, children first, from the filled raw inputs (see :mod:`shardforge.features.column`
for the missing-value rule).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from shardforge.features.analyzers import Analyzer
from shardforge.features.coerce import coerce
from shardforge.features.column import Column, Input, Output, RowError, WithErrors
from shardforge.features.hashing import StrBuf
from shardforge.features.state import TransformState, spec_from_features
from shardforge.protos import schema_pb2
from shardforge.records.spec import Batch, FixedLen, Ragged, Spec, VarLen, batch_size, take_rows

_PROTO_DTYPE = {"int64": schema_pb2.INT64, "float32": schema_pb2.FLOAT32, "bytes": schema_pb2.BYTES}
_KIND = schema_pb2.Feature
_PROTO_KIND = {"numeric": _KIND.NUMERIC, "categorical": _KIND.CATEGORICAL,
               "weights": _KIND.WEIGHTS, "strings": _KIND.KIND_UNSPECIFIED}


class TransformError(ValueError):
    """Raised by ``transform(..., errors="raise")``; ``.errors`` lists every failed row."""

    def __init__(self, errors: list[RowError]) -> None:
        self.errors = errors
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        super().__init__("; ".join(str(e) for e in errors[:3]) + more)


# (feature, rows, values, reason: one for all rows or one per row)
Failure = tuple[str, np.ndarray, Sequence[Any], str | Sequence[str]]


def _objects(value: Any) -> Any:
    """Flat StrBuf values as object arrays of bytes (what the records and custom columns get)."""
    if isinstance(value, StrBuf):
        return value.to_objects()
    if isinstance(value, Ragged) and isinstance(value.values, StrBuf):
        return Ragged(value.values.to_objects(), value.row_splits)
    return value


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
        self._graph: dict[str, Column] = {}  # every column by name, children first
        self._inputs: dict[str, Input] = {}
        for top in self.columns + labels:
            self._add_column(top)
        for col in self._graph.values():
            for ref in col.inputs():
                if isinstance(ref, str) and ref not in self._inputs:
                    fallback = col.undeclared_input(ref)
                    if fallback is not None:
                        self._inputs[ref] = fallback
                        continue
                    raise ValueError(
                        f"column {col.name!r} refers to unknown input {ref!r}; declare it with "
                        f"another column (declared inputs: {sorted(self._inputs)})")
            if self._learns(col) and any(self._learns(c) for c in self._below(col)):
                raise ValueError(
                    f"column {col.name!r} analyzes the output of a column that is itself "
                    "learned; that needs two analyze passes (analyze the raw value instead)")
        self._static = {name: {a: an.extract(an.create()) for a, an in col.analyzers().items()
                               if not an.reads_data}
                        for name, col in self._graph.items()}
        features = [f for c in self.columns + labels for f in c.written()]
        self._features = list({f.name: f for f in features}.values())
        self._label_names = list({f.name: None for c in labels for f in c.written()})

    def _add_column(self, col: Column) -> None:
        prev = self._graph.get(col.name)
        if prev is not None:
            if prev != col:
                raise ValueError(f"two different columns are named {col.name!r}: {prev} and {col}")
            return
        for ref in col.inputs():
            if isinstance(ref, Column):
                self._add_column(ref)
            elif isinstance(ref, Input):
                seen = self._inputs.setdefault(ref.name, ref)
                if seen != ref:
                    raise ValueError(f"input {ref.name!r} is declared twice differently: {seen} "
                                     f"and {ref} (column {col.name!r})")
            elif not isinstance(ref, str):
                raise ValueError(f"column {col.name!r}: inputs() must hold Input, input names "
                                 f"or columns, got {ref!r}")
        self._graph[col.name] = col

    @staticmethod
    def _learns(col: Column) -> bool:
        return any(an.reads_data for an in col.analyzers().values())

    def _below(self, col: Column) -> Iterable[Column]:
        for ref in col.inputs():
            if isinstance(ref, Column):
                yield ref
                yield from self._below(ref)

    def _raw_inputs(self, col: Column) -> set[str]:
        names = {r if isinstance(r, str) else r.name for r in col.inputs()
                 if not isinstance(r, Column)}
        for ref in col.inputs():
            if isinstance(ref, Column):
                names |= self._raw_inputs(ref)
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
        return [f.name for f in self._features]

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
        return coerce(self._inputs.values(), raw, row_ids)

    # ------------------------------------------------------------------ evaluation

    def _evaluate(self, batch: Batch, states: dict[str, dict], wanted: Iterable[Column],
                  failures: list[Failure]) -> dict[str, Any]:
        """Values of the ``wanted`` columns (and everything below them) for one batch, by
        column name, plus the filled raw inputs under ``("input", name)``."""
        memo: dict[Any, Any] = {}
        for col in wanted:
            self._value(col, batch, states, failures, memo)
        return memo

    def _args(self, col: Column, batch: Batch, states: dict[str, dict],
              failures: list[Failure], memo: dict) -> list[Any]:
        """The values of ``col``'s inputs, aligned with ``col.inputs()``."""
        args = []
        for ref in col.inputs():
            if isinstance(ref, Column):
                v = self._value(ref, batch, states, failures, memo)
            else:
                key = ("input", ref if isinstance(ref, str) else ref.name)
                if key not in memo:
                    memo[key] = self._filled(batch, self._inputs[key[1]], failures)
                v = memo[key]
            args.append(v if col.reads_strbuf else _objects(v))
        return args

    def _value(self, col: Column, batch: Batch, states: dict[str, dict],
               failures: list[Failure], memo: dict) -> Any:
        if col.name not in memo:
            out = col.transform(self._args(col, batch, states, failures, memo),
                                states.get(col.name, {}))
            if isinstance(out, WithErrors):
                failures.append((out.feature or col.name, np.asarray(out.rows, np.int64),
                                 out.values, out.reason))
                out = out.output
            memo[col.name] = out
        return memo[col.name]

    @staticmethod
    def _filled(batch: Batch, inp: Input, failures: list[Failure]) -> Any:
        """The input's values with missing floats (NaN) filled by its default."""
        try:
            x = batch[inp.name]
        except KeyError:
            raise KeyError(f"input {inp.name!r} is not in the batch (batch has {sorted(batch)})"
                           ) from None
        if inp.multivalued or isinstance(x, Ragged):
            return x
        x = np.asarray(x)
        if x.shape[1:] != inp.shape:
            raise ValueError(f"input {inp.name!r} has shape {x.shape[1:]} per row, declared "
                             f"{inp.shape}")
        if inp.dtype != "float32":
            return x
        nan = np.isnan(x)
        if not nan.any():
            return x
        if inp.default is None:
            rows = np.flatnonzero(nan.reshape(len(x), -1).any(axis=1))
            failures.append((inp.name, rows, [None] * len(rows), "missing value and no default"))
            fill = np.zeros((), x.dtype)
        else:
            fill = np.broadcast_to(np.asarray(inp.default, x.dtype), x.shape)
        return np.where(nan, fill, x)

    def _present_rows(self, batch: Batch, col: Column) -> np.ndarray | None:
        """Rows where every raw float input of ``col`` is present (None: all rows)."""
        missing = None
        for name in self._raw_inputs(col):
            inp, x = self._inputs[name], batch[name]
            if inp.dtype == "float32" and not inp.multivalued:
                nan = np.isnan(np.asarray(x)).reshape(len(x), -1).any(axis=1)
                missing = nan if missing is None else missing | nan
        return None if missing is None or not missing.any() else np.flatnonzero(~missing)

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

    def _analyze_values(self, batch: Batch, col: Column) -> dict[str, Any]:
        """What each analyzer of ``col`` sees of one typed input batch: its inputs evaluated
        (filled, or present rows only), rows that fail to transform left out."""
        present = self._present_rows(batch, col) if col.present_only else None
        if present is not None:
            batch = take_rows(batch, present)
        failures: list[Failure] = []
        args = self._args(col, batch, self._static, failures, {})
        if failures:  # analyze only the rows that transform
            bad = np.unique(np.concatenate([f[1] for f in failures]))
            batch = take_rows(batch, np.setdiff1d(np.arange(batch_size(batch)), bad))
            args = self._args(col, batch, self._static, [], {})
        return col.analyze(args)

    def build_state(self, results: dict[str, dict[str, Any]]) -> TransformState:
        """The state (and schema) from each column's analyzer results (typed states)."""
        proto = schema_pb2.Schema(version=1, labels=self._label_names)
        for name, col in self._graph.items():
            for an_name in col.analyzers():
                typed = results.get(name, {}).get(an_name, self._static[name].get(an_name))
                cs = proto.state.columns.add(column=f"{name}/{an_name}")
                typed.to_proto(cs)
        # Outputs are described from the state as it will be reloaded (bit-identical transforms).
        reloaded = TransformState(proto).columns
        descs = self._describe(reloaded)
        for inp in self._inputs.values():
            proto.inputs.append(_input_proto(inp))
        for col in self._features:
            proto.features.append(self._feature_proto(col, descs))
        for col in self.columns:
            part = col.dense_part(descs)
            if part is not None:
                proto.dense.append(part)
        return TransformState(proto)

    def _describe(self, states: dict[str, dict]) -> dict[str, Output]:
        descs: dict[str, Output] = {}
        for name, col in self._graph.items():  # children first
            inputs = [descs[r.name] if isinstance(r, Column) else Output.of_input(
                self._inputs[r if isinstance(r, str) else r.name]) for r in col.inputs()]
            descs[name] = col.output(states.get(name, {}), inputs)
        return descs

    def _feature_proto(self, col: Column, descs: dict[str, Output]) -> schema_pb2.Feature:
        d = descs[col.name]
        weights = next((w.name for w in self._features if descs[w.name].kind == "weights"
                        and descs[w.name].weights_for == col.name), "")
        return schema_pb2.Feature(
            name=col.name, dtype=_PROTO_DTYPE[d.dtype], shape=d.shape, varlen=d.varlen,
            kind=_PROTO_KIND[d.kind], num_buckets=d.num_buckets, column_type=col.column_type,
            source=col.schema_source(), is_label=col.name in self._label_names, sequence=d.sequence,
            max_length=d.max_length, weight_feature=weights)

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
        missing = [n for n, c in self._graph.items() if self._learns(c) and n not in state.columns]
        if missing:
            raise ValueError(
                f"the state has no entry for columns {missing}: fitted with another feature set?")
        n = batch_size(batch)
        failures: list[Failure] = []
        memo = self._evaluate(batch, state.columns, self._features, failures)
        out: Batch = {c.name: _objects(memo[c.name]) for c in self._features}
        if not failures:
            return (out, []) if errors == "collect" else out
        ids = list(range(n)) if row_ids is None else list(row_ids)
        errs, bad_rows = [], set()
        for feature, rows, values, reason in failures:
            reasons = [reason] * len(rows) if isinstance(reason, str) else reason
            for r, v, why in zip(rows.tolist(), values, reasons):
                if r not in bad_rows or errors == "raise":
                    errs.append(RowError(ids[r], feature, v, why))
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
    """An :class:`~shardforge.features.analyzers.Analyzer` (``dict`` accumulator,
    :class:`TransformState` result) over every analyzer of a feature set.

    The accumulator is a dict ``{column name: {analyzer name: accumulator}}`` of plain Python
    and numpy values; the object and its accumulators pickle, so it wraps as a Beam CombineFn.
    """

    reads_data = True

    def __init__(self, feature_set: FeatureSet) -> None:
        self.feature_set = feature_set
        self.tasks: list[tuple[str, str, Analyzer]] = [
            (name, an_name, an)
            for name, col in feature_set._graph.items()
            for an_name, an in col.analyzers().items()
            if an.reads_data
        ]

    def create(self) -> dict:
        acc: dict = {}
        for name, an_name, an in self.tasks:
            acc.setdefault(name, {})[an_name] = an.create()
        return acc

    def add_batch(self, acc: dict, batch: Batch) -> dict:
        graph = self.feature_set._graph
        seen: dict[str, dict[str, Any]] = {}
        for name, an_name, an in self.tasks:
            if name not in seen:
                seen[name] = self.feature_set._analyze_values(batch, graph[name])
            acc[name][an_name] = an.add_batch(acc[name][an_name], seen[name][an_name])
        return acc

    def merge(self, accs: Iterable[dict]) -> dict:
        accs = list(accs)
        out: dict = {}
        for name, an_name, an in self.tasks:
            out.setdefault(name, {})[an_name] = an.merge([a[name][an_name] for a in accs])
        return out

    def extract(self, acc: dict) -> TransformState:
        results: dict[str, dict[str, Any]] = {}
        for name, an_name, an in self.tasks:
            results.setdefault(name, {})[an_name] = an.extract(acc[name][an_name])
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
