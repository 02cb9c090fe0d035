"""Hostile inputs (issue 25): every row read is counted, an all-failing input never publishes,
one error line per failed row, TFRecord records fail one by one, and no value crashes or hangs
the job (lone surrogates, FIFOs and devices as image paths, hostile GeoJSON)."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shardforge.records import manifest as mf
from tests.pipelines.helpers import IN_MEMORY, REPO, read_split
from tests.pipelines.test_overwrite import snapshot

pytestmark = pytest.mark.xdist_group("pipelines-hostile")

FEATURES = """
import shardforge.features as sf

FEATURES = sf.FeatureSet(
    [sf.numeric("x", default=0.0), sf.categorical_vocab("c", num_oov_buckets=1)],
    label=sf.numeric("id", dtype="int64"),
)
"""
N = 1000


def _errors(errors_dir) -> list[dict]:
    lines = []
    for path in sorted(glob.glob(os.path.join(errors_dir, "errors-*.jsonl"))):
        with open(path) as f:
            lines += [json.loads(ln) for ln in f if ln.strip()]
    return lines


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "features.py"
    path.write_text(FEATURES)
    return str(path)


def _parquet(path, ids) -> None:
    pq.write_table(pa.table({"id": pa.array(ids), "x": np.arange(N, dtype=np.float64),
                             "c": [f"v{i % 7}" for i in range(N)]}), path)


def test_an_all_failing_input_never_replaces_an_output(features, tmp_path):
    from shardforge.pipelines import run_pipeline
    from shardforge.pipelines.transforms import TooManyErrors

    good, bad, out = tmp_path / "good.parquet", tmp_path / "bad.parquet", tmp_path / "out"
    _parquet(good, np.arange(N, dtype=np.int64))
    _parquet(bad, np.arange(N) + 0.5)  # the int64 label arrives as float: every row fails
    run_pipeline(features, str(good), str(out), beam_args=IN_MEMORY)
    before = snapshot(out)
    # even a budget that allows every failure: no good row, nothing to publish
    for fraction in (0.01, 1.0):
        with pytest.raises(TooManyErrors) as info:
            run_pipeline(features, str(bad), str(out), beam_args=IN_MEMORY, overwrite=True,
                         max_error_fraction=fraction)
        assert (info.value.rows_failed, info.value.rows_read) == (N, N)
        assert snapshot(out) == before
    lines = _errors(info.value.errors_dir)
    assert len(lines) == N and {e["feature"] for e in lines} == {"id"}
    assert mf.verify_output(str(out)).rows_written == N


def test_rows_read_counts_rows_that_fail_to_parse(features, tmp_path):
    from shardforge.pipelines import run_pipeline

    path, out = tmp_path / "some_bad.csv", tmp_path / "out"
    lines = ["id,x,c"]
    for i in range(N):
        # rows 0, 100, ...: the label and x both fail; rows 50, 150, ...: only x fails
        lines.append(f"{i}.5,oops,v1" if i % 100 == 0 else
                     f"{i},oops,v1" if i % 100 == 50 else f"{i},{i / 4},v{i % 7}")
    path.write_text("\n".join(lines) + "\n")
    summary = run_pipeline(features, str(path), str(out), beam_args=IN_MEMORY,
                           max_error_fraction=0.05)
    manifest = mf.verify_output(str(out))
    assert (manifest.rows_read, manifest.rows_failed, manifest.rows_written) == (N, 20, N - 20)
    assert summary.rows_read == N
    errors = _errors(out / "errors")
    # one line per failed row, naming every failing column
    assert sorted(e["source"] for e in errors) == sorted(
        f"{path}:{i + 2}" for i in range(N) if i % 50 == 0)
    both = [e for e in errors if e["source"] == f"{path}:2"][0]
    assert both["feature"] == "x, id"
    assert both["reason"] == "x: cannot parse b'oops' as float32; id: cannot parse b'0.5' as int64"


def _tfrecord(path, records) -> None:
    from shardforge.records import TFRecordWriter

    with TFRecordWriter(str(path)) as w:
        for data in records:
            w.write(data)


def test_one_bad_tfrecord_record_is_one_error_row(features, tmp_path):
    from shardforge.pipelines import run_pipeline
    from shardforge.records.example import encode_example
    from shardforge.records.spec import VarLen

    path, out = tmp_path / "mixed.tfrecord", tmp_path / "out"
    bad = set(range(7, N, 100))  # 1%: not a tf.Example at all
    _tfrecord(path, [b"\xff\xff\xff not an example" if i in bad else
                     encode_example({"id": [i], "x": [i / 4], "c": [b"v%d" % (i % 7)]})
                     for i in range(N)])
    run_pipeline(features, str(path), str(out), beam_args=IN_MEMORY, eval_fraction=0.0)
    manifest = mf.verify_output(str(out))
    assert (manifest.rows_read, manifest.rows_failed, manifest.rows_written) == (N, 10, N - 10)
    records = read_split(str(out), "train", {"id": VarLen("int64")})
    assert sorted(records["id"].values.tolist()) == sorted(set(range(N)) - bad)
    errors = _errors(out / "errors")
    assert len(errors) == 10 and all("malformed protobuf" in e["reason"] for e in errors)


def test_tfrecord_examples_of_the_wrong_type_fail_the_job(features, tmp_path):
    from shardforge.pipelines import run_pipeline
    from shardforge.pipelines.transforms import TooManyErrors
    from shardforge.records.example import encode_example

    path, out = tmp_path / "wrong.tfrecord", tmp_path / "out"
    _tfrecord(path, [encode_example({"id": [b"a"], "x": [b"b"], "c": [1]}) for _ in range(N)])
    with pytest.raises(TooManyErrors) as info:
        run_pipeline(features, str(path), str(out), beam_args=IN_MEMORY)
    assert (info.value.rows_failed, info.value.rows_read) == (N, N)
    errors = _errors(info.value.errors_dir)
    assert len(errors) == N
    assert {(e["feature"], e["reason"]) for e in errors} == {("x", "expected float32, got bytes")}


def test_a_lone_surrogate_in_jsonl_is_one_error_row(features, tmp_path):
    from shardforge.pipelines import run_pipeline

    path, out = tmp_path / "surrogate.jsonl", tmp_path / "out"
    with open(path, "w") as f:
        for i in range(200):
            c = "\\ud800" if i == 57 else f"v{i % 5}"  # valid JSON, but no text
            f.write(f'{{"id": {i}, "x": {i / 2}, "c": "{c}"}}\n')
    run_pipeline(features, str(path), str(out), beam_args=IN_MEMORY, max_error_fraction=0.01)
    manifest = mf.verify_output(str(out))
    assert (manifest.rows_read, manifest.rows_failed, manifest.rows_written) == (200, 1, 199)
    [error] = _errors(out / "errors")
    assert error["source"] == f"{path}:58" and "lone surrogate" in error["reason"]


IMAGE_FEATURES = """
import shardforge.features as sf

