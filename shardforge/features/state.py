"""Transform state and schema: what a fit learns, saved as ``schema.pbtxt`` (schema.proto, text)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from google.protobuf import text_format

from shardforge.protos import schema_pb2
from shardforge.records.manifest import check_readable
from shardforge.records.spec import FixedLen, Spec, VarLen

SCHEMA_FILE = "schema.pbtxt"
SCHEMA_VERSION = 1
_DTYPE_NAME = {schema_pb2.INT64: "int64", schema_pb2.FLOAT32: "float32", schema_pb2.BYTES: "bytes"}
_STAT_FIELDS = ("count", "missing", "mean", "std", "min", "max")


def column_state_to_proto(key: str, st: dict) -> schema_pb2.ColumnState:
    cs = schema_pb2.ColumnState(column=key)
    if "mean" in st:
        cs.has_stats = True
        for f in _STAT_FIELDS:
            setattr(cs, f, st[f])
    if "boundaries" in st:
        cs.boundaries.extend(float(b) for b in st["boundaries"])
    if "quantile_rank_error" in st:
        cs.quantile_rank_error = st["quantile_rank_error"]
    vocab = st.get("vocab")
    if vocab is not None and len(vocab):
        if isinstance(vocab[0], (int, np.integer)):
            cs.int_vocab.extend(int(v) for v in vocab)
        else:
            cs.vocab.extend(bytes(v) for v in vocab)
    if "vocab_counts" in st:
        cs.vocab_counts.extend(int(c) for c in st["vocab_counts"])
        cs.vocab_total_distinct = int(st.get("vocab_total_distinct", 0))
        cs.vocab_approximate = bool(st.get("vocab_approximate", False))
    return cs


def column_state_from_proto(cs: schema_pb2.ColumnState) -> dict:
    """The dict the columns read: every key present, so a saved and a fresh state look alike."""
    st: dict[str, Any] = {}
    if cs.has_stats:
        st.update({f: getattr(cs, f) for f in _STAT_FIELDS})
    st["boundaries"] = list(cs.boundaries)
    st["quantile_rank_error"] = cs.quantile_rank_error
    st["vocab"] = list(cs.int_vocab) if len(cs.int_vocab) else list(cs.vocab)
    st["vocab_counts"] = np.asarray(cs.vocab_counts, dtype=np.int64)
    st["vocab_total_distinct"] = cs.vocab_total_distinct
    st["vocab_approximate"] = cs.vocab_approximate
    return st


class TransformState:
    """Learned state of a feature set plus the schema of its outputs.

    ``columns`` maps a column's state key to its statistics (vocabularies, means, boundaries).
    ``save(path)`` writes the full schema; ``TransformState.load(path)`` reads it back, and the
    transform of a loaded state is bit-identical to the fresh one (the fresh one is built through
    the same protobuf message).
    """

    def __init__(self, proto: schema_pb2.Schema) -> None:
        self.proto = proto
        self.columns = {cs.column: column_state_from_proto(cs) for cs in proto.state.columns}

    def save(self, path: str) -> str:
        """Write ``schema.pbtxt`` (``path`` a directory or a file path); returns the file path."""
        if os.path.isdir(path) or not os.path.splitext(path)[1]:
            os.makedirs(path, exist_ok=True)
            path = os.path.join(path, SCHEMA_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text_format.MessageToString(self.proto))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str) -> TransformState:
        return cls(read_schema_proto(path))

    def stats(self) -> dict[str, dict]:
        """JSON-able statistics per column (count, missing, mean, std, min, max, top values)."""
        out: dict[str, dict] = {}
        for key, st in self.columns.items():
            d: dict[str, Any] = {f: st[f] for f in _STAT_FIELDS if f in st}
            if len(st["vocab_counts"]):
                top = list(zip(st["vocab"][:20], st["vocab_counts"][:20].tolist()))
                d["vocab_size"] = len(st["vocab"])
                d["distinct"] = st["vocab_total_distinct"]
                d["top_values"] = [
                    [v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else v, c]
                    for v, c in top
                ]
            if st["boundaries"]:
                d["boundaries"] = st["boundaries"]
            if d:
                out[key] = d
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TransformState) and self.proto == other.proto


def read_schema_proto(path: str) -> schema_pb2.Schema:
    if os.path.isdir(path):
        path = os.path.join(path, SCHEMA_FILE)
    with open(path) as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


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
