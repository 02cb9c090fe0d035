"""``shardforge stats OUT``: a per-feature table in the terminal; ``stats.html`` (which the job
writes beside ``stats.json``) shows train and eval side by side for every input and output
feature (PNG images embedded, so the page is one self-contained file). The output is checked
against its manifest first."""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import os
import sys

SPLITS = ("train", "eval")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="output directory of `shardforge run` (holds stats.json)")
    parser.add_argument("--html", default=None,
                        help="write the HTML report here (the job already wrote "
                        "OUTPUT/stats.html)")


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
    console = Console(width=None if sys.stdout.isatty() else 160)  # piped: a wide table
    table = Table(title=f"{doc['rows_read']} rows read, {doc['errors']} errors; records: {splits}")
    longest = max((len(f["name"]) for f in doc["features"]), default=7)
    table.add_column("input", no_wrap=True, min_width=longest)
    table.add_column("dtype", no_wrap=True)
    for col in ("count", "missing", "min", "max", "mean", "std"):
        table.add_column(col, justify="right")
    table.add_column("top values", overflow="fold")
    for f in doc["features"]:
        dtype = f["dtype"] + (" (length)" if "stats_of" in f else "")
        table.add_row(f["name"], dtype, _fmt(f.get("count")), _fmt(f.get("missing")),
                      _fmt(f.get("min")), _fmt(f.get("max")), _fmt(f.get("mean")),
                      _fmt(f.get("std")), _top(f))
    console.print(table)
    outputs = Table(title="output features per split")
    for col in ("output", "split", "vocab", "OOV rate", "buckets used", "mean", "std",
                "length mean", "top values"):
        outputs.add_column(col, justify="left" if col in ("output", "top values") else "right")
    for split in SPLITS:
        for f in doc.get("by_split", {}).get(split, {}).get("outputs", []):
            used = (f"{f['buckets_used']}/{f['num_buckets']}" if "num_buckets" in f else "")
            rate = f"{f['oov_rate']:.2%}" if "oov_rate" in f else ""
            outputs.add_row(f["name"], split, _fmt(f.get("vocab_size")), rate, used,
                            _fmt(f.get("mean")), _fmt(f.get("std")), _fmt(f.get("length_mean")),
                            _top(f))
    console.print(outputs)


def _plot(ax, feature: dict) -> bool:
    """Draw one split's distribution of ``feature`` on ``ax``; ``False`` if it has none."""
    prefix = "" if feature.get("histogram") else "length_"
    buckets = feature.get(prefix + "histogram")
    if feature["dtype"] == "categorical" and feature.get("bucket_counts"):
        counts = feature["bucket_counts"]
        ax.bar(range(len(counts)), counts)
        ax.set_xlabel("bucket")
        return True
    if buckets and not (feature.get("top_values") and feature["dtype"] in ("bytes",
                                                                          "categorical")):
        log = feature.get(prefix + "histogram_scale") == "log"
        zeros = 0
        if log and buckets[0]["low"] <= 0:  # the zero bucket has no place on a log axis
            zeros, buckets = buckets[0]["count"], buckets[1:]
        scale = feature.get(prefix + "histogram_scale", "linear")
        widths = [max(b["high"] - b["low"], 1e-300) for b in buckets]
        # equal-mass buckets differ in width: their bars show density, so the shape reads true
        heights = [b["count"] / w if scale == "quantile" else b["count"]
                   for b, w in zip(buckets, widths)]
        ax.bar([b["low"] for b in buckets], heights, width=widths, align="edge",
               edgecolor="white")
        if log:
            from matplotlib.ticker import FuncFormatter, NullFormatter

            ax.set_xscale("log")
            # the default log labels are math markup ($10^{2}$), which is off here
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        label = ("length" if prefix else "value") + {"log": " (log scale)",
                                                     "quantile": " (density, equal-mass bins)"
                                                     }.get(scale, "")
        ax.set_xlabel(label + (f"; {zeros} at 0" if zeros else ""))
        return True
    top = feature.get("top_values") or [[f"id {i}", c] for i, c in feature.get("top_ids", [])]
    if top:
        top = top[:12][::-1]
        ax.barh([str(v)[:24] for v, _ in top], [c for _, c in top])
        ax.set_xlabel("count")
        return True
    return False


