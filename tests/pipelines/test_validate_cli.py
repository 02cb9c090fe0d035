"""`shardforge validate` and `shardforge run --validate-against`, as the docs show them: a job
with prices in cents fails before publishing (or warns and publishes, recording its anomalies);
serving rows are checked for skew against the output."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from shardforge.cli import main
from shardforge.examples import clicklog
from shardforge.records.manifest import MANIFEST, read_manifest
from tests.pipelines.helpers import CLICK_FEATURES

pytestmark = pytest.mark.xdist_group("pipelines-validate")

N = 3000
BEAM = ["--direct_running_mode=in_memory", "--direct_num_workers=1", "--quiet"]


def _run(csv, out, *flags):
    return main(["run", "--features", CLICK_FEATURES, "--input", csv, "--output", out,
                 "--num-shards", "1", *flags, *BEAM])


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    d = tmp_path_factory.mktemp("validate")
    ref_csv = clicklog.write_csv(str(d / "ref.csv"), N, seed=0)
    cols = clicklog.generate_clicklog(N, seed=1)
    cols["price"] = cols["price"] * 100  # the feed starts sending cents
    new_csv = clicklog.columns_to_csv(str(d / "cents.csv"), cols)
    assert _run(ref_csv, str(d / "ref")) == 0
    return d, str(d / "ref"), new_csv


def test_run_fails_on_anomalies_and_publishes_nothing(jobs, capsys):
    d, ref, new_csv = jobs
    out = str(d / "failed")
    assert _run(new_csv, out, "--validate-against", ref) == 1
    err = capsys.readouterr().err
    assert "price (input): COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH" in err
    assert "not published" in err
    assert not os.path.exists(os.path.join(out, MANIFEST))


def test_run_warns_publishes_and_records_the_anomalies(jobs, capsys):
    d, ref, new_csv = jobs
    out = str(d / "warned")
    assert _run(new_csv, out, "--validate-against", ref, "--on-anomaly", "warn") == 0
    assert "anomaly: price (input)" in capsys.readouterr().out
    manifest = read_manifest(out)
    assert {"anomalies.json", "stats_tfmd.pbtxt"} <= {f.path for f in manifest.files}
    with open(os.path.join(out, "anomalies.json")) as f:
        doc = json.load(f)
    flagged = {a["feature"] for a in doc["anomalies"]}
    assert flagged == {"price"} and not doc["clean"]
    assert manifest.extra["validation"] == {"against": ref, "anomalies": len(doc["anomalies"])}
    with open(os.path.join(out, "stats.html")) as f:
        page = f.read()
    assert f"{len(doc['anomalies'])} anomalies" in page
    assert '<section class="card flagged" id="inputs-price">' in page
    # `shardforge stats --html` draws the recorded anomalies too
    assert main(["stats", out, "--html", str(d / "again.html")]) == 0
    with open(d / "again.html") as f:
        assert '<section class="card flagged" id="inputs-price">' in f.read()

    # the documented command, in a fresh process: exit 1 and anomalies.json
    report = str(d / "anomalies.json")
    page = str(d / "anomalies.html")
    proc = subprocess.run([sys.executable, "-m", "shardforge", "validate", out, "--against", ref,
                           "--anomalies", report, "--html", page], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "price (input): FLOAT_TYPE_BIG_FLOAT" in proc.stdout
    with open(report) as f:
        assert {a["feature"] for a in json.load(f)["anomalies"]} == {"price"}
    with open(page) as f:  # one card, the new, reference and new eval prices overlaid
        cards = re.findall(r"<section.*?</section>", f.read())
    assert len(cards) == 1 and "price (input)" in cards[0] and '<svg class="chart"' in cards[0]
    assert all(f">{name}</text>" in cards[0] for name in ("new", "reference", "new eval"))
    # against the TFMD schema the job wrote for its outputs: clean
    assert main(["validate", out, "--against", os.path.join(out, "schema_tfmd.pbtxt")]) == 0
    # against itself: clean; a missing reference: a usage error
    assert main(["validate", ref, "--against", ref]) == 0
    assert main(["validate", out, "--against", str(d / "nowhere")]) == 2


def _serving_rows(path, seed, price_factor=1.0):
    cols = clicklog.generate_clicklog(1500, seed=seed)
    with open(path, "w") as f:
        for i in range(1500):
            price = cols["price"][i] * price_factor
            row = {"price": None if np.isnan(price) else price, "age": int(cols["age"][i]),
                   **{k: cols[k][i].decode() for k in ("country", "item_id", "query")},
                   "lat": cols["lat"][i], "lon": cols["lon"][i]}  # no label at serving time
            f.write(json.dumps(row) + "\n")
    return path


def test_serving_rows_checked_for_skew(jobs, capsys):
    d, ref, _ = jobs
    same = _serving_rows(str(d / "serving.jsonl"), seed=2)
    rc = main(["validate", same, "--against", ref, "--features", CLICK_FEATURES])
    assert rc == 0, capsys.readouterr().out
    assert "no anomalies" in capsys.readouterr().out
    cents = _serving_rows(str(d / "serving_cents.jsonl"), seed=2, price_factor=100)
    assert main(["validate", cents, "--against", ref, "--features", CLICK_FEATURES,
                 "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    # transformed with the training state, the z-scored output shifts too
    assert {(a["section"], a["feature"]) for a in doc["anomalies"]} == {
        ("inputs", "price"), ("outputs", "price")}
    assert main(["validate", same, "--against", ref]) == 2  # rows need the feature file
