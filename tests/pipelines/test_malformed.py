"""The malformed-input corpus: every bad row goes to errors/ or the job fails with one message.

The corpus is generated here (``corpus`` fixture), one file per case of issue 11 and a few more.
Every file holds rows ``id, x, c`` whose good values the generator knows; one Beam job over the
whole corpus must, for every file, write ``records + error rows == rows in the file`` and write
the good rows' values exactly.
"""

import gzip
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.pipelines.helpers import IN_MEMORY, read_split

pytestmark = pytest.mark.xdist_group("pipelines-malformed")

FEATURES = """
import shardforge.features as sf

FEATURES = sf.FeatureSet(
    [sf.numeric("x", default=0.0), sf.categorical_vocab("c", num_oov_buckets=1)],
    label=sf.numeric("id", dtype="int64"),
)
"""
HUGE = 17 << 20  # one field larger than the readers' 16 MiB row limit


class Case:
    """One corpus file: its rows (``id`` → ``(x, c)`` of the good ones) and how many are bad."""

    def __init__(self, name: str, rows: int, good: dict, bad: int) -> None:
        self.name, self.rows, self.good, self.bad = name, rows, good, bad


def _good_rows(base: int, n: int, skip=()):
    return {base + i: (float(np.float32(i * 0.25 - 3)), f"v{i % 7}") for i in range(n)
            if i not in skip}


def _csv_lines(good: dict) -> list[str]:
    return [f"{i},{x!r},{c}" for i, (x, c) in good.items()]


