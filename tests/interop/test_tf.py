"""TensorFlow reads a job's output with shardforge's helpers: the parse spec from the schema,
``tf_dataset`` over the shards (compression detected, ragged features as ``tf.RaggedTensor``),
and the TensorFlow Metadata schema parsed by ``tensorflow_metadata`` itself."""

import shutil

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from shardforge.features import load_schema  # noqa: E402
from shardforge.interop.tf import detect_compression, tf_dataset, tf_feature_spec  # noqa: E402
from shardforge.records import (  # noqa: E402
    FixedLen,
    Ragged,
    TFRecordWriter,
    VarLen,
    decode_batch,
    encode_batch,
    list_shards,
    read_records,
)

BEAM = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def clicklog_output(root, compression):
    from shardforge.examples.cli_example import write_example
    from shardforge.pipelines import run_pipeline

    ex = write_example("clicklog", root, rows=3_000)
    run_pipeline(str(ex.features), ex.input, str(root / "data"), fmt="csv", num_shards=2,
                 compression=compression, beam_args=BEAM)
    return root / "data"


@pytest.fixture(scope="module", params=[None, "gzip"])
def output(request, tmp_path_factory):
    return clicklog_output(tmp_path_factory.mktemp(f"clicks-{request.param}"), request.param)


def ours(files, spec):
    return decode_batch(list(read_records(files)), spec)


