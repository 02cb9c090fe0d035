"""The same job through Beam's portable Job API, the way a Flink or Spark cluster runs a Python
Beam job: Beam's Python job service and an external SDK worker pool, each a separate process,
on loopback ports. Its outputs must be byte-identical to the default runner's."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from shardforge.examples.clicklog import write_csv
from shardforge.records import manifest as mf
from tests.pipelines.helpers import CLICK_FEATURES, MULTI_PROCESS, REPO

pytestmark = [pytest.mark.xdist_group("pipelines-portable"), pytest.mark.slow]
LOCAL = ("127.0.0.1", "localhost", "::1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """``(job_port, pool_port)`` of a job service and a worker pool started as processes."""
    d = tmp_path_factory.mktemp("portable")
    # The pool starts workers as `python -m ...`: this interpreter first on PATH, and our code
    # importable, as a cluster's worker image would have it.
    env = dict(os.environ, PYTHONPATH=REPO,
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    port_file = d / "job_port"
    pool_port = free_port()
    procs = [
        subprocess.Popen([sys.executable, "-m",
                          "apache_beam.runners.portability.local_job_service_main",
                          "--port", "0", "--port_file", str(port_file)],
                         env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=open(d / "job_service.log", "w")),
        subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                          "--service_port", str(pool_port)],
                         env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=open(d / "worker_pool.log", "w")),
    ]
    try:
        deadline = time.monotonic() + 120
        while not (port_file.exists() and port_file.read_text().strip()):
            assert time.monotonic() < deadline, (d / "job_service.log").read_text()[-2000:]
            assert all(p.poll() is None for p in procs), "a service exited at start-up"
            time.sleep(0.2)
        yield int(port_file.read_text()), pool_port
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.fixture
def loopback_only(monkeypatch):
    real_connect = socket.socket.connect

    def guarded(self, address):
        if isinstance(address, tuple) and address[0] not in LOCAL:
            raise OSError(f"network access attempted: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def files(root):
    out = {}
    for dp, dns, ns in os.walk(root):
        dns[:] = [d for d in dns if d != mf.STATE_DIR]
        for n in ns:
            with open(os.path.join(dp, n), "rb") as f:
                out[os.path.relpath(os.path.join(dp, n), root)] = f.read()
    return out


def test_portable_runner_with_external_workers_matches_the_default_runner(
        services, loopback_only, tmp_path):
    from shardforge.pipelines import run_pipeline

    job_port, pool_port = services
    csv = str(tmp_path / "clicks.csv")
    write_csv(csv, 3000, seed=8)
    portable = ["--runner", "PortableRunner", "--job_endpoint", f"localhost:{job_port}",
                "--environment_type", "EXTERNAL", "--environment_config",
                f"localhost:{pool_port}"]
    kw = dict(num_shards=3, compression="gzip", command="shardforge run (test)")
    a = run_pipeline(CLICK_FEATURES, csv, str(tmp_path / "default"), beam_args=MULTI_PROCESS,
                     **kw)
    b = run_pipeline(CLICK_FEATURES, csv, str(tmp_path / "portable"), beam_args=portable, **kw)
    assert b.runner == "PortableRunner" and a.splits == b.splits
    assert sum(b.splits.values()) == 3000
    fa, fb = files(a.output), files(b.output)
    manifest_a, manifest_b = mf.verify_output(a.output), mf.verify_output(b.output)
    assert set(fa) == set(fb)
    different = sorted(p for p in fa if fa[p] != fb[p])
    # The manifest differs in its creation time, job id and runner only; every file it lists
    # (shards, indexes, schema, stats, errors) is byte-identical.
    assert different == ["manifest.json"]
    assert manifest_a.files == manifest_b.files
