"""Property tests: the fast decoder agrees with the protobuf reference on random Examples, and
random or mutated bytes only ever produce our errors (never a crash, a hang or wrong data)."""

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardforge.protos import example_pb2
from shardforge.records import (
    CorruptRecordError,
    ExampleDecodeError,
    FixedLen,
    TFRecordWriter,
    VarLen,
    decode_batch,
    decode_batch_reference,
    read_records,
)

from .conftest import assert_batches_equal

NAMES = ["a", "b", "tok", "é", ""]
SETTINGS = settings(
    max_examples=60, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

int64s = st.lists(st.integers(-(2**63), 2**63 - 1), max_size=6)
floats = st.lists(st.floats(width=32, allow_nan=True), max_size=6)
byte_lists = st.lists(st.binary(max_size=8), max_size=4)
feature = st.one_of(
    st.tuples(st.just("int64_list"), int64s), st.tuples(st.just("float_list"), floats),
    st.tuples(st.just("bytes_list"), byte_lists), st.tuples(st.just(None), st.just([])),
)
example = st.dictionaries(st.sampled_from(NAMES + ["other"]), feature, max_size=5)
dtype = st.sampled_from(["int64", "float32", "bytes"])
column = st.one_of(
    st.builds(VarLen, dtype),
    st.builds(FixedLen, dtype, st.sampled_from([(), (1,), (2,)]),
              st.sampled_from([None, 0])),
)
spec_strategy = st.dictionaries(st.sampled_from(NAMES), column, min_size=1, max_size=4)


def _serialize(ex: dict) -> bytes:
    msg = example_pb2.Example()
    for name, (which, values) in ex.items():
        f = msg.features.feature[name]
        if which is None:
            f.SetInParent()
        else:
            getattr(f, which).value.extend(values)
            getattr(f, which).SetInParent()
    return msg.SerializeToString()


def _fix_defaults(spec):
    # a numeric default of 0 means b"" for bytes features
    return {n: FixedLen(s.dtype, s.shape, b"" if s.dtype == "bytes" else s.default)
            if isinstance(s, FixedLen) and s.default is not None else s for n, s in spec.items()}


def _outcome(decode, records, spec):
    try:
        return decode(records, spec)
    except ExampleDecodeError as err:
        return (err.feature, err.index)


def _same(a, b):
    if isinstance(a, tuple) or isinstance(b, tuple):
        return a == b
    try:
        assert_batches_equal(a, b)
    except AssertionError:
        return False
    return True


@SETTINGS
@given(st.lists(example, max_size=8), spec_strategy)
def test_fast_decoder_matches_reference(examples, spec):
    spec = _fix_defaults(spec)
    records = [_serialize(e) for e in examples]
    fast = _outcome(decode_batch, records, spec)
    ref = _outcome(decode_batch_reference, records, spec)
    assert _same(fast, ref), (fast, ref)


@SETTINGS
@given(st.lists(example, min_size=1, max_size=4), spec_strategy, st.data())
def test_mutated_examples_raise_our_error_or_decode_like_protobuf(examples, spec, data):
    spec = _fix_defaults(spec)
    records = [bytearray(_serialize(e)) for e in examples]
    for _ in range(data.draw(st.integers(1, 4))):
        rec = records[data.draw(st.integers(0, len(records) - 1))]
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, len(rec)))
        if op == "flip" and rec:
            rec[min(pos, len(rec) - 1)] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del rec[pos:]
        else:
            rec[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
    records = [bytes(r) for r in records]
    fast = _outcome(decode_batch, records, spec)
    ref = _outcome(decode_batch_reference, records, spec)
    if isinstance(fast, tuple) or isinstance(ref, tuple):  # rejected: both, maybe not alike
        assert isinstance(fast, tuple) and isinstance(ref, tuple), (fast, ref)
        return
    assert _same(fast, ref)


# values whose varints take 1, 2, 3, 9 and 10 bytes, so that records often differ in nothing
# but their values (or hold two values where another holds one in as many bytes)
alike_ints = st.lists(st.sampled_from([0, 1, 2, 127, 128, 300, 16383, 16384, 2**62, -1]),
                      min_size=1, max_size=2)


@SETTINGS
@given(st.lists(st.tuples(alike_ints, st.lists(st.floats(width=32), min_size=1, max_size=2)),
                min_size=2, max_size=10),
       st.sampled_from([FixedLen("int64"), VarLen("int64")]), st.data())
def test_records_alike_but_for_their_values_decode_like_protobuf(rows, a_spec, data):
    records = [bytearray(_serialize({"a": ("int64_list", ints), "b": ("float_list", floats)}))
               for ints, floats in rows]
    if data.draw(st.booleans()):
        rec = records[data.draw(st.integers(0, len(records) - 1))]
        rec[data.draw(st.integers(0, len(rec) - 1))] ^= data.draw(st.integers(1, 255))
    spec = {"a": a_spec, "b": FixedLen("float32", default=0.0)}
    records = [bytes(r) for r in records]
    fast = _outcome(decode_batch, records, spec)
    ref = _outcome(decode_batch_reference, records, spec)
    if isinstance(fast, tuple) or isinstance(ref, tuple):
        assert isinstance(fast, tuple) and isinstance(ref, tuple), (fast, ref)
        return
    assert _same(fast, ref)


@SETTINGS
@given(st.lists(st.binary(max_size=64), max_size=6), spec_strategy)
def test_random_bytes_never_crash_the_decoder(records, spec):
    try:
        decode_batch(records, _fix_defaults(spec))
    except ExampleDecodeError:
        pass


RECORDS = [os.urandom(n) for n in (3, 40, 0, 300, 17, 1000, 5)]


@SETTINGS
@given(st.sampled_from([".tfrecord", ".tfrecord.gz", ".tfrecord.zz"]),
       st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=4),
       st.integers(0, 10_000))
def test_mutated_files_yield_only_true_records(tmp_path_factory, suffix, flips, cut):
    """With CRCs on, whatever a damaged file yields is an original record, in order."""
    path = str(tmp_path_factory.mktemp("fuzz") / f"f{suffix}")
    with TFRecordWriter(path, flush_every=256) as w:
        for r in RECORDS:
            w.write(r)
    data = bytearray(open(path, "rb").read())
    for pos, x in flips:
        data[pos % len(data)] ^= x
    open(path, "wb").write(bytes(data[: max(cut, len(data) // 2)]))
    try:
        got = list(read_records(path))
    except CorruptRecordError:
        got = None
    reader = read_records(path, on_corrupt="skip")
    skipped = list(reader)
    for records in (got, skipped):
        if records is None:
            continue
        it = iter(RECORDS)
        assert all(any(r == o for o in it) for r in records), "a record that was never written"
    if len(skipped) < len(RECORDS):
        assert reader.report.skipped >= 1


@SETTINGS
@given(st.binary(max_size=300))
def test_random_files_raise_corrupt_record_error(tmp_path_factory, data):
    path = str(tmp_path_factory.mktemp("rand") / "r.tfrecord")
    open(path, "wb").write(data)
    try:
        list(read_records(path))
    except CorruptRecordError:
        pass
    list(read_records(path, on_corrupt="skip"))
