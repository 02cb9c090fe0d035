"""The default runner is offline (never Prism, never a download) and uses worker processes."""

import subprocess
import sys
import textwrap

from apache_beam.options.pipeline_options import DirectOptions

from shardforge.pipelines.options import make_options

GUARDED_RUN = textwrap.dedent("""
    import json, os, socket, sys

    LOCAL = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
    real_connect = socket.socket.connect

    def guarded(self, address):
        if isinstance(address, tuple) and address[0] not in LOCAL:
            raise OSError(f"network access attempted: {address}")
        return real_connect(self, address)

    socket.socket.connect = guarded

    import apache_beam as beam
    from shardforge.pipelines.options import make_pipeline

    out = sys.argv[1]
    p = make_pipeline([])
    (p | beam.Create(range(64)) | beam.Reshuffle()
       | beam.Map(lambda x: os.getpid()) | beam.Distinct()
       | beam.combiners.ToList()
       | beam.Map(lambda pids: open(out, "w").write(json.dumps(pids))))
    p.run().wait_until_finish()
    print(json.dumps({"runner": type(p.runner).__name__, "launcher": os.getpid(),
                      "prism": any("prism" in m for m in sys.modules)}))
""")


def test_default_runner_is_offline_multiprocess(tmp_path):
    pids_file = tmp_path / "pids.json"
    proc = subprocess.run([sys.executable, "-c", GUARDED_RUN, str(pids_file)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["runner"] == "FnApiRunner"
    assert not report["prism"], "the Prism runner (which downloads a binary) was loaded"
    worker_pids = json.loads(pids_file.read_text())
    # the work ran in SDK worker processes, so everything crossed a pickle boundary
    assert report["launcher"] not in worker_pids


def test_local_defaults_and_pass_through():
    opts = make_options([])
    assert opts.view_as(DirectOptions).direct_running_mode == "multi_processing"
    assert opts.view_as(DirectOptions).direct_num_workers == 2
    opts = make_options(["--direct_num_workers=3", "--direct_running_mode=in_memory",
                         "--job_name=clicks"])
    assert opts.view_as(DirectOptions).direct_num_workers == 3
    assert opts.view_as(DirectOptions).direct_running_mode == "in_memory"
    assert opts.get_all_options()["job_name"] == "clicks"


def test_small_local_input_runs_in_process_unless_a_flag_says_otherwise(tmp_path):
    from shardforge.pipelines.options import SMALL_INPUT_BYTES

    small, big = tmp_path / "small.csv", tmp_path / "big.csv"
    small.write_bytes(b"x\n1\n")
    with open(big, "wb") as f:  # sparse: the size counts, not the blocks
        f.truncate(SMALL_INPUT_BYTES)

    def mode(beam_args, inputs):
        direct = make_options(beam_args, inputs=inputs).view_as(DirectOptions)
        return direct.direct_running_mode, direct.direct_num_workers

    assert mode([], [str(small)]) == ("in_memory", 1)
    assert mode([], [str(tmp_path / "*.csv")]) == ("multi_processing", 2)  # the sum counts
    assert mode([], [str(big)]) == ("multi_processing", 2)
    assert mode([], []) == ("multi_processing", 2)  # inputs unknown
    assert mode([], ["gs://bucket/small.csv"]) == ("multi_processing", 2)  # not local
    # the user's flags win, either of them
    assert mode(["--direct_num_workers=2"], [str(small)]) == ("multi_processing", 2)
    assert mode(["--direct_running_mode=multi_processing"], [str(small)]) == (
        "multi_processing", 2)
    assert mode(["--direct_running_mode", "in_memory"], [str(big)])[0] == "in_memory"