def _png(features: list[dict | None]) -> str | None:
    """One base64 PNG with a panel per split (train, eval), sharing nothing but the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Values are data, not markup: `$x^{$` must be drawn as text, never parsed as mathtext.
    with matplotlib.rc_context({"text.usetex": False, "text.parse_math": False}):
        fig, axes = plt.subplots(1, len(features), figsize=(4.2 * len(features), 2.6), dpi=80,
                                 squeeze=False)
        drawn = False
        for ax, split, feature in zip(axes[0], SPLITS, features):
            ax.set_title(split, fontsize=9)
            if feature is None or not _plot(ax, feature):
                ax.set_axis_off()
                continue
            drawn = True
        if not drawn:
            plt.close(fig)
            return None
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _cells(f: dict | None, keys) -> str:
    f = f or {}
    return "".join(f"<td>{html.escape(_fmt(f.get(k)))}</td>" for k in keys)


def _section(doc: dict, section: str, keys) -> str:
    by_split = doc.get("by_split", {})
    names = sorted({f["name"] for s in SPLITS for f in by_split.get(s, {}).get(section, [])})
    rows = []
    for name in names:
        per = [next((f for f in by_split.get(s, {}).get(section, []) if f["name"] == name),
                    None) for s in SPLITS]
        png = _png(per)
        img = f'<img src="data:image/png;base64,{png}">' if png else ""
        for split, f in zip(SPLITS, per):
            head = (f'<th rowspan="2">{html.escape(name)}</th>' if split == "train" else "")
            tail = f'<td rowspan="2">{img}</td>' if split == "train" else ""
            rows.append(f"<tr>{head}<td>{split}</td>{_cells(f, keys)}"
                        f"<td>{html.escape(_top(f or {}, 5))}</td>{tail}</tr>")
    header = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    return (f"<h2>{section}</h2><table><tr><th>feature</th><th>split</th>{header}"
            f"<th>top values</th><th>train | eval</th></tr>{''.join(rows)}</table>")


INPUT_KEYS = ("dtype", "rows", "num_values", "nan", "min", "max", "mean", "std", "distinct",
              "length_mean")
OUTPUT_KEYS = ("dtype", "column_type", "rows", "mean", "std", "vocab_size", "oov_rate",
               "buckets_used", "num_buckets", "length_mean")


def write_html(doc: dict, path: str) -> None:
    splits = ", ".join(f"{s}: {v['records']}" for s, v in doc.get("splits", {}).items())
    page = f"""<!doctype html><meta charset="utf-8"><title>shardforge stats</title>
<style>body{{font-family:sans-serif}} td,th{{padding:4px 8px;border-bottom:1px solid #ddd;
text-align:right;vertical-align:top}} th{{text-align:left}}</style>
<h1>shardforge stats</h1>
<p>{doc['rows_read']} rows read, {doc['errors']} errors; records {html.escape(splits)}.
Histograms of skewed non-negative columns use a log scale; strings show their top values.</p>
{_section(doc, "inputs", INPUT_KEYS)}
{_section(doc, "outputs", OUTPUT_KEYS)}
"""
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)


def main(args: argparse.Namespace) -> int:
    from shardforge.records.manifest import is_job_output, verify_output

    stats_path = os.path.join(args.output, "stats.json")
    if is_job_output(args.output):
        verify_output(args.output)  # OutputError: shardforge.cli says what is wrong
    if not os.path.exists(stats_path):
        raise FileNotFoundError(f"{stats_path} not found (run `shardforge run` first)")
    with open(stats_path, encoding="utf-8") as f:
        doc = json.load(f)
    print_table(doc)
    path = args.html or os.path.join(args.output, "stats.html")
    if args.html or not os.path.exists(path):  # the job wrote one (listed in its manifest)
        write_html(doc, path)
        print(f"wrote {path}")
    else:
        print(f"report: {path}")
    return 0
