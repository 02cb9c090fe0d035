"""The manifest: what a published output holds, and what readers refuse."""

import hashlib
import json
import os
import shutil

import pytest

from shardforge.examples.clicklog import write_csv
from shardforge.records import manifest as mf
from tests.pipelines.helpers import CLICK_FEATURES, IN_MEMORY, shard_paths

pytestmark = pytest.mark.xdist_group("pipelines-manifest")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    from shardforge.pipelines import run_pipeline

    d = tmp_path_factory.mktemp("manifest")
    csv = str(d / "clicks.csv")
    write_csv(csv, 600, seed=2)
    out = str(d / "out")
    summary = run_pipeline(CLICK_FEATURES, csv, out, num_shards=2, beam_args=IN_MEMORY,
                           command="shardforge run --test")
    return summary, d


@pytest.fixture
def copy(job, tmp_path):
    summary, _ = job
    dst = str(tmp_path / "copy")
    shutil.copytree(summary.output, dst)
    return dst


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_manifest_lists_every_file_with_counts_sizes_and_checksums(job):
    from shardforge.records import read_records

    summary, _ = job
    out = summary.output
    with open(os.path.join(out, "manifest.json")) as f:
        doc = json.load(f)
    listed = {e["path"]: e for e in doc["files"]}
    on_disk = {os.path.relpath(os.path.join(dp, n), out) for dp, _, ns in os.walk(out)
               for n in ns} - {"manifest.json"}
    assert set(listed) == on_disk  # nothing unlisted, nothing missing, no staging left
    for split in ("train", "eval"):
        paths = shard_paths(out, split)
        assert len(paths) == 2
        for p in paths:
            e = listed[os.path.relpath(p, out)]
            assert e["records"] == len(list(read_records(p)))
            assert e["bytes"] == os.path.getsize(p) and e["sha256"] == _sha(p)
    assert doc["rows_written"] == summary.rows_out == 600
    assert doc["rows_read"] == 600 and doc["rows_failed"] == 0
    assert doc["schema_sha256"] == _sha(os.path.join(out, "schema.pbtxt"))
    assert doc["splits"]["train"]["records"] == summary.splits["train"]
    assert doc["command"] == "shardforge run --test" and doc["version"]
    assert not os.path.exists(os.path.join(out, mf.STATE_DIR))  # lock released
    m = mf.verify_output(out, checksums=True)
    assert m.rows_written == 600


def test_readers_refuse_an_output_without_manifest(copy):
    os.remove(os.path.join(copy, "manifest.json"))
    with pytest.raises(mf.OutputError, match="has no manifest.json"):
        mf.verify_output(copy)
    with pytest.raises(mf.OutputError, match="has no manifest.json"):
        mf.check_shards(shard_paths(copy, "train"))


def test_readers_refuse_a_missing_or_changed_shard(copy):
    first, second = shard_paths(copy, "train")
    os.remove(first)
    with pytest.raises(mf.OutputError, match=r"train/part-00000-of-00002.tfrecord is missing"):
        mf.verify_output(copy)
    with open(second, "ab") as f:
        f.write(b"x")
    with pytest.raises(mf.OutputError, match="has .* bytes, the manifest says"):
        mf.verify_output(copy)


def test_readers_refuse_a_shard_the_manifest_does_not_list(copy):
    (first, _) = shard_paths(copy, "train")
    stranger = os.path.join(copy, "train", "part-00000-of-00003.tfrecord")
    shutil.copy(first, stranger)
    with pytest.raises(mf.OutputError, match="part-00000-of-00003.tfrecord is not in the manif"):
        mf.verify_output(copy)
    with pytest.raises(mf.OutputError):
        mf.check_shards([stranger])


def test_checksums_catch_a_same_size_change(copy, monkeypatch):
    # a different schema of the same size (another run's): small files are always hashed
    schema = os.path.join(copy, "schema.pbtxt")
    with open(schema, "rb") as f:
        text = f.read()
    with open(schema, "wb") as f:
        f.write(text.replace(b"country", b"cuontry"))
    with pytest.raises(mf.OutputError, match="schema.pbtxt does not match its SHA-256"):
        mf.verify_output(copy)
    with open(schema, "wb") as f:
        f.write(text)
    monkeypatch.setattr(mf, "ALWAYS_HASHED", 0)  # as for shards past 1 MiB
    (first, _) = shard_paths(copy, "eval")
    with open(first, "r+b") as f:
        f.seek(20)
        byte = f.read(1)
        f.seek(20)
        f.write(bytes([byte[0] ^ 1]))
    mf.verify_output(copy)  # big files by size only by default: cheap enough for every reader
    with pytest.raises(mf.OutputError, match="does not match its SHA-256"):
        mf.verify_output(copy, checksums=True)


def test_plain_shard_directories_need_no_manifest(tmp_path):
    from shardforge.records import ShardedWriter

    with ShardedWriter(tmp_path / "train", num_shards=1) as w:
        w.write(b"abc")
    (tmp_path / "schema.pbtxt").write_text("")
    assert mf.output_root(w.paths[0]) is None
    mf.check_shards(w.paths)  # not a job output: read as plain shards


def test_every_reader_refuses_an_incomplete_output(copy, capsys):
    import shardforge.features as sf
    from shardforge.cli import main
    from shardforge.training.dataset import ShardDataset

    examples = os.path.join(os.path.dirname(CLICK_FEATURES))
    first, second = shard_paths(copy, "train")
    ShardDataset(os.path.join(copy, "train"), batch_size=8)  # complete: readable
    os.remove(first)
    with pytest.raises(mf.OutputError, match="part-00000-of-00002.tfrecord is missing"):
        ShardDataset(os.path.join(copy, "train"), batch_size=8)
    with pytest.raises(mf.OutputError, match="is missing"):
        ShardDataset([second], batch_size=8)
    with pytest.raises(mf.OutputError, match="is missing"):
        sf.load_schema(copy)
    capsys.readouterr()
    assert main(["inspect", os.path.join(copy, "train")]) != 0
    assert main(["stats", copy]) != 0
    assert main(["train", "--config", os.path.join(examples, "tabular.yaml"),
                 "--data", copy]) != 0
    err = capsys.readouterr()
    assert (err.out + err.err).count("part-00000-of-00002.tfrecord is missing") == 3