FEATURES = sf.FeatureSet([sf.image("img", max_pixels=56 * 56, source="path")],
                         label=sf.numeric("id", dtype="int64"))
"""


def test_image_paths_naming_a_fifo_or_a_device_fail_their_row(tmp_path):
    import PIL.Image

    PIL.Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "ok.png")
    os.mkfifo(tmp_path / "fifo.png")  # nobody writes to it: reading it would block forever
    (tmp_path / "features.py").write_text(IMAGE_FEATURES)
    rows = [{"id": i, "img": "ok.png"} for i in range(300)]
    rows[10]["img"], rows[20]["img"] = "fifo.png", "/dev/zero"
    with open(tmp_path / "images.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "shardforge.cli", "run", "--features", str(tmp_path / "features.py"),
         "--input", str(tmp_path / "images.jsonl"), "--output", str(out), "--quiet",
         "--max-error-fraction", "0.01", *IN_MEMORY],
        env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert mf.verify_output(str(out)).rows_written == 298
    reasons = {e["source"]: e["reason"] for e in _errors(out / "errors")}
    assert reasons == {
        f"{tmp_path}/images.jsonl:11": f"image path '{tmp_path}/fifo.png' is a FIFO, not a "
                                       "regular file",
        f"{tmp_path}/images.jsonl:21": "image path '/dev/zero' is a character device, not a "
                                       "regular file"}


def test_image_files_over_the_size_limit_are_refused_before_reading(tmp_path):
    import shardforge.features as sf
    from shardforge.features.image import image_bytes
    from shardforge.vision import DEFAULT_MAX_FILE_BYTES, ImageError

    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(DEFAULT_MAX_FILE_BYTES + 1)  # sparse: nothing to read, only a size
    with pytest.raises(ImageError, match=f"is {DEFAULT_MAX_FILE_BYTES + 1} bytes, more than "
                                         f"max_file_bytes={DEFAULT_MAX_FILE_BYTES}"):
        image_bytes(str(big))
    (tmp_path / "small.png").write_bytes(b"x" * 100)
    assert len(image_bytes(str(tmp_path / "small.png"), max_file_bytes=100)) == 100
    with pytest.raises(ImageError, match="max_file_bytes=99"):
        image_bytes(str(tmp_path / "small.png"), max_file_bytes=99)
    with pytest.raises(ValueError, match="max_file_bytes must be an integer >= 1"):
        sf.image("img", max_file_bytes=0)


SQUARE = [[0, 0], [0, 1], [1, 1], [1, 0], [0, 0]]


def test_geojson_coordinates_are_numbers_only(tmp_path):
    from shardforge.geometry import GeoJSONError, load_regions

    assert load_regions({"type": "Polygon", "coordinates": [SQUARE]})[0].polygons[0].area == 1
    for ring in ([[str(x), str(y)] for x, y in SQUARE], [[x, y, "0"] for x, y in SQUARE],
                 [[True, y] for _, y in SQUARE]):
        with pytest.raises(GeoJSONError, match="positions must be .lon, lat. number pairs"):
            load_regions({"type": "Polygon", "coordinates": [ring]})


def test_geojson_nested_too_deeply_is_a_geojson_error(tmp_path):
    import shardforge.features as sf
    from shardforge.geometry import GeoJSONError, load_regions

    path = tmp_path / "deep.geojson"
    path.write_text('{"type": "Polygon", "coordinates": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(GeoJSONError, match="deep.geojson: cannot read GeoJSON: .* nested"):
        load_regions(str(path))
    with pytest.raises(GeoJSONError, match="nested"):
        sf.geo_region(("lat", "lon"), str(path))
