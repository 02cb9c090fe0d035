"""Adding an input format is one reader in the registry: a reader written here, registered with
one line, runs a whole job and gives the same records as the CSV reader on the same rows."""

import argparse
import json
import os

import pytest

from tests.pipelines.helpers import IN_MEMORY, read_split, row_multiset

pytestmark = pytest.mark.xdist_group("pipelines-registry")

FEATURES = """
import shardforge.features as sf

FEATURES = sf.FeatureSet(
    [sf.numeric("x", default=0.0, normalize="zscore"), sf.categorical_identity("slot", 5)],
    label=sf.numeric("y", dtype="int64"),
)
"""
N = 60


class KvReader:
    """``key=value`` pairs joined by ``;``, one record a line (a format no built-in reads)."""

    name = "kv"
    suffixes = (".kv",)

    def inputs(self, spec):
        return spec

    def columns(self, path):
        return None

    def split(self, path, target):
        from shardforge.pipelines.readers import Split

        return [Split(path)]

    def read(self, split, inputs, chunk_rows):
        from shardforge.pipelines.readers import RawChunk, ReadError

        with open(split.path, "rb") as f:
            lines = f.read().splitlines()
        names = list(inputs)
        for line, text in enumerate(lines, 1):
            if b"=" not in text:
                yield ReadError(f"{split.path}:{line}", "expected key=value pairs",
                                text.decode())
                continue
            record = dict(pair.split(b"=", 1) for pair in text.split(b";"))
            yield RawChunk(split.path, line, 1, {n: [record.get(n.encode())] for n in names})


@pytest.fixture
def kv(monkeypatch):
    from shardforge.pipelines.readers import READERS

    monkeypatch.setitem(READERS, "kv", KvReader())


def _write_rows(d):
    rows = [(None if i % 7 == 0 else round(0.37 * i - 4, 2), i % 5, i % 2) for i in range(N)]
    with open(d / "rows.csv", "w") as f:
        f.write("x,slot,y\n")
        f.writelines(f"{'' if x is None else x},{s},{y}\n" for x, s, y in rows)
    with open(d / "rows.kv", "w") as f:
        for i, (x, s, y) in enumerate(rows):
            f.write(("" if x is None else f"x={x};") + f"slot={s};y={y}\n")
            if i == 10:
                f.write("garbage\n")  # line 12


def _records(summary, features):
    import shardforge.features as sf

    state = sf.TransformState.load(summary.schema)
    spec = sf.load_feature_set(features).output_spec(state)
    return {s: row_multiset(read_split(summary.output, s, spec)) for s in ("train", "eval")}


def test_a_registered_reader_runs_a_job_like_a_builtin(kv, tmp_path):
    from shardforge.pipelines import run_pipeline

    features = str(tmp_path / "features.py")
    (tmp_path / "features.py").write_text(FEATURES)
    _write_rows(tmp_path)
    common = dict(eval_fraction=0.3, num_shards=1, max_error_fraction=0.05, beam_args=IN_MEMORY)
    ours = run_pipeline(features, str(tmp_path / "rows.kv"), str(tmp_path / "out_kv"), **common)
    oracle = run_pipeline(features, str(tmp_path / "rows.csv"), str(tmp_path / "out_csv"),
                          **common)
    assert oracle.rows_read == N and oracle.errors == 0
    assert ours.rows_read == N + 1 and ours.errors == 1
    assert _records(ours, features) == _records(oracle, features)
    assert ours.splits == oracle.splits
    errors = [json.loads(line) for name in os.listdir(ours.errors_dir)
              for line in open(os.path.join(ours.errors_dir, name))]
    assert [(e["source"], e["stage"], e["reason"]) for e in errors] == [
        (f"{tmp_path}/rows.kv:12", "read", "expected key=value pairs")]


def test_the_cli_offers_every_registered_format(kv):
    from shardforge.pipelines import cli_run
    from shardforge.pipelines.readers import infer_format

    parser = argparse.ArgumentParser()
    cli_run.add_arguments(parser)
    args = parser.parse_args(["--features", "f.py", "--input", "a.kv", "--output", "o",
                              "--format", "kv"])
    assert args.format == "kv"
    assert infer_format("data/part-*.kv") == "kv"
    with pytest.raises(SystemExit):
        parser.parse_args(["--features", "f.py", "--input", "a", "--output", "o",
                           "--format", "xml"])
