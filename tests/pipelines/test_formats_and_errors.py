"""Each source format end to end, and the dead-letter path with the error budget."""

import glob
import json
import os

import numpy as np
import pytest

from tests.pipelines.helpers import IN_MEMORY, MULTI_PROCESS, read_split, row_multiset

pytestmark = pytest.mark.xdist_group("pipelines-formats")

FEATURES = """
import shardforge.features as sf

FEATURES = sf.FeatureSet(
    [
        sf.numeric("x", default=0.0, normalize="zscore"),
        sf.categorical_vocab("tags", multivalued=True, num_oov_buckets=1),
        sf.categorical_identity("slot", num_buckets=5),
    ],
    label=sf.numeric("y", dtype="int64"),
)
"""
N = 240


def _rows(seed=0):
    rng = np.random.default_rng(seed)
    words = ["red", "green", "blue", "cyan"]
    rows = []
    for i in range(N):
        row = {"tags": [str(w) for w in rng.choice(words, size=i % 4)], "slot": int(i % 5),
               "y": int(rng.integers(0, 2))}
        if i % 7:
            row["x"] = round(float(rng.normal(3.0, 2.0)), 3)
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from shardforge.records import TFRecordWriter, encode_example

    d = tmp_path_factory.mktemp("formats")
    (d / "features.py").write_text(FEATURES)
    rows = _rows()
    with open(d / "rows.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    # two Parquet files: globs and multi-file reads
    for part, chunk in enumerate((rows[: N // 2], rows[N // 2 :])):
        table = pa.table({
            "x": pa.array([r.get("x") for r in chunk], pa.float64()),
            "tags": pa.array([r["tags"] for r in chunk], pa.list_(pa.string())),
            "slot": pa.array([r["slot"] for r in chunk], pa.int64()),
            "y": pa.array([r["y"] for r in chunk], pa.int64()),
        })
        pq.write_table(table, d / f"rows-{part}.parquet")
    with TFRecordWriter(str(d / "rows.tfrecord.gz")) as w:
        for r in rows:
            w.write(encode_example({k: ([v] if not isinstance(v, list) else
                                        [t.encode() for t in v]) for k, v in r.items()}))
    # dead letters: bad JSON, two unparsable numbers in one row, an id outside [0, 5)
    bad = ['{"x": 1.0, "slot": 1, "y": 0, \n', '{"x": "abc", "slot": 1, "y": "no"}\n',
           '{"x": 1.0, "slot": 9, "y": 1}\n']
    with open(d / "bad.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows[:100])
        f.writelines(bad)
    docs = d / "docs"
    docs.mkdir()
    for name, text in (("a.txt", "the cat sat"), ("b.txt", "the dog"), ("c.txt", "a cat")):
        (docs / name).write_text(text)
    (d / "text_features.py").write_text(
        "import shardforge.features as sf\n"
        "FEATURES = sf.FeatureSet([sf.text('text', tokenizer='whitespace')])\n")
    return d


def _run(data, pattern, out, **kw):
    from shardforge.pipelines import run_pipeline

    kw.setdefault("beam_args", IN_MEMORY)
    return run_pipeline(str(data / "features.py"), str(data / pattern), str(data / out),
                        overwrite=True, **kw)


@pytest.fixture(scope="module")
def by_format(data):
    return {
        "jsonl": _run(data, "rows.jsonl", "out_jsonl"),
        "parquet": _run(data, "rows-*.parquet", "out_parquet", chunk_rows=50),
        "tfrecord": _run(data, "rows.tfrecord.gz", "out_tfrecord", fmt="tfrecord"),
    }


def _records(summary):
    import shardforge.features as sf

    state = sf.TransformState.load(summary.schema)
    spec = sf.load_feature_set(os.path.join(os.path.dirname(summary.output),
                                            "features.py")).output_spec(state)
    return {s: row_multiset(read_split(summary.output, s, spec)) for s in ("train", "eval")}


def test_every_format_gives_the_same_records(by_format):
    results = {fmt: _records(s) for fmt, s in by_format.items()}
    for fmt, summary in by_format.items():
        assert summary.rows_read == N and summary.errors == 0, fmt
        assert sum(summary.splits.values()) == N, fmt
    assert results["jsonl"] == results["parquet"] == results["tfrecord"]
    with open(by_format["jsonl"].schema) as f:
        schema = f.read()
    for fmt in ("parquet", "tfrecord"):
        with open(by_format[fmt].schema) as f:
            assert f.read() == schema


def test_text_files_are_documents(data):
    import shardforge.features as sf
    from shardforge.pipelines import run_pipeline

    out = str(data / "out_text")
    summary = run_pipeline(str(data / "text_features.py"), str(data / "docs" / "*.txt"), out,
                           fmt="text", eval_fraction=0.0, beam_args=IN_MEMORY)
    assert summary.splits == {"train": 3} and summary.errors == 0
    state = sf.TransformState.load(summary.schema)
    assert sorted(state.columns["text"]["vocab"].values) == sorted(
        [b"the", b"cat", b"sat", b"dog", b"a"])
    fs = sf.load_feature_set(str(data / "text_features.py"))
    tokens = read_split(out, "train", fs.output_spec(state))["text"]
    assert sorted(tokens.row_lengths().tolist()) == [2, 2, 3]
    assert not os.path.exists(os.path.join(out, "eval"))


def test_dead_letters_name_source_feature_and_reason(data):
    # the default offline multi-process runner: bad rows cross worker processes too
    summary = _run(data, "bad.jsonl", "out_bad", beam_args=MULTI_PROCESS, max_error_fraction=0.05)
    assert summary.rows_read == 103 and summary.errors == 3
    assert sum(summary.splits.values()) == 100
    lines = [json.loads(ln) for p in glob.glob(os.path.join(summary.errors_dir, "*.jsonl"))
             for ln in open(p)]
    assert len(lines) == 3  # one per failed row, naming every failing column
    by_stage = {e["stage"]: e for e in lines}
    path = str(data / "bad.jsonl")
    assert by_stage["read"]["source"] == f"{path}:101"
    assert by_stage["read"]["reason"].startswith("invalid JSON")
    assert by_stage["parse"]["source"] == f"{path}:102"
    assert (by_stage["parse"]["feature"], by_stage["parse"]["value"]) == ("x, y", "x=abc; y=no")
    assert by_stage["transform"]["source"] == f"{path}:103"
    assert by_stage["transform"]["feature"] == "slot" and by_stage["transform"]["reason"]
    with open(os.path.join(summary.output, "stats.json")) as f:
        assert json.load(f)["errors"] == 3


def test_error_budget_fails_the_job_and_writes_no_shards(data):
    from shardforge.pipelines import TooManyErrors

    with pytest.raises(TooManyErrors, match=r"3 of 103 input rows failed \(2\.91%\).*0\.01"):
        _run(data, "bad.jsonl", "out_fail", beam_args=MULTI_PROCESS)
    out = data / "out_fail"
    assert not glob.glob(str(out / "train" / "part-*"))
    errors = glob.glob(str(out / "errors" / "*.jsonl"))
    assert errors and sum(1 for p in errors for _ in open(p)) == 3


def test_shard_size_sets_the_shard_count(data):
    from shardforge.records.layout import parse_size
    from tests.pipelines.helpers import shard_paths

    # K/M/G and KiB/MiB/GiB are powers of 1024, KB/MB/GB powers of 1000 (the one rule)
    assert parse_size("2KiB") == parse_size("2K") == 2048 and parse_size("128MiB") == 128 << 20
    assert parse_size("2KB") == 2000 and parse_size("128MB") == 128 * 10**6
    summary = _run(data, "rows.jsonl", "out_sized", shard_size="2KiB", eval_fraction=0.0)
    with open(summary.stats) as f:
        written = json.load(f)["splits"]["train"]["bytes"]
    n = -(-written // 2048)
    assert n > 1
    paths = shard_paths(summary.output, "train")
    assert [os.path.basename(p) for p in paths] == [
        f"part-{i:05d}-of-{n:05d}.tfrecord" for i in range(n)]
    assert summary.splits == {"train": N}
