"""A job writing ``s3://`` through Beam's S3 filesystem (its endpoint options), against moto:
committed by its manifest, then stats / inspect / train from the bucket."""

import os
import subprocess
import sys

import pytest

from shardforge.examples.clicklog import write_csv
from shardforge.records import manifest as mf
from tests.pipelines.helpers import CLICK_FEATURES, IN_MEMORY

pytestmark = [pytest.mark.xdist_group("remote"), pytest.mark.slow]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(store, *args):
    env = {**os.environ, **store.env, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "shardforge.cli", *args], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return run.stdout


def test_a_job_writes_s3_then_stats_inspect_and_train_read_it(s3, tmp_path):
    csv = str(tmp_path / "clicks.csv")
    write_csv(csv, 300, seed=4)
    out = s3.url("out")
    # as docs/object_storage.md writes it: Beam's S3 options after shardforge's own
    stdout = cli(s3, "run", "--features", CLICK_FEATURES, "--input", csv, "--output", out,
                 "--num-shards", "2", *IN_MEMORY, f"--s3_endpoint_url={s3.endpoint}",
                 "--s3_access_key_id=testing", "--s3_secret_access_key=testing",
                 "--s3_region_name=us-east-1")
    assert f"{out}/manifest.json" in stdout
    m = mf.verify_output(out, checksums=True)
    assert {"stats.html", "schema_tfmd.pbtxt", "stats_tfmd.pbtxt"} <= {f.path for f in m.files}
    assert f"report: {out}/stats.html" in cli(s3, "stats", out)
    assert str(m.splits["train"]["records"]) in cli(s3, "inspect", f"{out}/train")
    stdout = cli(s3, "train", "--config", "tabular", "--data", out, "--out",
                 str(tmp_path / "run"), "batch_size=32", "max_steps=2", "warmup_steps=1",
                 "eval_every=2", "eval_batches=1", "log_every=1", "ckpt_every=0", "plot=false",
                 "threads=1", "device=cpu")
    assert "done: 2 steps" in stdout


@pytest.mark.parametrize("scheme, env", [
    ("gs", {"GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/key.json",
            "STORAGE_EMULATOR_HOST": ""}),
    ("s3", {"AWS_PROFILE": "no-such-profile", "AWS_ACCESS_KEY_ID": "",
            "AWS_SECRET_ACCESS_KEY": "", "AWS_EC2_METADATA_DISABLED": "true"}),
])
def test_a_job_without_credentials_that_work_fails_first_saying_what_to_set(
        scheme, env, tmp_path):
    csv = str(tmp_path / "clicks.csv")
    write_csv(csv, 20, seed=4)
    run = subprocess.run(
        [sys.executable, "-m", "shardforge.cli", "run", "--features", CLICK_FEATURES,
         "--input", csv, "--output", f"{scheme}://bucket/out"],
        env={**os.environ, "PYTHONPATH": ROOT, **env}, capture_output=True, text=True,
        timeout=300)
    assert run.returncode != 0
    said = run.stdout + run.stderr
    assert f"{scheme}://bucket/out: no credentials that work" in said, said[-2000:]
    assert ("GOOGLE_APPLICATION_CREDENTIALS" if scheme == "gs" else "AWS_PROFILE") in said
    assert "Traceback" not in said
