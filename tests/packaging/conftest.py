"""The installed wheel, built once per session for every packaging test that runs it
(tests/packaging/test_wheel.py: how, and why offline)."""

import shutil
import sys
from pathlib import Path

import pytest

from tests.packaging.test_wheel import REPO, SOURCES, run


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Path:
    """A venv holding only the freshly built wheel (dependencies through a .pth)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            shutil.copy(path, src / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(root / "dist"), str(src)], cwd=root)
    (wheel,) = (root / "dist").glob("shardforge-*.whl")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=root)
    py = venv / "bin" / "python"
    purelib = run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                  cwd=root).stdout.strip()
    # every site dir this interpreter imports from (its venv's, the system's if the venv sees
    # them), never the checkout itself
    deps = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    Path(purelib, "_shardforge_test_deps.pth").write_text("\n".join(deps))
    run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        cwd=root)
    return venv
