"""``shardforge stats OUT``: a per-feature table in the terminal and ``OUT/stats.html`` with a
histogram per feature (PNG images embedded, so the page is one self-contained file)."""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="output directory of `shardforge run` (holds stats.json)")
    parser.add_argument("--html", default=None,
                        help="where to write the HTML report (default: OUTPUT/stats.html)")


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _top(feature: dict, k: int = 3) -> str:
    return ", ".join(f"{v}:{c}" for v, c in feature.get("top_values", [])[:k])


def print_table(doc: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    splits = ", ".join(f"{s} {v['records']}" for s, v in doc.get("splits", {}).items())
    table = Table(title=f"{doc['rows_read']} rows read, {doc['errors']} errors; records: {splits}")
    longest = max((len(f["name"]) for f in doc["features"]), default=7)
    table.add_column("feature", no_wrap=True, min_width=longest)
    table.add_column("dtype", no_wrap=True)
    for col in ("count", "missing", "min", "max", "mean", "std"):
        table.add_column(col, justify="right")
    table.add_column("top values", overflow="fold")
    for f in doc["features"]:
        dtype = f["dtype"] + (" (length)" if "stats_of" in f else "")
        table.add_row(f["name"], dtype, _fmt(f["count"]), _fmt(f["missing"]),
                      _fmt(f.get("min")), _fmt(f.get("max")), _fmt(f.get("mean")),
                      _fmt(f.get("std")), _top(f))
    # piped output gets a wide table instead of rich's 80-column default
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def _png(feature: dict) -> str | None:
    """A base64 PNG: the histogram for numbers, the top values for strings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 2.6), dpi=80)
    if feature["dtype"] != "bytes" and feature.get("histogram"):
        buckets = feature["histogram"]
        ax.bar([b["low"] for b in buckets], [b["count"] for b in buckets],
               width=[b["high"] - b["low"] for b in buckets], align="edge", edgecolor="white")
        ax.set_xlabel(feature["name"])
    elif feature.get("top_values"):
        top = feature["top_values"][:15][::-1]
        ax.barh([str(v)[:24] for v, _ in top], [c for _, c in top])
        ax.set_xlabel("count")
    else:
        plt.close(fig)
        return None
    ax.set_ylabel("rows" if feature["dtype"] != "bytes" else "")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def write_html(doc: dict, path: str) -> None:
    rows = []
    for f in doc["features"]:
        cells = "".join(f"<td>{html.escape(_fmt(f.get(k)))}</td>"
                        for k in ("dtype", "count", "missing", "min", "max", "mean", "std"))
        png = _png(f)
        img = f'<img src="data:image/png;base64,{png}">' if png else ""
        rows.append(f"<tr><th>{html.escape(f['name'])}</th>{cells}"
                    f"<td>{html.escape(_top(f, 5))}</td><td>{img}</td></tr>")
    splits = ", ".join(f"{s}: {v['records']}" for s, v in doc.get("splits", {}).items())
    page = f"""<!doctype html><meta charset="utf-8"><title>shardforge stats</title>
<style>body{{font-family:sans-serif}} td,th{{padding:4px 8px;border-bottom:1px solid #ddd;
text-align:right}} th{{text-align:left}}</style>
<h1>shardforge stats</h1>
<p>{doc['rows_read']} rows read, {doc['errors']} errors; records {html.escape(splits)}.
Statistics of {html.escape(doc.get('stats_of', 'input features'))}.</p>
<table><tr><th>feature</th><th>dtype</th><th>count</th><th>missing</th><th>min</th><th>max</th>
<th>mean</th><th>std</th><th>top values</th><th>distribution</th></tr>
{''.join(rows)}
</table>
"""
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)


def main(args: argparse.Namespace) -> int:
    stats_path = os.path.join(args.output, "stats.json")
    if not os.path.exists(stats_path):
        print(f"shardforge stats: error: {stats_path} not found (run `shardforge run` first)")
        return 1
    with open(stats_path, encoding="utf-8") as f:
        doc = json.load(f)
    print_table(doc)
    path = args.html or os.path.join(args.output, "stats.html")
    write_html(doc, path)
    print(f"wrote {path}")
    return 0
