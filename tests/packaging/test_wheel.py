"""The installed wheel is the whole product: build it, install it into a fresh environment
outside the repository, and run the quick demo and the commands it prints from another
directory, in a shell that knows nothing of this checkout.

Offline and fast: the wheel goes into a new venv with ``--no-deps``, and a ``.pth`` file points
that venv at this environment's site-packages for the dependencies (torch, Beam, ...). A path in
a ``.pth`` file is only appended to ``sys.path`` (the ``.pth`` files *there*, such as the
editable install of this checkout, are not run), and the new venv's own site-packages comes
first, so the wheel's ``shardforge`` is the one imported; the test checks that.
"""

import os
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("shardforge", "setup.cfg", "setup.py", "pyproject.toml", "README.md", "LICENSE")

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("wheel")]


def clean_env(venv: Path) -> dict[str, str]:
    """What a fresh login shell has: no PYTHONPATH, no active venv but the one on PATH."""
    return {"PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": os.environ["HOME"],
            "LANG": "C.UTF-8", "TRITON_INTERPRET": "1"}


def run(argv, cwd: Path, env=None, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{shlex.join(map(str, argv))}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_the_wheel_is_what_runs(installed, tmp_path):
    where = run([str(installed / "bin" / "python"), "-c",
                 "import shardforge, shardforge.examples.clicklog as c; "
                 "print(shardforge.__file__); print(c.__file__)"],
                cwd=tmp_path, env=clean_env(installed)).stdout.split()
    assert all(Path(p).is_relative_to(installed) for p in where), where
    version = run(["shardforge", "--version"], cwd=tmp_path, env=clean_env(installed))
    assert version.stdout.startswith("shardforge ")


def test_quick_demo_and_its_printed_commands_run_from_the_wheel(installed, tmp_path):
    env = clean_env(installed)
    demo = run(["shardforge", "demo", "--quick", "--out", "demo_out"], cwd=tmp_path, env=env)
    out = tmp_path / "demo_out"
    assert (out / "stdlib" / "run" / "metrics.jsonl").exists()
    assert (out / "clicklog" / "run" / "metrics.jsonl").exists()
    printed = demo.stdout.split("rerun a step by hand", 1)[1].splitlines()[1:]
    commands = [line.strip() for line in printed if line.strip() and not line.strip()[0] == "#"]
    assert commands and all(c.startswith(str(installed / "bin" / "shardforge")) for c in commands)
    # pasted into a fresh shell elsewhere: the click-log example, its Beam job and training
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for command in commands:
        if "clicklog" in command or " plan " in command:
            run(["bash", "-c", command], cwd=elsewhere, env=env)
    assert len(list((out / "clicklog" / "run" / "checkpoints").iterdir())) >= 1


def test_readme_quickstart_from_the_wheel(installed, tmp_path):
    """The quickstart's commands: an example's files, its Beam job, training (packaged config)."""
    env = clean_env(installed)
    example = run(["shardforge", "example", "clicklog", "--out", "clicks", "--rows", "3000"],
                  cwd=tmp_path, env=env)
    assert (tmp_path / "clicks" / "click_features.py").exists()
    nexts = [line.strip() for line in example.stdout.splitlines()
             if line.startswith("  ")]
    assert [shlex.split(c)[1] for c in nexts] == ["run", "train"]
    run(["bash", "-c", nexts[0] + " --num-shards 1 --direct_running_mode=in_memory"],
        cwd=tmp_path, env=env)
    run(["bash", "-c", nexts[1] + " device=cpu max_steps=3 eval_every=3 plot=false"],
        cwd=tmp_path, env=env)
    assert (tmp_path / "clicks" / "run" / "metrics.jsonl").exists()
