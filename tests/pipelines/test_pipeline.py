"""End to end on the example click log: the Beam job agrees with the in-process feature set.

Two runs of the same input: the default (offline FnApiRunner, two worker processes) and an
in-process run with other batch and shard sizes. Both must learn the same state and write the
same records per split.
"""

import json
import os

import numpy as np
import pytest

from shardforge.examples.clicklog import write_csv
from tests.pipelines.helpers import (
    CLICK_FEATURES,
    IN_MEMORY,
    MULTI_PROCESS,
    concat,
    read_split,
    read_typed,
    row_multiset,
    shard_paths,
)

pytestmark = pytest.mark.xdist_group("pipelines-click")
N_ROWS = 3000


@pytest.fixture(scope="module")
def click_csv(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("data") / "clicks.csv")
    write_csv(path, N_ROWS, seed=3)
    return path


@pytest.fixture(scope="module")
def run_a(click_csv, tmp_path_factory):
    from shardforge.pipelines import run_pipeline

    out = str(tmp_path_factory.mktemp("out_a"))
    return run_pipeline(CLICK_FEATURES, click_csv, out, num_shards=2, overwrite=True,
                        beam_args=MULTI_PROCESS)


@pytest.fixture(scope="module")
def run_b(click_csv, tmp_path_factory):
    from shardforge.pipelines import run_pipeline

    out = str(tmp_path_factory.mktemp("out_b"))
    return run_pipeline(CLICK_FEATURES, click_csv, out, num_shards=3, chunk_rows=700,
                        beam_args=IN_MEMORY, overwrite=True)


@pytest.fixture(scope="module")
def typed(click_features, click_csv):
    batches, errors = read_typed(click_features, click_csv)
    assert not errors
    return batches


def _state(out):
    import shardforge.features as sf

    return sf.TransformState.load(os.path.join(out, "schema.pbtxt"))


def _assert_same_state(beam_state, local_state, data):
    # Every analyzer is order-free (exact sums, exact vocabularies, quantiles exact or from an
    # order-free histogram): the Beam job learns exactly the in-process state.
    assert beam_state.columns == local_state.columns


def test_state_equals_in_process_fit(run_a, typed, click_features):
    _assert_same_state(_state(run_a.output), click_features.fit(typed), concat(typed))


def test_records_decode_to_in_process_transform(run_a, typed, click_features):
    state = _state(run_a.output)
    spec = click_features.output_spec(state)
    expected = click_features.transform(concat(typed), state)
    written = row_multiset(read_split(run_a.output, "train", spec)) + row_multiset(
        read_split(run_a.output, "eval", spec))
    assert written == row_multiset(expected)
    assert run_a.rows_read == N_ROWS and run_a.errors == 0
    assert sum(run_a.splits.values()) == N_ROWS


def test_rerun_same_state_and_records_per_split(run_a, run_b, click_features):
    state_a, state_b = _state(run_a.output), _state(run_b.output)
    assert state_a.columns == state_b.columns
    assert run_a.splits == run_b.splits
    spec = click_features.output_spec(state_a)
    for split in ("train", "eval"):
        # the learned state is bit-identical, so the records are too
        assert row_multiset(read_split(run_a.output, split, spec)) == row_multiset(
            read_split(run_b.output, split, spec))


def test_layout_shards_and_index(run_a, run_b):
    from shardforge.records import RecordFile, index_path

    for run, n in ((run_a, 2), (run_b, 3)):
        for split in ("train", "eval"):
            paths = shard_paths(run.output, split)
            assert [os.path.basename(p) for p in paths] == [
                f"part-{i:05d}-of-{n:05d}.tfrecord" for i in range(n)]
            assert sum(len(RecordFile(p)) for p in paths) == run.splits[split]
            assert all(os.path.exists(index_path(p)) for p in paths)
        assert not [p for p in os.listdir(os.path.join(run.output, "train")) if p.startswith(".")]
        assert os.path.exists(os.path.join(run.output, "errors"))
    eval_share = run_a.splits["eval"] / N_ROWS
    assert 0.07 < eval_share < 0.13


def test_tensorflow_parses_shards_with_emitted_spec(run_a, click_features):
    import tensorflow as tf

    from shardforge.records import FixedLen

    spec = click_features.output_spec(_state(run_a.output))
    dtypes = {"int64": tf.int64, "float32": tf.float32, "bytes": tf.string}
    tf_spec = {
        name: tf.io.FixedLenFeature(s.shape, dtypes[s.dtype], default_value=s.default)
        if isinstance(s, FixedLen) else tf.io.VarLenFeature(dtypes[s.dtype])
        for name, s in spec.items()
    }
    paths = shard_paths(run_a.output, "train")
    serialized = next(iter(tf.data.TFRecordDataset(paths).batch(100_000)))
    parsed = tf.io.parse_example(serialized, tf_spec)
    ours = read_split(run_a.output, "train", spec)
    for name, s in spec.items():
        if isinstance(s, FixedLen):
            np.testing.assert_array_equal(parsed[name].numpy(), ours[name], err_msg=name)
        else:
            np.testing.assert_array_equal(parsed[name].values.numpy(), ours[name].values)
            np.testing.assert_array_equal(
                tf.RaggedTensor.from_sparse(parsed[name]).row_splits.numpy(),
                ours[name].row_splits)


def test_stats_json(run_a, typed, click_csv):
    import csv

    with open(os.path.join(run_a.output, "stats.json")) as f:
        doc = json.load(f)
    assert doc["rows_read"] == N_ROWS and doc["errors"] == 0
    assert {s: v["records"] for s, v in doc["splits"].items()} == run_a.splits
    features = {f["name"]: f for f in doc["features"]}
    with open(click_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    price_missing = sum(1 for r in rows if r["price"] == "")
    assert features["price"]["missing"] == price_missing > 0
    assert features["price"]["count"] == N_ROWS - price_missing
    prices = np.array([float(r["price"]) for r in rows if r["price"]])
    assert features["price"]["min"] == pytest.approx(prices.min(), rel=1e-6)
    assert features["price"]["max"] == pytest.approx(prices.max(), rel=1e-6)
    assert features["price"]["mean"] == pytest.approx(prices.mean(), rel=1e-5)
    assert features["price"]["std"] == pytest.approx(prices.std(), rel=1e-4)
    assert sum(b["count"] for b in features["price"]["histogram"]) == len(prices)
    from collections import Counter

    top = Counter(r["country"] for r in rows).most_common(3)
    assert [tuple(t) for t in features["country"]["top_values"][:3]] == top
    assert features["label"]["top_values"][0][1] + features["label"]["top_values"][1][1] == N_ROWS
