"""What a Dataflow run needs, checked offline: options validate, the graph converts to the
runner API proto with readable step names, the package stages with ``--setup_file``, and the
workers need nothing from this machine (the feature set travels as source)."""

import os
import shutil
import socket
import subprocess
import sys
import tarfile

import pytest
from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator

from shardforge.pipelines.options import make_options, make_pipeline
from tests.pipelines.helpers import CLICK_FEATURES, REPO

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
# --dry_run skips Beam's soft-delete check of the buckets, the one GCS call validation makes.
DATAFLOW = ["--runner", "DataflowRunner", "--project", "my-project", "--region", "us-central1",
            "--temp_location", "gs://my-bucket/tmp", "--setup_file", "./setup.py", "--dry_run=True"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail fast (instead of retrying for minutes) if anything reaches for Google Cloud."""
    real_getaddrinfo = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        if host not in LOCAL_HOSTS:
            raise OSError(f"network access attempted: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


def test_dataflow_options_validate():
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner

    assert PipelineOptionsValidator(make_options(DATAFLOW), DataflowRunner()).validate() == []
    bad = make_options(["--runner", "DataflowRunner", "--project", "my-project",
                        "--temp_location", "/local/tmp", "--dry_run=True"])
    errors = " ".join(PipelineOptionsValidator(bad, DataflowRunner()).validate())
    assert "temp_location" in errors and "region" in errors


def test_graph_converts_to_runner_api_without_local_state(tmp_path):
    from shardforge.pipelines import Preprocess

    features = tmp_path / "my_features.py"
    shutil.copy(CLICK_FEATURES, features)
    pipeline = make_pipeline(DATAFLOW)
    assert type(pipeline.runner).__name__ == "DataflowRunner"
    pipeline | "Preprocess" >> Preprocess(str(features), "gs://my-bucket/clicks/*.csv",
                                          "gs://my-bucket/out", num_shards=4)
    proto = pipeline.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    for step in ("ReadRaw", "Analyze", "Transform", "WriteShards", "DeadLetters", "Stats"):
        assert f"Preprocess/{step}" in names
    # Nothing in the job points at this machine's files: the features file travels as text.
    assert str(tmp_path).encode() not in proto.SerializeToString()


def test_feature_set_loads_on_a_worker_without_the_file(tmp_path):
    from apache_beam.internal import pickler

    from shardforge.pipelines.transforms import FeatureSetRef

    features = tmp_path / "my_features.py"
    shutil.copy(CLICK_FEATURES, features)
    payload = tmp_path / "ref.pkl"
    payload.write_bytes(pickler.dumps(FeatureSetRef(str(features))))
    features.unlink()
    # each DoFn and stage unpickles its own ref: the file's module runs once per process
    code = ("import sys; from apache_beam.internal import pickler; "
            "data = open(sys.argv[1], 'rb').read(); "
            "ref, again = pickler.loads(data), pickler.loads(data); "
            "print(sorted(ref.get().input_spec()), ref.get() is again.get())")
    proc = subprocess.run([sys.executable, "-c", code, str(payload)], capture_output=True,
                          text=True, cwd="/", timeout=120,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "'price'" in proc.stdout and proc.stdout.strip().endswith("True")


def test_package_stages_with_setup_file(tmp_path):
    """Beam's own stager builds the sdist Dataflow workers install (``--setup_file``)."""
    from apache_beam.runners.portability.stager import Stager

    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), src)
    shutil.copytree(os.path.join(REPO, "shardforge"), src / "shardforge",
                    ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    dist.mkdir()
    tarball = Stager._build_setup_package(str(src / "setup.py"), str(dist))
    with tarfile.open(tarball) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    for module in ("shardforge/pipelines/transforms.py", "shardforge/features/feature_set.py",
                   "shardforge/records/example.py", "shardforge/protos/schema_pb2.py"):
        assert module in members
