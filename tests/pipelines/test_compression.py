"""The whole job for every shard compression, as a user runs it (``shardforge run --compression
C``), read back by our loader and by TensorFlow's reader (the oracle for the format)."""

import os

import numpy as np
import pytest

from shardforge.cli import main
from shardforge.examples.clicklog import write_csv
from tests.pipelines.helpers import CLICK_FEATURES, IN_MEMORY, shard_paths

pytestmark = pytest.mark.xdist_group("pipelines-compression")

# TensorFlow's names and the suffixes TFRecord tools expect, spelled out here as the oracle
CASES = {"none": ("", ".tfrecord"), "gzip": ("GZIP", ".tfrecord.gz"),
         "zlib": ("ZLIB", ".tfrecord.zz")}


@pytest.fixture(scope="module")
def click_csv(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("data") / "clicks.csv")
    write_csv(path, 500, seed=5)
    return path


@pytest.mark.parametrize("compression", sorted(CASES))
def test_job_output_reads_back_with_every_compression(click_csv, tmp_path, compression):
    import tensorflow as tf

    import shardforge.features as sf
    from shardforge.interop.tf import tf_feature_spec
    from shardforge.records import FixedLen, RecordFile, index_path
    from shardforge.records.manifest import verify_output
    from shardforge.training.dataset import ShardDataset

    tf_type, suffix = CASES[compression]
    out = str(tmp_path / "out")
    rc = main(["run", "--features", CLICK_FEATURES, "--input", click_csv, "--output", out,
               "--num-shards", "2", "--compression", compression, "--quiet", *IN_MEMORY])
    assert rc == 0
    manifest = verify_output(out, checksums=True)
    paths = shard_paths(out, "train")
    assert [os.path.basename(p) for p in paths] == [
        f"part-{i:05d}-of-00002{suffix}" for i in range(2)]
    assert all(os.path.exists(index_path(p)) for p in paths)
    n = manifest.splits["train"]["records"]
    assert n > 0 and sum(len(RecordFile(p)) for p in paths) == n

    schema = sf.load_schema(out)
    ours = list(ShardDataset(os.path.join(out, "train"), batch_size=n, shuffle=False,
                             remainder="keep", rank=0, world_size=1))
    assert len(ours) == 1 and len(ours[0]["label"]) == n
    serialized = next(iter(tf.data.TFRecordDataset(paths, compression_type=tf_type)
                           .batch(n + 1)))
    assert len(serialized) == n
    parsed = tf.io.parse_example(serialized, tf_feature_spec(schema, ragged=False))
    for name, s in schema.spec.items():
        if isinstance(s, FixedLen):
            np.testing.assert_array_equal(parsed[name].numpy(), ours[0][name], err_msg=name)
        else:
            np.testing.assert_array_equal(parsed[name].values.numpy(), ours[0][name].values,
                                          err_msg=name)
