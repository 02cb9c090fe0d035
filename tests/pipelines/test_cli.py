"""`shardforge run` (Beam flags pass through) and `shardforge stats` (table + stats.html)."""

import json
import os

import pytest

from shardforge.cli import main
from shardforge.examples.clicklog import write_csv
from tests.pipelines.helpers import CLICK_FEATURES, shard_paths

pytestmark = pytest.mark.xdist_group("pipelines-cli")


@pytest.fixture(scope="module")
def run_out(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    csv = str(d / "clicks.csv")
    write_csv(csv, 400, seed=1)
    out = str(d / "out")
    # --direct_running_mode / --direct_num_workers are Beam's flags, not ours
    rc = main(["run", "--features", CLICK_FEATURES, "--input", csv, "--output", out,
               "--num-shards", "1", "--compression", "gzip", "--eval-fraction", "0.25",
               "--direct_running_mode=in_memory", "--direct_num_workers=1"])
    assert rc == 0
    return csv, out


def test_run_writes_gzip_shards(run_out, capsys):
    from shardforge.records import read_records

    _, out = run_out
    for split in ("train", "eval"):
        (path,) = shard_paths(out, split)
        assert path.endswith("part-00000-of-00001.tfrecord.gz")
        assert len(list(read_records(path))) > 0
    with open(os.path.join(out, "stats.json")) as f:
        splits = json.load(f)["splits"]
    assert splits["train"]["records"] + splits["eval"]["records"] == 400
    assert 60 < splits["eval"]["records"] < 140


def test_run_refuses_to_overwrite_without_flag(run_out, capsys):
    csv, out = run_out
    rc = main(["run", "--features", CLICK_FEATURES, "--input", csv, "--output", out])
    assert rc == 2  # the user's mistake: shardforge.cli's exit-code rule
    assert "--overwrite" in capsys.readouterr().err


def test_run_names_missing_input(tmp_path, capsys):
    rc = main(["run", "--features", CLICK_FEATURES, "--input", str(tmp_path / "none*.csv"),
               "--output", str(tmp_path / "out")])
    assert rc == 2 and "no input files match" in capsys.readouterr().err


def test_stats_table_and_html(run_out, capsys):
    _, out = run_out
    assert main(["stats", out]) == 0
    text = capsys.readouterr().out
    assert "price" in text and "country" in text and "400 rows read" in text
    with open(os.path.join(out, "stats.html")) as f:
        page = f.read()
    with open(os.path.join(out, "stats.json")) as f:
        by_split = json.load(f)["by_split"]["train"]
    features = len(by_split["inputs"]) + len(by_split["outputs"])
    # a chart (inline SVG) in every feature's card
    assert page.count('<svg class="chart"') == page.count('<section class="card') == features
    assert 'id="inputs-price">' in page and "<th>train</th><th>eval</th>" in page


def test_help_imports_no_command_and_no_heavy_library():
    """`shardforge --help` lists every command without importing one (nor numba, Beam, torch):
    it answers at once."""
    import subprocess
    import sys

    from tests.pipelines.helpers import REPO

    heavy = "('numba', 'apache_beam', 'torch', 'pyarrow')"
    ours = "('shardforge.records', 'shardforge.pipelines.')"
    code = ("import sys\nfrom shardforge.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit as e:\n    assert e.code == 0\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy} "
            f"or m.startswith({ours})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=REPO), cwd="/", timeout=120)
    assert proc.returncode == 0, proc.stderr
    *help_text, imported = proc.stdout.strip().splitlines()
    assert imported == "[]"
    assert all(name in "\n".join(help_text) for name in ("run", "stats", "train", "inspect"))