def _write(path, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    with open(path, "wb") as f:
        f.write(data)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("malformed")
    (d / "features.py").write_text(FEATURES)
    src = d / "corpus"
    src.mkdir()
    cases = []

    # A stray quote in row 101 of 1,000 that a second stray quote in row 900 closes: the
    # quoted field swallows rows 101-900, every one of them is reported.
    good = _good_rows(10_000, 1000)
    lines = _csv_lines(good)
    lines[100] = lines[100].replace(",v", ',"v', 1)
    lines[899] = lines[899] + '"'
    _write(src / "stray_quote.csv", "id,x,c\n" + "\n".join(lines) + "\n")
    cases.append(Case("stray_quote.csv", 1000, {k: v for j, (k, v) in enumerate(good.items())
                                                if not 100 <= j <= 899}, 800))

    # A stray quote nothing closes: that row is reported, reading resumes on the next line.
    good = _good_rows(20_000, 300)
    lines = _csv_lines(good)
    lines[150] = lines[150].replace(",v", ',"v', 1)
    _write(src / "unclosed_quote.csv", "id,x,c\n" + "\n".join(lines) + "\n")
    cases.append(Case("unclosed_quote.csv", 300, {k: v for j, (k, v) in enumerate(good.items())
                                                  if j != 150}, 1))

    # A UTF-8 BOM before the header; CRLF line ends.
    good = _good_rows(30_000, 50)
    _write(src / "bom.csv", b"\xef\xbb\xbf" + ("id,x,c\r\n" + "\r\n".join(_csv_lines(good))
                                              + "\r\n").encode())
    cases.append(Case("bom.csv", 50, good, 0))

    # Non-finite numbers: inf, -inf, 1e39 (beyond float32), Infinity; and a NaN, which is missing.
    good = _good_rows(40_000, 40)
    lines = _csv_lines(good)
    for j, text in ((3, "inf"), (7, "-inf"), (11, "1e39"), (13, "Infinity"), (17, "-1e300")):
        i = 40_000 + j
        lines[j] = f"{i},{text},{good.pop(i)[1]}"
    nan_id = 40_000 + 20
    lines[20] = f"{nan_id},nan,{good[nan_id][1]}"
    good[nan_id] = (0.0, good[nan_id][1])  # missing: the default
    _write(src / "nonfinite.csv", "id,x,c\n" + "\n".join(lines) + "\n")
    cases.append(Case("nonfinite.csv", 40, good, 5))

    # Non-UTF-8 bytes: in a bytes column they are the value, in a number column an error.
    good = _good_rows(50_000, 30)
    body = b"id,x,c\n" + b"\n".join(ln.encode() for ln in _csv_lines(good)) + b"\n"
    body += b"50030,1.0,caf\xe9\n50031,1\xff5,v1\n"
    good[50_030] = (1.0, b"caf\xe9")
    _write(src / "bad_utf8.csv", body)
    cases.append(Case("bad_utf8.csv", 32, good, 1))

    # A field larger than the row limit, a row with too many fields, one with too few, blank
    # lines (not rows), and a legit quoted newline.
    good = _good_rows(60_000, 20)
    lines = _csv_lines(good)
    lines[5] = f"60005,1.0,{'z' * HUGE}"
    lines[8] = "60008,1.0,v1,extra"
    lines[9] = "60009,1.0"
    lines[12] = '60012,2.5,"two\nlines"'
    for i in (60_005, 60_008, 60_009):
        good.pop(i)
    good[60_012] = (2.5, "two\nlines")
    _write(src / "rows.csv", "id,x,c\n\n" + "\n".join(lines[:10]) + "\n\n" + "\n".join(lines[10:]))
    cases.append(Case("rows.csv", 20, good, 3))

    # The same kind of quoted newlines, gzip-compressed.
    good = _good_rows(70_000, 25)
    good[70_003] = (good[70_003][0], "a\nb,c")
    lines = [f'{i},{x!r},"{c}"' for i, (x, c) in good.items()]
    with gzip.open(src / "quoted.csv.gz", "wt") as f:
        f.write("id,x,c\n" + "\n".join(lines) + "\n")
    cases.append(Case("quoted.csv.gz", 25, good, 0))

    # JSONL: bad JSON, a non-object, a list where a scalar is declared, a string that is not
    # a number, JSON Infinity, a non-UTF-8 line, nesting too deep for Python's json.
    good = _good_rows(80_000, 60)
    lines = [json.dumps({"id": i, "x": x, "c": c}).encode() for i, (x, c) in good.items()]
    bad = {
        4: b'{"id": 80004, "x": 1.0, "c": ',
        9: b"[1, 2, 3]",
        14: b'{"id": 80014, "x": [1.0, 2.0], "c": "v1"}',
        19: b'{"id": 80019, "x": "abc", "c": "v1"}',
        24: b'{"id": 80024, "x": Infinity, "c": "v1"}',
        29: b'{"id": 80029, "x": 1.0, "c": "caf\xe9"}',
        34: b'{"id": 80034, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b', "c": "v1"}',
    }
    for j, line in bad.items():
        lines[j] = line
        good.pop(80_000 + j)
    _write(src / "lines.jsonl", b"\n".join(lines) + b"\n")
    cases.append(Case("lines.jsonl", 60, good, len(bad)))

    # Parquet: a list where a scalar is declared, inf; and a truncated file (one file error).
    good = _good_rows(90_000, 30)
    ids = list(good)
    xs = [[good[i][0]] for i in ids]
    xs[4] = [1.0, 2.0]
    xs[6] = [float("inf")]
    for j in (4, 6):
        good.pop(ids[j])
    table = pa.table({"id": ids, "x": pa.array(xs, pa.list_(pa.float64())),
                      "c": [v for _, v in (_good_rows(90_000, 30)).values()]})
    pq.write_table(table, src / "lists.parquet")
    cases.append(Case("lists.parquet", 30, good, 2))
    whole = pa.table({"id": [1, 2, 3], "x": [1.0, 2.0, 3.0], "c": ["a", "b", "c"]})
    pq.write_table(whole, d / "whole.parquet")
    data = (d / "whole.parquet").read_bytes()
    _write(src / "truncated.parquet", data[: len(data) // 2])
    cases.append(Case("truncated.parquet", 1, {}, 1))  # the file counts as one failed row

    # TFRecord with a record whose data checksum fails.
    from shardforge.records import TFRecordWriter, encode_example

    good = _good_rows(100_000, 20)
    payloads = [encode_example({"id": [i], "x": [x], "c": [c.encode()]})
                for i, (x, c) in good.items()]
    with TFRecordWriter(str(src / "crc.tfrecord")) as w:
        for p in payloads:
            w.write(p)
    raw = bytearray((src / "crc.tfrecord").read_bytes())
    at = sum(len(p) + 16 for p in payloads[:7]) + 12 + 3  # a byte inside record 7's data
    raw[at] ^= 0xFF
    _write(src / "crc.tfrecord", bytes(raw))
    good.pop(100_007)
    cases.append(Case("crc.tfrecord", 20, good, 1))
    return d, cases


@pytest.fixture(scope="module")
def job(corpus):
    from shardforge.pipelines import run_pipeline

    d, cases = corpus
    summary = run_pipeline(str(d / "features.py"), str(d / "corpus" / "*"), str(d / "out"),
                           eval_fraction=0.0, max_error_fraction=1.0, beam_args=IN_MEMORY)
    errors = [json.loads(line) for name in os.listdir(summary.errors_dir)
              for line in open(os.path.join(summary.errors_dir, name))]
    return summary, errors


def _file_of(source: str) -> str:
    name = os.path.basename(source)
    for sep in (":", "@"):
        name = name.split(sep, 1)[0]
    return name


def _records(corpus, summary):
    import shardforge.features as sf

    d, _ = corpus
    state = sf.TransformState.load(summary.schema)
    fs = sf.load_feature_set(str(d / "features.py"))
    out = read_split(summary.output, "train", fs.output_spec(state))
    vocab = list(state.columns["c"]["vocab"].values)
    return out, vocab


def test_every_row_is_a_record_or_an_error(corpus, job):
    _, cases = corpus
    summary, errors = job
    out, _ = _records(corpus, summary)
    ids = out["id"].ravel().tolist()
    assert len(ids) == len(set(ids))
    failed: dict[str, set] = {}
    for e in errors:
        failed.setdefault(_file_of(e["source"]), set()).add(e["source"])
    for case in cases:
        written = [i for i in ids if any(i in c.good for c in cases if c is case)]
        assert len(written) == len(case.good), case.name
        assert len(failed.get(case.name, ())) == case.bad, (case.name, failed.get(case.name))
        assert len(written) + len(failed.get(case.name, ())) == case.rows, case.name
    assert summary.rows_read == sum(c.rows for c in cases)
    assert summary.errors == sum(c.bad for c in cases)


def test_good_rows_values_are_exact(corpus, job):
    _, cases = corpus
    summary, _ = job
    out, vocab = _records(corpus, summary)
    expected = {i: v for c in cases for i, v in c.good.items()}
    xs = out["x"].ravel()
    cs = out["c"].ravel()
    for k, i in enumerate(out["id"].ravel().tolist()):
        x, c = expected[i]
        assert xs[k] == np.float32(x), i
        c = c if isinstance(c, bytes) else c.encode()
        assert cs[k] == (vocab.index(c) if c in vocab else len(vocab)), i


def test_errors_name_file_line_and_reason(corpus, job):
    d, _ = corpus
    _, errors = job
    by_source = {e["source"]: e for e in errors}
    src = str(d / "corpus")
    stray = [by_source[f"{src}/stray_quote.csv:{line}"] for line in (102, 500, 901)]
    assert all("stray quote" in e["reason"] for e in stray)
    assert stray[1]["value"].startswith("10498,")  # the swallowed line itself
    assert "stray quote" in by_source[f"{src}/unclosed_quote.csv:152"]["reason"]
    assert "non-finite" in by_source[f"{src}/nonfinite.csv:5"]["reason"]
    assert by_source[f"{src}/nonfinite.csv:5"]["feature"] == "x"
    assert "cannot parse" in by_source[f"{src}/bad_utf8.csv:33"]["reason"]
    # rows.csv: header, blank line, rows 1-10 on lines 3-12, blank line, the rest
    assert "larger than" in by_source[f"{src}/rows.csv:8"]["reason"]
    assert len(by_source[f"{src}/rows.csv:8"]["value"]) <= 200
    assert "expected 3 fields" in by_source[f"{src}/rows.csv:11"]["reason"]
    assert "expected 3 fields" in by_source[f"{src}/rows.csv:12"]["reason"]
    jsonl = {k: by_source[f"{src}/lines.jsonl:{k + 1}"]["reason"] for k in (4, 9, 14, 19, 24,
                                                                          29, 34)}
    assert jsonl[4].startswith("invalid JSON") and "JSON object" in jsonl[9]
    assert "list" in jsonl[14] and "cannot parse" in jsonl[19]
    assert "non-finite" in jsonl[24] and "UTF-8" in jsonl[29] and "deep" in jsonl[34]
    truncated = [e for e in errors if e["source"] == f"{src}/truncated.parquet"]
    assert len(truncated) == 1 and "Parquet" in truncated[0]["reason"]
    crc = [e for e in errors if e["source"].startswith(f"{src}/crc.tfrecord@")]
    assert len(crc) == 1 and "checksum" in crc[0]["reason"]


def test_non_finite_values_never_reach_the_state(corpus, tmp_path):
    import shardforge.features as sf
    from shardforge.pipelines import run_pipeline

    d, _ = corpus
    features = tmp_path / "features.py"
    features.write_text("import shardforge.features as sf\nFEATURES = sf.FeatureSet("
                        "[sf.numeric('x', default=0.0, normalize='zscore')])\n")
    for policy, errors in (("error", 5), ("missing", 0)):
        s = run_pipeline(str(features), str(d / "corpus" / "nonfinite.csv"),
                         str(tmp_path / policy), eval_fraction=0.0, max_error_fraction=0.5,
                         non_finite=policy, beam_args=IN_MEMORY)
        assert s.errors == errors and s.splits["train"] == 40 - errors
        mean = sf.TransformState.load(s.schema).columns["x"]["stats"].mean
        assert np.isfinite(mean)
        x = read_split(s.output, "train", sf.load_feature_set(str(features)).output_spec(
            sf.TransformState.load(s.schema)))["x"]
        assert np.isfinite(x).all()


def test_declared_columns_missing_from_a_header_fail_before_the_job(corpus, tmp_path):
    from shardforge.pipelines import run_pipeline
    from shardforge.pipelines.readers import MissingColumnsError

    d, _ = corpus
    csv = tmp_path / "typo.csv"
    csv.write_text("id,prcie,c\n1,2.0,a\n")
    features = tmp_path / "features.py"
    features.write_text("import shardforge.features as sf\nFEATURES = sf.FeatureSet("
                        "[sf.numeric('price', default=0.0), sf.categorical_vocab('c')])\n")
    out = tmp_path / "out"
    with pytest.raises(MissingColumnsError, match=r"typo\.csv has no column 'price' "
                                                  r"\(closest: 'prcie'\)"):
        run_pipeline(str(features), str(csv), str(out), beam_args=IN_MEMORY)
    assert not (out / "train").exists()
    pq.write_table(pa.table({"id": [1]}), tmp_path / "t.parquet")
    with pytest.raises(MissingColumnsError, match=r"t\.parquet has no column 'c'"):
        run_pipeline(str(features), str(tmp_path / "t.parquet"), str(out), beam_args=IN_MEMORY)
    # an explicit opt-out: the column may be absent, its rows get the default
    s = run_pipeline(str(features), str(csv), str(out), absent_ok=["price"], eval_fraction=0.0,
                     beam_args=IN_MEMORY)
    assert s.splits == {"train": 1} and s.errors == 0
