"""`shardforge demo --quick` runs every step end to end (Beam, LM, tabular) and learns."""

import json
import shlex
from pathlib import Path

from shardforge.cli import main, program

REPO = Path(__file__).resolve().parents[2]


def _decoded_splits(data):
    import shardforge.features as sf
    from shardforge.records import decode_batch_reference, read_records

    spec = sf.load_schema(str(data)).spec
    out = {}
    for split in ("train", "eval"):
        batch = decode_batch_reference(
            list(read_records(sorted(str(p) for p in (data / split).glob("part-*.tfrecord")))),
            spec)
        out[split] = sorted((bytes(t.astype("uint8")), int(m), int(s)) for t, m, s in zip(
            batch["tokens"], batch["package"], batch["size_bucket"]))
    return out


def test_demo_quick(tmp_path, capsys):
    """Quick mode runs fixed step counts (no clock involved), so it learns on any machine."""
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for text in ("1/4 Beam job", "2/4 train", "3/4 click-log", "4/4 summary",
                 "LM eval loss", "LM packing efficiency", "click-log eval AUC", " train --config"):
        assert text in out
    data = tmp_path / "stdlib" / "data"
    assert (data / "schema.pbtxt").exists() and (data / "stats.json").exists()
    assert list((data / "train").glob("part-*.tfrecord")) and (data / "errors").exists()
    schema = (data / "schema.pbtxt").read_text()
    assert all(name in schema for name in ('"tokens"', '"package"', '"size_bucket"'))
    rows = [json.loads(line) for line in
            (tmp_path / "stdlib" / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert evals[-1] < 0.8 * evals[0]
    assert (tmp_path / "stdlib" / "run" / "curves.png").exists()
    assert (tmp_path / "clicklog" / "run" / "metrics.jsonl").exists()

    # the printed Beam command reproduces the stdlib step: same records in each split; it names
    # this environment's shardforge (the wheel test runs the printed commands in a fresh shell)
    command = next(line.strip() for line in out.splitlines()
                   if " run --features" in line and "stdlib_features.py" in line)
    argv = shlex.split(command)
    assert argv[:argv.index("run")] == program()
    argv = argv[argv.index("run"):]
    again = tmp_path / "again"
    argv[argv.index("--output") + 1] = str(again)
    assert main(argv) == 0
    assert _decoded_splits(again) == _decoded_splits(data)


def test_demo_rejects_unknown_steps(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "lm,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_stdlib_features_derive_package_and_size_bucket():
    import numpy as np

    import shardforge.features as sf

    fs = sf.load_feature_set(str(REPO / "shardforge" / "examples" / "stdlib_features.py"))
    raw = {"text": ["x" * 100, "y" * 6000, "z" * 50_000, "w" * 3000],
           "path": ["/lib/python3/email/parser.py", "/lib/python3/os.py",
                    "/lib/python3/email/utils.py", "C:\\py\\json\\decoder.py"]}
    batch, errors = fs.coerce(raw)
    assert not errors
    state = fs.fit([batch])
    out = fs.transform(batch, state)
    assert out["tokens"].row_lengths().tolist() == [100, 6000, 50_000, 3000]
    assert out["tokens"][0].tolist() == [ord("x")] * 100
    # vocabulary learned by frequency: email (2) first, then python3 and json
    assert out["package"][0] == out["package"][2] == 0
    assert len(set(out["package"].tolist())) == 3
    assert out["size_bucket"].tolist() == list(np.searchsorted(
        [2_000, 5_000, 10_000, 20_000], [100, 6000, 50_000, 3000], side="right"))
