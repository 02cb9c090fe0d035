"""The documentation is executable: every ```bash / ```sh / ```console block of README.md and
docs/*.md runs as written, from the installed wheel, in an empty directory (one directory per
markdown file, its blocks in order, so a later block may use what an earlier one wrote), in a
shell that knows nothing of the checkout. A console block's commands are its ``$ `` lines.

A block that cannot run there says why on the line above its fence, ``<!-- needs: TAG -->``:
``repo`` (the checkout: make, .venv, benchmarks/), ``cloud`` (a bucket, Dataflow), ``gpu``,
``torchrun`` (several processes), ``services`` (long-running servers in other terminals),
``long`` (minutes of CPU: the full demo, long training). Nothing else is skipped.

The Python blocks of docs/extending.md run too (in one interpreter session, in order), except
those tagged ``<!-- needs: pending -->`` (written against an API another change is adding).
"""

import re
import subprocess
from pathlib import Path

import pytest

from tests.packaging.test_wheel import REPO, clean_env

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("wheel")]

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SKIP_TAGS = {"repo", "cloud", "gpu", "torchrun", "services", "long", "pending"}
BLOCK = re.compile(r"(?:^<!-- needs: (?P<tags>[\w ,-]+) -->\n)?"
                   r"^```(?P<lang>\w*)\n(?P<body>.*?)^```", re.M | re.S)


def blocks(path: Path, langs: set[str]) -> list[tuple[int, str, str, set[str]]]:
    """``(line, lang, body, tags)`` of each fenced block of ``path`` in one of ``langs``."""
    text = path.read_text(encoding="utf-8")
    found = []
    for m in BLOCK.finditer(text):
        if m.group("lang") in langs:
            tags = {t.strip() for t in (m.group("tags") or "").split(",") if t.strip()}
            found.append((text.count("\n", 0, m.start("body")), m.group("lang"), m.group("body"),
                          tags))
    return found


def script(lang: str, body: str) -> str:
    """The commands of a block as a bash script: a console block's ``$ `` lines."""
    if lang != "console":
        return body
    commands, going_on = [], False
    for line in body.splitlines():
        if line.startswith("$ ") or going_on:
            commands.append(line.removeprefix("$ "))
        going_on = (line.startswith("$ ") or going_on) and line.endswith("\\")
    return "\n".join(commands)


def test_every_skip_tag_is_known():
    tags = {t for doc in DOCS for *_, ts in blocks(doc, {"bash", "sh", "console", "python"})
            for t in ts}
    assert tags <= SKIP_TAGS, tags - SKIP_TAGS


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_shell_blocks_run_from_the_wheel(installed, tmp_path, doc):
    env = clean_env(installed)
    for line, lang, body, tags in blocks(doc, {"bash", "sh", "console"}):
        if tags & SKIP_TAGS:
            continue
        commands = script(lang, body)
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, (f"{doc.name}:{line + 1}: exit {proc.returncode}\n"
                                      f"{commands}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def test_extending_examples_run_from_the_wheel(installed, tmp_path):
    doc = REPO / "docs" / "extending.md"
    code = "\n\n".join(body for _, _, body, tags in blocks(doc, {"python"}) if not tags & SKIP_TAGS)
    (tmp_path / "extending.py").write_text(code)
    proc = subprocess.run([str(installed / "bin" / "python"), "extending.py"], cwd=tmp_path,
                          env=clean_env(installed), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
