"""tf.Example / tf.SequenceExample codec and the batch decoder for parse specs.

``decode_batch`` walks the protobuf wire format of a whole batch in compiled code (numba) and
writes straight into columnar numpy arrays; ``decode_batch_reference`` does the same job with the
generated protobuf classes and is the oracle the fast one is tested against. Both follow
``tf.io.parse_example``: a Feature with no list set counts as missing, a FixedLen feature must
hold exactly ``prod(shape)`` values, a missing FixedLen feature takes its default (an error
without one), and a missing VarLen feature is an empty row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
from google.protobuf.message import DecodeError

from shardforge.protos import example_pb2, feature_pb2
from shardforge.records import _kernels as K
from shardforge.records.errors import ExampleDecodeError
from shardforge.records.framing import RecordBlock
from shardforge.records.spec import Batch, FixedLen, Ragged, Spec, VarLen, batch_size

Value = Union[int, float, bytes, str, Sequence, np.ndarray, None]  # noqa: UP007

_KIND = {"bytes": K.KIND_BYTES, "float32": K.KIND_FLOAT, "int64": K.KIND_INT64}
_KIND_NAME = {K.KIND_NONE: "no values", K.KIND_BYTES: "bytes", K.KIND_FLOAT: "float32",
              K.KIND_INT64: "int64"}
_ONEOF = {"bytes_list": K.KIND_BYTES, "float_list": K.KIND_FLOAT, "int64_list": K.KIND_INT64}
_WIRE_ERRORS = {
    K.BAD_VARINT: "a varint runs past its message or is too long",
    K.BAD_LENGTH: "a field runs past its message",
    K.BAD_WIRETYPE: "an invalid tag (field 0 or wire type 6/7)",
    K.BAD_PACKED: "packed floats are not a multiple of 4 bytes",
    K.BAD_UTF8: "a feature name that is not valid UTF-8",
}


# --- encoding ---------------------------------------------------------------------------------


def _to_bytes(v: Any) -> bytes:
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, (bytes, bytearray, memoryview, np.bytes_)):
        return bytes(v)
    raise TypeError(f"expected bytes or str, got {type(v).__name__}")


def _fill_feature(feature: feature_pb2.Feature, name: str, value: Value) -> None:
    try:
        _fill_values(feature, name, value)
    except (TypeError, ValueError, OverflowError) as err:
        if f"{name!r}" in str(err):
            raise
        raise TypeError(f"feature {name!r}: cannot encode {value!r}: {err}") from None


def _fill_values(feature: feature_pb2.Feature, name: str, value: Value) -> None:
    if isinstance(value, (str, bytes, bytearray, np.bytes_, np.str_)):
        feature.bytes_list.value.append(_to_bytes(value))
        return
    if isinstance(value, (bool, int, np.integer, np.bool_)):
        feature.int64_list.value.append(int(value))
        return
    if isinstance(value, (float, np.floating)):
        feature.float_list.value.append(float(value))
        return
    arr = value if isinstance(value, np.ndarray) else None
    if arr is None:
        items = list(value)
        if not items:
            return  # no values: a Feature with no list, which every reader treats as missing
        if all(isinstance(v, (bytes, str, bytearray, np.bytes_, np.str_)) for v in items):
            feature.bytes_list.value.extend(_to_bytes(v) for v in items)
            return
        try:
            arr = np.asarray(items)
        except ValueError as err:
            raise TypeError(f"feature {name!r}: cannot encode {value!r}: {err}") from None
    kind = arr.dtype.kind
    if kind in "biu":
        feature.int64_list.value.extend(arr.astype(np.int64).ravel().tolist())
    elif kind == "f":
        feature.float_list.value.extend(arr.astype(np.float32).ravel().tolist())
    elif kind in "SUO":
        if arr.size:
            feature.bytes_list.value.extend(_to_bytes(v) for v in arr.ravel())
    else:
        raise TypeError(f"feature {name!r}: cannot encode values of dtype {arr.dtype}")


def _features(values: Mapping[str, Value], out: feature_pb2.Features) -> None:
    for name, value in values.items():
        if value is not None:
            _fill_feature(out.feature[name], name, value)


def encode_example(features: Mapping[str, Value]) -> bytes:
    """Serialize ``{name: value}`` as a tf.Example.

    ints/bools -> int64_list, floats -> float_list, bytes/str (UTF-8) -> bytes_list; lists and
    numpy arrays (flattened) by their element type; ``None`` leaves the feature out and an empty
    list gives a Feature with no values (both read as missing).

    >>> decode_example(encode_example({"id": 7, "tokens": [1, 2, 3], "text": "hi"}))["tokens"]
    array([1, 2, 3])
    """
    ex = example_pb2.Example()
    _features(features, ex.features)
    # deterministic: features sorted by name, the same bytes in every process
    return ex.SerializeToString(deterministic=True)


def encode_sequence_example(
    context: Mapping[str, Value], feature_lists: Mapping[str, Sequence[Value]]
) -> bytes:
    """Serialize a tf.SequenceExample: ``context`` like :func:`encode_example`, each
    ``feature_lists[name]`` a sequence of per-step values."""
    seq = example_pb2.SequenceExample()
    _features(context, seq.context)
    for name, steps in feature_lists.items():
        fl = seq.feature_lists.feature_list[name]
        for step in steps:
            _fill_feature(fl.feature.add(), name, step)
    return seq.SerializeToString(deterministic=True)


# --- batch encoding ---------------------------------------------------------------------------

_INT64_MAX = np.iinfo(np.int64).max
_FLOAT_QUIET_BIT = np.uint64(0x400000)


def _map_order(name: str) -> tuple[int, ...]:
    """Where protobuf (upb) puts a map key in its deterministic serialization: by UTF-8 bytes,
    except that a key comes after the longer keys it is a prefix of."""
    return (*name.encode(), 256)


def _strings(values: np.ndarray, allow_none: bool) -> tuple[list[bytes], np.ndarray | None] | None:
    """The bytes of a string column and, where ``allow_none``, which entries are not None; None
    when some value is not bytes/str (the per-row encoder then says what is wrong)."""
    kind = values.dtype.kind
    items = values.tolist()
    if kind == "S":
        return items, None
    if kind == "U":
        return [v.encode() for v in items], None
    types = set(map(type, items))
    if types <= {bytes}:
        return items, None
    if not types <= ({bytes, str, type(None)} if allow_none else {bytes, str}):
        return None
    present = None
    if type(None) in types:
        present = np.array([v is not None for v in items], dtype=np.uint8)
        items = [b"" if v is None else v for v in items]
    return [v.encode() if type(v) is str else v for v in items], present


def _column(col: np.ndarray | Ragged, n: int):
    """``(kind, row_splits, present, numbers | list of bytes)`` of one batch column, laid out
    for the compiled writer: the values each row gets from ``encode_example(col[i])``. None for
    anything but plain numbers and strings."""
    scalar = False
    if isinstance(col, Ragged):
        values, splits = col.values, col.row_splits
        if not isinstance(values, np.ndarray) or values.ndim == 0:
            return None
        if values.ndim > 1:  # a row's values are flattened
            inner = int(np.prod(values.shape[1:], dtype=np.int64))
            values, splits = values.reshape(-1), splits * inner
    elif isinstance(col, np.ndarray) and col.ndim >= 1:
        scalar = col.ndim == 1
        values = col.reshape(-1)
        splits = np.arange(n + 1, dtype=np.int64) * (values.size // n)
    else:
        return None
    kind = values.dtype.kind
    present = None
    if kind in "biu":
        if scalar and kind == "u" and values.size and values.max() > _INT64_MAX:
            return None  # out of int64 range: an error of the per-row encoder
        return K.COL_INT64, splits, None, values.astype(np.int64).view(np.uint64)
    if kind == "f":
        with np.errstate(over="ignore"):
            f32 = values.astype(np.float32)
        bits = f32.view(np.uint32).astype(np.uint64)
        bits[np.isnan(f32)] |= _FLOAT_QUIET_BIT  # float32 -> Python float quiets a signaling NaN
        return K.COL_FLOAT, splits, None, bits
    if kind in "SUO":
        got = _strings(values, allow_none=scalar)
        if got is None:
            return None
        items, present = got
        return K.COL_BYTES, splits, present, items
    return None


def encode_batch(batch: Batch) -> list[bytes]:
    """Each row of a columnar batch as a serialized tf.Example, the same bytes as
    ``encode_example({name: batch[name][i] for name in batch})`` gives row by row.

    Plain columns (numbers, strings; dense ``[n, *shape]`` or :class:`Ragged`) are written by
    compiled code in two passes over the batch, sizes then bytes, into one buffer; a batch with
    any other column falls back to :func:`encode_example` per row.

    >>> batch = {"id": np.array([7, 8]), "tok": Ragged.from_rows([[1], []])}
    >>> decode_example(encode_batch(batch)[0])
    {'id': array([7]), 'tok': array([1])}
    """
    n = batch_size(batch)
    if n == 0:
        return []
    names = sorted(batch, key=_map_order)
    cols = [_column(batch[name], n) for name in names]
    if any(c is None for c in cols):
        return [encode_example({name: batch[name][i] for name in names}) for i in range(n)]
    ncol = len(names)
    kinds = np.array([c[0] for c in cols], dtype=np.int64)
    splits = np.empty((ncol, n + 1), dtype=np.int64)
    present = np.ones((ncol, n), dtype=np.uint8)
    nums, strings = [], []
    num_base = str_base = 0
    for j, (kind, col_splits, col_present, values) in enumerate(cols):
        if kind == K.COL_BYTES:
            splits[j] = col_splits + str_base
            strings.extend(values)
            str_base += len(values)
        else:
            splits[j] = col_splits + num_base
            nums.append(values)
            num_base += len(values)
        if col_present is not None:
            present[j] = col_present
    numbers = np.concatenate(nums) if nums else np.zeros(0, dtype=np.uint64)
    str_off = np.zeros(len(strings) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, strings), dtype=np.int64, count=len(strings)),
              out=str_off[1:])
    str_buf = np.frombuffer(b"".join(strings) or b"\0", dtype=np.uint8)
    encoded = [name.encode() for name in names]
    keys = np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8)
    key_off = np.zeros(ncol + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=key_off[1:])

    payload = np.zeros((ncol, n), dtype=np.int64)
    body = np.zeros(n, dtype=np.int64)
    rec_off = np.zeros(n + 1, dtype=np.int64)
    K.example_sizes(kinds, splits, present, numbers, str_off, np.diff(key_off), payload, body,
                    rec_off[1:])
    np.cumsum(rec_off, out=rec_off)
    out = np.empty(int(rec_off[-1]), dtype=np.uint8)
    K.example_write(kinds, splits, present, numbers, str_buf, str_off, keys, key_off, payload,
                    body, rec_off, out)
    data = out.tobytes()
    bounds = rec_off.tolist()
    return [data[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


# --- single-record decoding -----------------------------------------------------------------


def _values(feature: feature_pb2.Feature) -> np.ndarray:
    which = feature.WhichOneof("kind")
    if which == "int64_list":
        return np.array(feature.int64_list.value, dtype=np.int64)
    if which == "float_list":
        return np.array(feature.float_list.value, dtype=np.float32)
    if which == "bytes_list":
        out = np.empty(len(feature.bytes_list.value), dtype=object)
        out[:] = list(feature.bytes_list.value)
        return out
    return np.zeros(0, dtype=np.float32)


def _parse(message_cls, data: bytes, index: int = 0):
    try:
        return message_cls.FromString(data)
    except DecodeError as err:
        raise ExampleDecodeError(
            None, index, f"a serialized tf.{message_cls.__name__}", f"malformed protobuf ({err})"
        ) from None


def decode_example(data: bytes) -> dict[str, np.ndarray]:
    """A serialized tf.Example to ``{name: 1-D array}`` (int64, float32, or object array of bytes;
    a Feature with no values gives an empty float32 array)."""
    ex = _parse(example_pb2.Example, data)
    return {name: _values(f) for name, f in ex.features.feature.items()}


def decode_sequence_example(
    data: bytes,
) -> tuple[dict[str, np.ndarray], dict[str, list[np.ndarray]]]:
    """A serialized tf.SequenceExample to ``(context, {name: [per-step arrays]})``."""
    seq = _parse(example_pb2.SequenceExample, data)
    context = {name: _values(f) for name, f in seq.context.feature.items()}
    lists = {
        name: [_values(f) for f in fl.feature]
        for name, fl in seq.feature_lists.feature_list.items()
    }
    return context, lists


# --- batch decoding ---------------------------------------------------------------------------


def _default(spec: FixedLen, name: str) -> np.ndarray:
    d = spec.default
    if spec.dtype == "bytes":
        d = np.asarray([_to_bytes(v) for v in np.ravel(np.asarray(d, dtype=object))], dtype=object)
    else:
        d = np.asarray(d, dtype=spec.np_dtype)
    try:
        return d.reshape(spec.shape) if d.size == spec.size else np.broadcast_to(d, spec.shape)
    except ValueError:
        raise ValueError(
            f"feature {name!r}: default {spec.default!r} does not fit shape {spec.shape}"
        ) from None


@dataclass
class _SpecArrays:
    """A spec as the kernels take it: per feature the kind wanted, the values a record holds
    (-1: VarLen), whether a default fills a missing one, and its name bytes."""

    want: np.ndarray
    size: np.ndarray
    has_default: np.ndarray
    names: np.ndarray
    name_off: np.ndarray

    @classmethod
    def of(cls, spec: Spec) -> _SpecArrays:
        specs = list(spec.values())
        encoded = [name.encode() for name in spec]
        name_off = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=name_off[1:])
        return cls(
            want=np.array([_KIND[s.dtype] for s in specs], dtype=np.int64),
            size=np.array([-1 if isinstance(s, VarLen) else s.size for s in specs],
                          dtype=np.int64),
            has_default=np.array([isinstance(s, FixedLen) and s.default is not None
                                  for s in specs], dtype=np.bool_),
            names=np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8),
            name_off=name_off,
        )


@dataclass
class _Layout:
    """Where the values of a batch go (see ``K.layout``): feature ``f``'s are
    ``pool[base[f]:base[f] + total[f]]`` of the pool of its dtype, record ``r``'s from
    ``dst[r, f]`` on (-1: none); ``splits[f]`` are a VarLen feature's row splits and ``missing[f]``
    the FixedLen rows that take the default."""

    dst: np.ndarray
    base: np.ndarray
    total: np.ndarray
    pool_size: np.ndarray  # by kind (K.KIND_*)
    splits: list[np.ndarray | None]
    missing: np.ndarray


def _layout(spec: Spec, arrays: _SpecArrays, kind: np.ndarray, count: np.ndarray) -> _Layout:
    """Check every record's kinds and counts against the spec (raising ExampleDecodeError) and
    lay out the output columns."""
    n, nfeat = kind.shape
    size = arrays.size
    var_of = np.cumsum(size < 0) - 1  # row of splits, for the VarLen features
    dst = np.empty((n, nfeat), dtype=np.int64)
    splits = np.zeros((int(var_of[-1]) + 1 if nfeat else 0, n + 1), dtype=np.int64)
    missing = np.zeros((nfeat, n), dtype=np.bool_)
    base = np.zeros(nfeat, dtype=np.int64)
    total = np.zeros(nfeat, dtype=np.int64)
    pool_size = np.zeros(4, dtype=np.int64)
    problem, f, r, detail = K.layout(kind, count, arrays.want, size, arrays.has_default, var_of,
                                     dst, splits, missing, base, total, pool_size)
    if problem != K.OK:
        name, s = list(spec.items())[f]
        if problem == K.WRONG_KIND:
            raise ExampleDecodeError(name, r, s.dtype, _KIND_NAME[detail])
        expected = f"{s.size} {s.dtype} value{'s' if s.size != 1 else ''} (shape {s.shape})"
        if problem == K.WRONG_COUNT:
            raise ExampleDecodeError(name, r, expected, f"{detail} values")
        raise ExampleDecodeError(name, r, expected, "a missing feature (the spec has no default)")
    return _Layout(dst, base, total, pool_size,
                   [splits[v] if sz < 0 else None for v, sz in zip(var_of, size)], missing)


def _build(spec: Spec, lay: _Layout, flats: list[np.ndarray], n: int) -> Batch:
    out: Batch = {}
    for f, ((name, s), flat) in enumerate(zip(spec.items(), flats)):
        if isinstance(s, VarLen):
            out[name] = Ragged(flat, lay.splits[f])
            continue
        arr = flat.reshape((n, *s.shape))
        missing = lay.missing[f]
        if missing.any():
            arr[missing] = _default(s, name)
        out[name] = arr
    return out


def _bytes_values(buf: np.ndarray, offs: np.ndarray, lens: np.ndarray) -> np.ndarray:
    total = len(offs)
    if total == 0:
        return np.empty(0, dtype=object)
    width = int(lens.max())
    nonempty = lens > 0
    trailing_zero = bool(np.any(buf[(offs + lens - 1)[nonempty]] == 0))
    if width == 0:
        out = np.empty(total, dtype=object)
        out[:] = [b""] * total
        return out
    if not trailing_zero and total * width <= 4 * int(lens.sum()) + (1 << 20):
        # numpy's fixed-width bytes drop trailing NULs, hence the check above
        mat = np.zeros((total, width), dtype=np.uint8)
        K.gather_padded(buf, offs, lens, width, mat)
        return mat.view(f"S{width}").ravel().astype(object)
    mv = memoryview(buf)
    out = np.empty(total, dtype=object)
    out[:] = [mv[o : o + n].tobytes() for o, n in zip(offs.tolist(), lens.tolist())]
    return out


def decode_batch(serialized: Sequence[bytes] | RecordBlock, spec: Spec) -> Batch:
    """Decode serialized tf.Examples into a columnar batch (like ``tf.io.parse_example``).

    FixedLen features become arrays ``[n, *shape]``; VarLen features become :class:`Ragged`.
    Pass a :class:`RecordBlock` (from ``read_blocks`` or ``RecordFile.read_block``) to skip
    building per-record bytes objects.

    >>> spec = {"id": FixedLen("int64"), "tokens": VarLen("int64")}
    >>> decode_batch([encode_example({"id": 1, "tokens": [5, 6]})], spec)["tokens"]
    Ragged([[5, 6]])
    """
    block = serialized if isinstance(serialized, RecordBlock) else RecordBlock.from_records(
        list(serialized)
    )
    buf, offsets, lengths = block.checked()  # compiled code follows only spans inside buf
    n, nfeat = len(block), len(spec)
    starts = np.empty((n, nfeat), dtype=np.int64)
    ends = np.empty((n, nfeat), dtype=np.int64)
    kind = np.zeros((n, nfeat), dtype=np.int64)
    count = np.empty((n, nfeat), dtype=np.int64)
    arrays = _SpecArrays.of(spec)
    # numeric scalars are usually decoded by pass 1 already (see K.locate)
    scalar_kind = np.where((arrays.size == 1) & (arrays.want != K.KIND_BYTES), arrays.want, 0)
    scalars = np.empty((n, nfeat), dtype=np.uint64)
    r, err, pos = K.locate(buf, offsets, lengths, arrays.names, arrays.name_off, starts, ends,
                           kind, count, scalar_kind, scalars)
    if r >= 0:
        if err == K.UNUSUAL:  # legal but exotic encodings: let protobuf apply its merge rules
            return decode_batch_reference(block, spec)
        raise ExampleDecodeError(
            None, int(r), "a serialized tf.Example",
            f"malformed protobuf: {_WIRE_ERRORS[err]} at byte {int(pos - offsets[r])}",
        )

    lay = _layout(spec, arrays, kind, count)
    # pass 2 fills every feature of a record while the record is in cache, into one pool per
    # dtype: each column is a slice of its pool (missing FixedLen bytes rows stay b"")
    ints = np.empty(lay.pool_size[K.KIND_INT64], dtype=np.int64)
    floats = np.empty(lay.pool_size[K.KIND_FLOAT], dtype=np.float32)
    str_off = np.zeros(lay.pool_size[K.KIND_BYTES], dtype=np.int64)
    str_len = np.zeros(lay.pool_size[K.KIND_BYTES], dtype=np.int64)
    bad = K.fill(buf, starts, ends, kind, scalars, lay.dst, ints.view(np.uint64),
                 floats.view(np.uint32), str_off, str_len)
    if bad >= 0:
        raise ExampleDecodeError(
            None, int(bad), "a serialized tf.Example",
            "malformed protobuf: a varint is longer than 10 bytes",
        )
    flats = []
    for s, a, b in zip(spec.values(), lay.base.tolist(), (lay.base + lay.total).tolist()):
        if s.dtype == "int64":
            flats.append(ints[a:b])
        elif s.dtype == "float32":
            flats.append(floats[a:b])
        else:
            flats.append(_bytes_values(buf, str_off[a:b], str_len[a:b]))
    return _build(spec, lay, flats, n)


def malformed_examples(serialized: Sequence[bytes] | RecordBlock) -> list[tuple[int, str]]:
    """``(index, reason)`` of each record that is not a serialized tf.Example (what protobuf
    refuses to parse), found by the compiled walker.

    >>> malformed_examples([encode_example({"a": 1}), b"not an Example"])
    [(1, 'malformed protobuf: an invalid tag (field 0 or wire type 6/7) at byte 0')]
    """
    block = serialized if isinstance(serialized, RecordBlock) else RecordBlock.from_records(
        list(serialized)
    )
    bad = []
    start = 0
    while start < len(block):
        try:
            decode_batch(block[start:], {})  # no features asked for: every one is checked
            break
        except ExampleDecodeError as err:
            bad.append((start + err.index, err.actual))
            start += err.index + 1
    return bad


def decode_batch_reference(serialized: Sequence[bytes], spec: Spec) -> Batch:
    """:func:`decode_batch` built on the generated protobuf classes (slow; the test oracle)."""
    records = list(serialized)
    names = list(spec)
    kind = np.zeros((len(records), len(names)), dtype=np.int64)
    count = np.zeros_like(kind)
    found: list[list] = [[None] * len(records) for _ in names]
    for r, data in enumerate(records):
        features = _parse(example_pb2.Example, data, r).features.feature
        for f, name in enumerate(names):
            if name not in features:
                continue
            which = features[name].WhichOneof("kind")
            if which is None:
                continue
            vals = list(getattr(features[name], which).value)
            kind[r, f], count[r, f], found[f][r] = _ONEOF[which], len(vals), vals

    lay = _layout(spec, _SpecArrays.of(spec), kind, count)
    flats = []
    for f, s in enumerate(spec.values()):
        flat = np.zeros(lay.total[f], dtype=object if s.dtype == "bytes" else np.dtype(s.dtype))
        for r in np.flatnonzero(lay.dst[:, f] >= 0).tolist():
            p = int(lay.dst[r, f] - lay.base[f])
            vals = found[f][r]
            flat[p : p + len(vals)] = vals
        if s.dtype == "bytes":
            flat[flat == 0] = b""
        flats.append(flat)
    return _build(spec, lay, flats, len(records))


# --- spec inference ---------------------------------------------------------------------------


@dataclass
class FeatureSummary:
    """What ``infer_spec`` saw of one feature: its type and value counts over the records."""

    dtype: str
    present: int
    min_count: int
    max_count: int


def summarize_features(serialized: Sequence[bytes]) -> tuple[int, dict[str, FeatureSummary]]:
    """``(n_records, {name: FeatureSummary})`` in first-seen order."""
    out: dict[str, FeatureSummary] = {}
    n = 0
    for r, data in enumerate(serialized):
        n += 1
        for name, feature in _parse(example_pb2.Example, data, r).features.feature.items():
            which = feature.WhichOneof("kind")
            if which is None:
                continue
            dtype = _KIND_NAME[_ONEOF[which]]
            c = len(getattr(feature, which).value)
            s = out.get(name)
            if s is None:
                out[name] = FeatureSummary(dtype, 1, c, c)
                continue
            if s.dtype != dtype:
                raise ExampleDecodeError(name, r, s.dtype, dtype)
            s.present += 1
            s.min_count, s.max_count = min(s.min_count, c), max(s.max_count, c)
    return n, out


def infer_spec(serialized: Sequence[bytes]) -> Spec:
    """A parse spec that decodes every one of ``serialized``: FixedLen (scalar for one value)
    where a feature is always present with the same count, VarLen otherwise.

    >>> infer_spec([encode_example({"id": 1, "tokens": [1, 2]}),
    ...             encode_example({"id": 2, "tokens": [3]})])
    {'id': FixedLen(dtype='int64', shape=(), default=None), 'tokens': VarLen(dtype='int64')}
    """
    n, summary = summarize_features(serialized)
    spec: Spec = {}
    for name, s in sorted(summary.items()):
        if s.present == n and s.min_count == s.max_count:
            spec[name] = FixedLen(s.dtype, () if s.min_count == 1 else (s.min_count,))
        else:
            spec[name] = VarLen(s.dtype)
    return spec
