"""Transform state and schema: what a fit learns, saved as ``schema.pbtxt`` (schema.proto, text)."""

from __future__ import annotations

import os
from typing import Any

from google.protobuf import text_format

from shardforge.features.analyzers import _STAT_FIELDS, Boundaries, Stats, Vocab
from shardforge.protos import schema_pb2
from shardforge.records.layout import SCHEMA_FILE, atomic_write
from shardforge.records.manifest import check_readable
from shardforge.records.spec import FixedLen, Spec, VarLen

SCHEMA_VERSION = 1
_DTYPE_NAME = {schema_pb2.INT64: "int64", schema_pb2.FLOAT32: "float32", schema_pb2.BYTES: "bytes"}


def typed_state(cs: schema_pb2.ColumnState) -> Stats | Vocab | Boundaries:
    """The typed learned state one ``ColumnState`` holds (stats, boundaries or a vocabulary)."""
    if cs.has_stats:
        return Stats.from_proto(cs)
    if len(cs.boundaries):
        return Boundaries.from_proto(cs)
    return Vocab.from_proto(cs, "int64" if len(cs.int_vocab) else "bytes")


class TransformState:
    """Learned state of a feature set plus the schema of its outputs.

    ``columns[column name][analyzer name]`` is a typed state (:class:`Stats`, :class:`Vocab`,
    :class:`Boundaries`); the proto keys each as ``"<column name>/<analyzer name>"``.
    ``save(path)`` writes the full schema; ``TransformState.load(path)`` reads it back, and the
    transform of a loaded state is bit-identical to the fresh one (the fresh one is built through
    the same protobuf message).
    """

    def __init__(self, proto: schema_pb2.Schema) -> None:
        self.proto = proto
        self.columns: dict[str, dict[str, Any]] = {}
        for cs in proto.state.columns:
            column, analyzer = cs.column.rsplit("/", 1)
            self.columns.setdefault(column, {})[analyzer] = typed_state(cs)

    def save(self, path: str) -> str:
        """Write ``schema.pbtxt`` (``path`` a directory or a file path); returns the file path."""
        if os.path.isdir(path) or not os.path.splitext(path)[1]:
            os.makedirs(path, exist_ok=True)
            path = os.path.join(path, SCHEMA_FILE)
        return atomic_write(path, text_format.MessageToString(self.proto))

    @classmethod
    def load(cls, path: str) -> TransformState:
        return cls(read_schema_proto(path))

    def stats(self) -> dict[str, dict]:
        """JSON-able statistics per column (count, missing, mean, std, min, max, top values,
        boundaries)."""
        out: dict[str, dict] = {}
        for column, states in self.columns.items():
            d: dict[str, Any] = {}
            for st in states.values():
                if isinstance(st, Stats):
                    d.update({f: getattr(st, f) for f in _STAT_FIELDS})
                elif isinstance(st, Boundaries):
                    d["boundaries"] = list(st.values)
                elif len(st.counts):
                    d["vocab_size"] = len(st)
                    d["distinct"] = st.distinct
                    d["top_values"] = [
                        [v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else v, c]
                        for v, c in zip(st.values[:20], st.counts[:20].tolist())]
            if d:
                out[column] = d
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TransformState) and self.proto == other.proto


def read_schema_proto(path: str) -> schema_pb2.Schema:
    from shardforge.records import fs

    if fs.isdir(path):
        path = fs.join(path, SCHEMA_FILE)
    return text_format.Parse(fs.read_text(path), schema_pb2.Schema())


def spec_from_features(features) -> Spec:
    spec: Spec = {}
    for f in features:
        dtype = _DTYPE_NAME[f.dtype]
        spec[f.name] = VarLen(dtype) if f.varlen else FixedLen(dtype, tuple(f.shape))
    return spec


class Schema:
    """A loaded ``schema.pbtxt``: output parse ``spec``, ``features``, FeatureLayer ``dense``
    parts, ``state``, ``labels`` and raw ``inputs``.

    >>> schema = load_schema("out/")            # doctest: +SKIP
    >>> batch = decode_batch(records, schema.spec)  # doctest: +SKIP
    """

    def __init__(self, proto: schema_pb2.Schema) -> None:
        self.proto = proto
        self.features = list(proto.features)
        self.dense = list(proto.dense)
        self.inputs = list(proto.inputs)
        self.labels = list(proto.labels)
        self.spec = spec_from_features(self.features)
        self.state = TransformState(proto)

    def feature(self, name: str) -> schema_pb2.Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(
            f"schema has no feature {name!r}; features: {[f.name for f in self.features]}"
        )

    def save(self, path: str) -> str:
        return self.state.save(path)


def load_schema(path_or_dir: str) -> Schema:
    """Read ``schema.pbtxt`` (or the one inside a job's output directory)."""
    check_readable(path_or_dir)  # a job output must be complete: records/manifest.py
    return Schema(read_schema_proto(path_or_dir))