def test_tf_dataset_reads_every_record_as_shardforge_decodes_it(output):
    schema = load_schema(str(output))
    expected = ours(list_shards(output / "train"), schema.spec)
    batches = list(tf_dataset(str(output), batch_size=500))
    assert len(batches) == -(-len(expected["price"]) // 500)
    for name, spec in schema.spec.items():
        if isinstance(spec, VarLen):
            assert all(isinstance(b[name], tf.RaggedTensor) for b in batches)
            values = np.concatenate([b[name].flat_values.numpy() for b in batches])
            lengths = np.concatenate([b[name].row_lengths().numpy() for b in batches])
            np.testing.assert_array_equal(values, expected[name].values)
            np.testing.assert_array_equal(lengths, expected[name].row_lengths())
        else:
            got = np.concatenate([b[name].numpy() for b in batches])
            np.testing.assert_array_equal(got, expected[name])


def test_compression_is_detected_from_the_bytes(output, tmp_path):
    shards = list_shards(output / "train")
    expected = "gzip" if shards[0].endswith(".gz") else None
    assert detect_compression(shards[0]) == expected
    renamed = tmp_path / "train" / "part-00000"  # no suffix left to tell
    renamed.parent.mkdir()
    shutil.copy(shards[0], renamed)
    shutil.copy(output / "schema.pbtxt", tmp_path / "schema.pbtxt")
    assert detect_compression(str(renamed)) == expected
    rows = sum(int(tf.shape(b["price"])[0]) for b in tf_dataset(str(renamed), 64))
    assert rows == len(list(read_records(shards[0])))


def test_split_dirs_globs_and_lists_read_only_shards(output):
    """``train/*`` would also match index files beside the shards: only shards are read."""
    schema = load_schema(str(output))
    n = len(list(read_records(list_shards(output / "train"))))
    for path in (str(output / "train"), str(output / "train" / "*"),
                 str(output / "train" / "part-*"), list_shards(output / "train")):
        ds = tf_dataset(path, batch_size=1000, schema=schema if isinstance(path, list) else None)
        assert sum(int(tf.shape(b["price"])[0]) for b in ds) == n
    n_eval = len(list(read_records(list_shards(output / "eval"))))
    assert sum(int(tf.shape(b["price"])[0]) for b in tf_dataset(str(output), 1000,
                                                                split="eval")) == n_eval


def test_feature_spec_of_every_kind_parses_like_shardforge(tmp_path):
    spec = {"x": FixedLen("float32", (3,)), "id": FixedLen("int64"), "s": FixedLen("bytes", (2,)),
            "tok": VarLen("int64"), "w": VarLen("float32"), "words": VarLen("bytes"),
            "d": FixedLen("int64", (), default=-1)}
    batch = {"x": np.arange(12, dtype=np.float32).reshape(4, 3), "id": np.arange(4),
             "s": np.array([[b"a", b"b"], [b"", b"c"], [b"d", b"e"], [b"f", b"\xff"]], object),
             "tok": Ragged.from_rows([[1, 2], [], [3], [4, 5, 6]]),
             "w": Ragged.from_rows([[0.5], [], [], [1.5, 2.5]]),
             "words": Ragged.from_rows([[b"x"], [b"y", b"z"], [], []])}
    path = str(tmp_path / "part.tfrecord.zz")  # ZLIB, detected like GZIP
    with TFRecordWriter(path, compression="zlib") as w:
        for record in encode_batch(batch):
            w.write(record)
    assert detect_compression(path) == "zlib"
    tf_spec = tf_feature_spec(spec)
    assert tf_spec["x"] == tf.io.FixedLenFeature((3,), tf.float32)
    assert tf_spec["d"] == tf.io.FixedLenFeature((), tf.int64, default_value=-1)
    assert tf_spec["words"] == tf.io.RaggedFeature(tf.string, row_splits_dtype=tf.int64)
    (parsed,) = tf_dataset(path, batch_size=10, schema=spec)
    expected = decode_batch(list(read_records(path)), spec)
    for name in spec:
        if isinstance(spec[name], VarLen):
            assert parsed[name].to_list() == [list(r) for r in expected[name]], name
        else:
            np.testing.assert_array_equal(parsed[name].numpy(), expected[name])
    sparse = tf_feature_spec(spec, ragged=False)["tok"]
    assert sparse == tf.io.VarLenFeature(tf.int64)


def test_tfmd_schema_is_read_by_tensorflow_metadata(output):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2 as tfmd

    from shardforge.interop.tfmd import tfmd_schema_text

    schema = load_schema(str(output))
    parsed = text_format.Parse(tfmd_schema_text(schema), tfmd.Schema())
    by_name = {f.name: f for f in parsed.feature}
    assert list(by_name) == sorted(f.name for f in schema.features)
    assert list(parsed.default_environment) == ["TRAINING", "SERVING"]
    types = {"int64": tfmd.INT, "float32": tfmd.FLOAT, "bytes": tfmd.BYTES}
    for f in schema.features:
        t = by_name[f.name]
        assert t.type == types[schema.spec[f.name].dtype]
        assert t.HasField("shape") == (not f.varlen)
        if not f.varlen:
            assert [d.size for d in t.shape.dim] == list(f.shape)
            assert t.presence.min_fraction == 1.0
        if f.num_buckets and f.kind == f.CATEGORICAL:
            assert (t.int_domain.min, t.int_domain.max) == (0, f.num_buckets - 1)
            assert t.int_domain.is_categorical
    assert list(by_name["label"].not_in_environment) == ["SERVING"]
    assert by_name["query"].WhichOneof("shape_type") is None  # varlen: VarLenFeature in TF

    # tf.Transform's schema_as_feature_spec rule (shape -> FixedLen, none -> VarLen) turns it
    # back into a spec TensorFlow parses the shards with, to the same values.
    dtypes = {tfmd.INT: tf.int64, tfmd.FLOAT: tf.float32, tfmd.BYTES: tf.string}
    spec = {f.name: tf.io.FixedLenFeature(tuple(d.size for d in f.shape.dim), dtypes[f.type])
            if f.HasField("shape") else tf.io.VarLenFeature(dtypes[f.type])
            for f in parsed.feature}
    assert spec == tf_feature_spec(schema, ragged=False)


def test_write_tfmd_schema_beside_the_job_schema(output, tmp_path):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2 as tfmd

    import shardforge.interop as interop

    job = tmp_path / "job"
    job.mkdir()
    shutil.copy(output / "schema.pbtxt", job / "schema.pbtxt")
    path = interop.write_tfmd_schema(str(job))
    assert path == str(job / interop.TFMD_SCHEMA_FILE) == str(job / "schema_tfmd.pbtxt")
    with open(path) as f:
        parsed = text_format.Parse(f.read(), tfmd.Schema())
    assert sorted(f.name for f in parsed.feature) == sorted(load_schema(str(job)).spec)
    assert interop.tf_dataset is tf_dataset


def test_a_job_output_carries_its_tfmd_schema_in_the_manifest(output):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2 as tfmd

    from shardforge.interop.tfmd import tfmd_schema_text
    from shardforge.records.manifest import verify_output

    manifest = verify_output(str(output), checksums=True)
    assert "schema_tfmd.pbtxt" in {f.path for f in manifest.files}
    with open(output / "schema_tfmd.pbtxt") as f:
        text = f.read()
    assert text == tfmd_schema_text(load_schema(str(output)))
    text_format.Parse(text, tfmd.Schema())
