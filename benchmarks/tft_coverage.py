"""Coverage of tf.Transform's public API by shardforge, checked against the migration table.

    .venv/bin/python benchmarks/tft_coverage.py --tft-python /tmp/tftvenv/bin/python

Lists every public function of ``tensorflow_transform`` and ``tensorflow_transform.experimental``
(mappers, analyzers, annotators; imported in the Python given by ``--tft-python``) with its
parameters, and looks each up in the "tf.Transform coverage" table of ``docs/features.md``:
``covered`` (the shardforge spelling, whose ``sf.`` names must exist in ``shardforge.features``),
``n/a`` (TensorFlow-graph plumbing, with the reason) or ``not yet``. Prints the table (markdown,
for the docs) and a count per status; exits 1 when a public function has no row, a row names a
function tf.Transform does not have, or a ``covered`` row names an ``sf.`` attribute that does
not exist.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "features.md")
SECTION = "### tf.Transform coverage"
STATUSES = ("covered", "n/a", "not yet")


def list_tft() -> list[dict]:
    """Public functions of tf.Transform with their parameters (run in the tf.Transform venv)."""
    import inspect

    import tensorflow_transform as tft
    import tensorflow_transform.experimental as tft_exp

    out = []
    for prefix, mod in (("tft.", tft), ("tft.experimental.", tft_exp)):
        for name in sorted(dir(mod)):
            obj = getattr(mod, name)
            if name.startswith("_") or not inspect.isfunction(obj):
                continue
            if not obj.__module__.startswith("tensorflow_transform"):
                continue
            params = [p for p in inspect.signature(obj).parameters if p != "name"]
            out.append({"name": prefix + name, "params": params})
    return out


def read_table(path: str = DOC) -> dict[str, tuple[str, str]]:
    """``{tft name: (status, shardforge spelling or reason)}`` from the docs' coverage table."""
    with open(path) as f:
        text = f.read()
    if SECTION not in text:
        raise SystemExit(f"{path} has no {SECTION!r} section")
    table: dict[str, tuple[str, str]] = {}
    for line in text.split(SECTION, 1)[1].splitlines()[1:]:
        if line.startswith("#"):
            break
        m = re.match(r"\|\s*`(tft\.[\w.]+)`\s*\|\s*([^|]+?)\s*\|\s*(.*?)\s*\|\s*$", line)
        if m:
            table[m.group(1)] = (m.group(2), m.group(3))
    return table


def check(api: list[dict], table: dict[str, tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(markdown rows of the report, problems)."""
    sys.path.insert(0, ROOT)
    import shardforge.features as sf

    rows, problems = [], []
    names = {f["name"] for f in api}
    for f in api:
        status, text = table.get(f["name"], ("MISSING", ""))
        if status == "MISSING":
            problems.append(f"{f['name']}: no row in the coverage table")
        elif status not in STATUSES:
            problems.append(f"{f['name']}: status {status!r} is not one of {STATUSES}")
        if status == "covered":
            for attr in re.findall(r"\bsf\.(\w+)", text):
                if not hasattr(sf, attr):
                    problems.append(f"{f['name']}: shardforge.features has no {attr!r}")
        rows.append(f"| `{f['name']}` | {', '.join(f['params'])} | {status} |")
    problems += [f"{n}: a row for a function tf.Transform does not have"
                 for n in table if n not in names]
    return rows, problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tft-python", help="python with tensorflow-transform")
    ap.add_argument("--list", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.list:
        print(json.dumps(list_tft()))
        return 0
    if not args.tft_python:
        ap.error("--tft-python is required")
    done = subprocess.run([args.tft_python, os.path.abspath(__file__), "--list"], check=True,
                          capture_output=True, text=True)
    api = json.loads(done.stdout.strip().splitlines()[-1])
    table = read_table()
    rows, problems = check(api, table)
    print("| tf.Transform | parameters (besides `name`) | shardforge |")
    print("|---|---|---|")
    print("\n".join(rows))
    counts = {s: sum(table.get(f["name"], ("",))[0] == s for f in api) for s in STATUSES}
    print(f"\n{len(api)} public functions: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
