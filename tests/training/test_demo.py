"""`shardforge demo --quick` runs every step end to end (Beam, LM, tabular) and learns."""

import json

from shardforge.cli import main


def test_demo_quick(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for text in ("1/4 Beam job", "2/4 train", "3/4 click-log", "4/4 summary",
                 "LM eval loss", "LM packing efficiency", "click-log eval AUC", "shardforge train"):
        assert text in out
    data = tmp_path / "stdlib" / "data"
    assert (data / "schema.pbtxt").exists() and (data / "stats.json").exists()
    assert list((data / "train").glob("part-*.tfrecord")) and (data / "errors").exists()
    schema = (data / "schema.pbtxt").read_text()
    assert all(name in schema for name in ('"tokens"', '"module"', '"size_bucket"'))
    rows = [json.loads(line) for line in
            (tmp_path / "stdlib" / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert evals[-1] < 0.8 * evals[0]
    assert (tmp_path / "stdlib" / "run" / "curves.png").exists()
    assert (tmp_path / "clicklog" / "run" / "metrics.jsonl").exists()


def test_demo_rejects_unknown_steps(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "lm,bogus"]) == 2
    assert "bogus" in capsys.readouterr().out


def test_stdlib_features_derive_module_and_size_bucket():
    import sysconfig

    import numpy as np

    from shardforge.demo import SIZE_BUCKETS, stdlib_features

    root = sysconfig.get_paths()["stdlib"]
    fs = stdlib_features()
    raw = {"text": ["x" * 100, "y" * 6000, "z" * 50_000, "w" * 3000],
           "path": [f"{root}/email/parser.py", f"{root}/os.py", f"{root}/email/utils.py",
                    f"{root}/json/decoder.py"]}
    batch, errors = fs.coerce(raw)
    assert not errors
    state = fs.fit([batch])
    out = fs.transform(batch, state)
    assert out["tokens"].row_lengths().tolist() == [100, 6000, 50_000, 3000]
    assert out["tokens"][0].tolist() == [ord("x")] * 100
    # vocabulary learned by frequency: email (2) first, then the others
    assert out["module"][0] == out["module"][2] == 0
    assert len(set(out["module"].tolist())) == 3
    assert out["size_bucket"].tolist() == list(np.searchsorted(SIZE_BUCKETS,
                                                               [100, 6000, 50_000, 3000],
                                                               side="right"))
