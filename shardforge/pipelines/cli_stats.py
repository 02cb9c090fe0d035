"""``shardforge stats OUT``: a per-feature table in the terminal; ``stats.html`` (which the job
writes beside ``stats.json``) has a card per input and output feature with train and eval side
by side and their distributions overlaid (inline SVG drawn here from ``stats.json``: the page is
one self-contained file, and writing it needs no plotting library), and marks the anomalies of
``anomalies.json`` when the job was validated. The output is checked against its manifest first."""

from __future__ import annotations

import argparse
import html
import json
import math
import sys

SPLITS = ("train", "eval")
HASHED = ("categorical_hash", "crossed")  # ids are hash buckets, not vocabulary entries


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
    if feature.get("column_type") in HASHED:  # bucket ids: no value names
        return ", ".join(f"bucket {i}:{c}" for i, c in feature.get("top_ids", [])[:k])
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
            hashed = f.get("column_type") in HASHED  # ids are buckets: no vocabulary, no OOV
            rate = f"{f['oov_rate']:.2%}" if "oov_rate" in f and not hashed else ""
            vocab = "" if hashed else _fmt(f.get("vocab_size"))
            outputs.add_row(f["name"], split, vocab, rate, used,
                            _fmt(f.get("mean")), _fmt(f.get("std")), _fmt(f.get("length_mean")),
                            _top(f))
    console.print(outputs)


COLORS = {"train": "#1f77b4", "eval": "#ff7f0e", "new": "#1f77b4", "new eval": "#ff7f0e",
          "reference": "#555555"}
MAX_BARS = 12  # categories drawn per feature (the most frequent in either split)
MAX_INT_BARS = 30  # integers with at most this many distinct values are drawn as bars


def _categories(feature: dict) -> tuple[dict, float] | None:
    """``({label: count}, total)`` of a categorical feature (strings, ids, few-valued ints)."""
    if feature["dtype"] == "categorical":
        if not feature.get("top_values") and 0 < len(feature.get("bucket_counts", [])) <= \
                MAX_INT_BARS:  # few ids without names (bucketized): in id order
            return dict(enumerate(feature["bucket_counts"])), float(feature.get("ids") or 1)
        if feature.get("column_type") in HASHED or not feature.get("top_values"):
            items = [[f"bucket {i}", c] for i, c in feature.get("top_ids", [])]
        else:
            items = feature["top_values"]
        return {str(v): c for v, c in items}, float(feature.get("ids") or 1)
    if feature["dtype"] == "bytes" and feature.get("top_values"):
        return {str(v): c for v, c in feature["top_values"]}, float(feature.get("rows") or 1)
    counts = feature.get("value_counts")
    if counts and feature.get("distinct", MAX_INT_BARS + 1) <= MAX_INT_BARS:
        return {v: c for v, c in sorted(counts)}, float(sum(c for _, c in counts) or 1)
    n, lo, hi = feature.get("num_values", 0), feature.get("min"), feature.get("max")
    if feature["dtype"] == "int64" and n and hi == lo + 1:  # two values: the mean says how many
        ones = round(n * (feature["mean"] - lo))
        return {int(lo): n - ones, int(hi): ones}, float(n)
    return None


W, H = 400, 224  # px of a chart: the width of the narrowest card of the grid (440 px) less padding
FONT = 9  # px of tick labels; a label of n characters is about 0.55 n of it wide


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _num(v: float) -> str:
    return f"{v:.4g}"


def _ticks(lo: float, hi: float, log: bool = False, n: int = 5) -> list[float]:
    """Round tick values in ``[lo, hi]``: 1-2-5 steps, or the powers of ten on a log axis (with
    their 2 and 5 multiples when fewer than three powers fit)."""
    if log:
        powers = [10.0 ** e for e in range(math.floor(math.log10(lo)),
                                           math.ceil(math.log10(hi)) + 1)]
        ticks = [t for t in powers if lo <= t <= hi]
        if len(ticks) < 3:
            ticks = [t * m for t in powers for m in (1, 2, 5) if lo <= t * m <= hi]
        return ticks
    raw = (hi - lo) / n
    step = 10.0 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if raw <= step * m)
    first = math.ceil(lo / step - 1e-9)
    return [k * step for k in range(first, math.floor(hi / step + 1e-9) + 1)]


class _Plot:
    """Data to pixels for one chart's plotting area, and the SVG of its axes."""

    def __init__(self, x: tuple[float, float], y: tuple[float, float], left: int, bottom: int,
                 xlog: bool = False, invert_y: bool = False):
        self.x0, self.x1, self.xlog = x[0], x[1], xlog
        self.y0, self.y1, self.invert_y = y[0], y[1], invert_y
        self.left, self.right, self.top, self.bottom = left, W - 8, 18, H - bottom  # legend above

    def px(self, v: float) -> float:
        lo, hi, v = ((math.log10(self.x0), math.log10(self.x1), math.log10(v)) if self.xlog
                     else (self.x0, self.x1, v))
        v = min(max(v, lo), hi)  # drawn up to the axis' end, cut there
        return self.left + (v - lo) / (hi - lo) * (self.right - self.left)

    def py(self, v: float) -> float:
        share = (min(max(v, self.y0), self.y1) - self.y0) / (self.y1 - self.y0)
        if self.invert_y:
            share = 1 - share
        return self.bottom - share * (self.bottom - self.top)

    def frame(self, xlabel: str, ylabel: str) -> str:
        return (f'<rect x="{self.left}" y="{self.top}" width="{self.right - self.left}" '
                f'height="{self.bottom - self.top}" fill="none" stroke="#999"/>'
                f'<text x="{(self.left + self.right) / 2:.1f}" y="{H - 3}" '
                f'text-anchor="middle">{_esc(xlabel)}</text>'
                + (f'<text transform="translate(10 {(self.top + self.bottom) / 2:.1f}) '
                   f'rotate(-90)" text-anchor="middle">{_esc(ylabel)}</text>' if ylabel else ""))

    def xticks(self, ticks: list[tuple[float, str]], rotate: bool = False) -> str:
        out = []
        for v, label in ticks:
            x = self.px(v)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{self.bottom}" '
                       f'y2="{self.bottom + 3}" stroke="#999"/>')
            if rotate:
                out.append(f'<text transform="translate({x + 3:.1f} {self.bottom + 5}) '
                           f'rotate(-90)" text-anchor="end">{_esc(label)}</text>')
            else:
                out.append(f'<text x="{x:.1f}" y="{self.bottom + 4 + FONT}" '
                           f'text-anchor="middle">{_esc(label)}</text>')
        return "".join(out)

    def yticks(self, ticks: list[tuple[float, str]]) -> str:
        return "".join(
            f'<line x1="{self.left - 3}" x2="{self.left}" y1="{self.py(v):.1f}" '
            f'y2="{self.py(v):.1f}" stroke="#999"/><text x="{self.left - 5}" '
            f'y="{self.py(v) + FONT / 3:.1f}" text-anchor="end">{_esc(label)}</text>'
            for v, label in ticks)


def _bar(x: float, y: float, w: float, h: float, color: str, tip: str) -> str:
    return (f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0.5):.1f}" height="{max(h, 0):.1f}" '
            f'fill="{color}"><title>{_esc(tip)}</title></rect>')


def _draw_bars(per: dict) -> tuple[str, list[str]]:
    """Grouped bars: each split's share of the values, side by side per category (numbers
    upright in their order, names across, the most frequent first)."""
    cats = {s: _categories(f) for s, f in per.items()}
    numeric = all(isinstance(k, (int, float)) for c in cats.values() for k in c[0])
    keys = {k for counts, _ in cats.values() for k in counts}
    if numeric:
        labels = sorted(keys)
    else:  # the categories most frequent in any of the splits
        top = {k: max(c.get(k, 0) / t for c, t in cats.values()) for k in keys}
        labels = sorted(keys, key=lambda k: (-top[k], str(k)))[:MAX_BARS]
    if not labels:
        return "", []
    shares = {s: [counts.get(k, 0) / total for k in labels] for s, (counts, total) in cats.items()}
    peak = max((v for x in shares.values() for v in x), default=0) * 1.05 or 1.0
    names = [str(k)[:24] for k in labels]
    width = 0.8 / len(cats)
    span = (-0.5, len(labels) - 0.5)
    share_ticks = [(t, _num(t)) for t in _ticks(0, peak)]
    out = []
    if numeric:
        rotate = len(labels) > 10
        bottom = 18 + (int(max(map(len, names)) * FONT * 0.55) + 6 if rotate else FONT + 4)
        plot = _Plot(span, (0, peak), 44, bottom)
        slot = (plot.right - plot.left) / len(labels)
        for j, split in enumerate(cats):
            for i, v in enumerate(shares[split]):
                x = plot.px(i - 0.4 + j * width)
                out.append(_bar(x, plot.py(v), width * slot, plot.bottom - plot.py(v),
                                COLORS[split], f"{split} {names[i]}: {v:.2%}"))
        out.append(plot.xticks(list(enumerate(names)), rotate=rotate))
        out.append(plot.yticks(share_ticks))
        out.append(plot.frame("", "share"))
    else:
        left = int(max(map(len, names), default=1) * FONT * 0.55) + 10
        plot = _Plot((0, peak), span, left, 18 + FONT + 4, invert_y=True)
        slot = (plot.bottom - plot.top) / len(labels)
        for j, split in enumerate(cats):
            for i, v in enumerate(shares[split]):
                y = plot.py(i - 0.4 + j * width)
                out.append(_bar(plot.left, y, plot.px(v) - plot.left, width * slot,
                                COLORS[split], f"{split} {names[i]}: {v:.2%}"))
        out.append(plot.xticks(share_ticks))
        out.append(plot.yticks(list(enumerate(names))))
        out.append(plot.frame("share", ""))
    return "".join(out), list(cats)


def _draw_histograms(per: dict, prefix: str) -> tuple[str, list[str]]:
    """Each split's histogram as a step line of shares (of density for equal-mass buckets),
    overlaid; a single spike does not flatten the rest (the y axis stops above the next)."""
    scale = next(iter(per.values())).get(prefix + "histogram_scale", "linear")
    zeros, steps, peaks, rests = {}, {}, [], []
    for split, f in per.items():
        buckets = f[prefix + "histogram"]
        total = float(sum(b["count"] for b in buckets) or 1)
        if scale == "log" and buckets and buckets[0]["low"] <= 0:
            zeros[split], buckets = buckets[0]["count"], buckets[1:]
        if not buckets:
            continue
        edges = [buckets[0]["low"]] + [b["high"] for b in buckets]
        heights = [b["count"] / total / (max(b["high"] - b["low"], 1e-300)
                                         if scale == "quantile" else 1.0) for b in buckets]
        steps[split] = edges, heights
        ordered = sorted(heights)
        peaks.append(ordered[-1])
        rests.append(ordered[-2] if len(ordered) > 1 else ordered[-1])
    if not steps:
        return "", []
    ytop = max(peaks) * 1.05 or 1.0
    if max(peaks) > 5 * max(rests) > 0:  # one spike: show the rest, cut the spike
        ytop = 1.5 * max(rests)
    lo = min(e[0] for e, _ in steps.values())
    hi = max(e[-1] for e, _ in steps.values())
    what = "length" if prefix else "value"
    note = {"log": " (log scale)", "quantile": " (density, equal-mass buckets)"}.get(scale, "")
    q = [f.get(prefix + "quantiles", {}) for f in per.values()]
    if scale == "quantile" and all("0.99" in x for x in q):
        # a long tail (a z-scored price) would squeeze the body into one bar: show to the 99th
        # percentile
        qlo, qhi = min(x["0"] for x in q), max(x["0.99"] for x in q)
        if qhi > qlo:
            lo, hi = qlo, qhi
            note += ", to the 99th percentile"
    xlog = scale == "log" and lo > 0
    if hi <= lo:  # one value: a bar of its share around it
        lo, hi, xlog = lo - 1, hi + 1, False
    plot = _Plot((lo, hi), (0, ytop), 44, 18 + FONT + 4, xlog=xlog)
    out = []
    for split, (edges, heights) in steps.items():
        if edges[-1] <= edges[0]:
            x = plot.px(edges[0])
            out.append(_bar(x - 4, plot.py(heights[0]), 8, plot.bottom - plot.py(heights[0]),
                            COLORS[split], f"{split} {_num(edges[0])}: {heights[0]:.2%}"))
            continue
        points = [(plot.px(edges[0]), plot.bottom)]
        for a, b, h in zip(edges, edges[1:], heights):
            points += [(plot.px(a), plot.py(h)), (plot.px(b), plot.py(h))]
        points.append((plot.px(edges[-1]), plot.bottom))
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        out.append(f'<polygon points="{line}" fill="{COLORS[split]}" fill-opacity="0.35"/>'
                   f'<polyline points="{line}" fill="none" stroke="{COLORS[split]}" '
                   'stroke-width="1.2"/>')
    at_zero = ", ".join(f"{s} {z}" for s, z in zeros.items() if z)
    out.append(plot.xticks([(t, f"{t:g}") for t in _ticks(lo, hi, log=xlog)]))
    out.append(plot.yticks([(t, _num(t)) for t in _ticks(0, ytop)]))
    out.append(plot.frame(what + note + (f"; at 0: {at_zero}" if at_zero else ""),
                          "density" if scale == "quantile" else "share"))
    return "".join(out), list(steps)


def _legend(splits: list[str]) -> str:
    """The splits' colours in a row above the plotting area, at its right end."""
    out, x = [], W - 8
    for split in reversed(splits):
        x -= int(len(split) * FONT * 0.55) + 18
        out.append(f'<rect x="{x}" y="5" width="9" height="9" fill="{COLORS[split]}"/>'
                   f'<text x="{x + 12}" y="13">{_esc(split)}</text>')
    return "".join(out)


def _svg(per: dict, title: str) -> str | None:
    """One inline SVG chart (no script, no external resource) with the splits' distributions
    of one feature overlaid (shares, so splits of different sizes compare), or ``None`` when
    there is nothing to draw. Each bar's tooltip gives its exact share."""
    per = {s: f for s, f in per.items() if f is not None}
    if not per:
        return None
    first = next(iter(per.values()))
    prefix = "" if first.get("histogram") else "length_"
    if all(_categories(f) for f in per.values()):
        body, drawn = _draw_bars(per)
    elif all(f.get(prefix + "histogram") for f in per.values()):
        body, drawn = _draw_histograms(per, prefix)
    else:
        return None
    if not drawn:
        return None
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
            f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="{FONT}" '
            f'role="img"><title>{_esc(title)}</title>{body}{_legend(drawn)}</svg>')


def _share(part, whole) -> str:
    return f"{part} ({part / whole:.1%})" if whole else str(part)


def _rows(per: dict, overall: dict | None, section: str) -> list[tuple[str, list[str], bool]]:
    """``(label, one value per split, flag)`` rows of a feature's card."""
    def values(key):
        return [_fmt(f.get(key)) if f else "" for f in per.values()]

    out = [("rows", values("rows"), False)]
    floats = all(f is None or f.get("dtype") == "float32" for f in per.values())
    if section == "inputs" and overall is not None and not floats:
        # a filled-in default is counted over all rows only
        miss = overall.get("missing", 0)
        out.append(("missing (all rows)", [_share(miss, overall.get("rows", 0))]
                    + [""] * (len(per) - 1), bool(miss)))
    else:  # a missing float is NaN, counted per split
        nan = [f.get("nan", 0) if f else 0 for f in per.values()]
        rows = [f.get("rows", 0) if f else 0 for f in per.values()]
        if any(nan) or section == "inputs":
            out.append(("missing", [_share(n, r) for n, r in zip(nan, rows)], any(nan)))
    f0 = next(f for f in per.values() if f)
    hashed = f0.get("column_type") in HASHED
    stats_of = " (length)" if f0.get("stats_of") else ""
    for key in ("min", "max", "mean", "std"):
        if any(f and key in f for f in per.values()):
            out.append((key + stats_of, values(key), False))
    if any(f and "distinct" in f for f in per.values()):
        out.append(("distinct", values("distinct"), False))
    if any(f and "num_buckets" in f for f in per.values()):
        used = [f"{f['buckets_used']}/{f['num_buckets']}" if f else "" for f in per.values()]
        out.append(("hash buckets used" if hashed else "buckets used", used, False))
    if not hashed and any(f and "vocab_size" in f for f in per.values()):
        out.append(("vocabulary", values("vocab_size"), False))
        rates = [f"{f['oov_rate']:.2%}" if f and "oov_rate" in f else "" for f in per.values()]
        out.append(("out of vocabulary", rates, any(
            f and f.get("oov_rate", 0) > 0.05 for f in per.values())))
    if any(f and "length_mean" in f for f in per.values()) and not stats_of:
        out.append(("values per row", values("length_mean"), False))
    return out


def _card(name: str, section: str, per: dict, overall: dict | None, lines: list[str]) -> str:
    f0 = next(f for f in per.values() if f)
    kind = " · ".join(x for x in (f0.get("dtype"), f0.get("column_type")) if x)
    if f0.get("column_type") in HASHED:
        kind += " (hashed ids)"
    head = "".join(f"<th>{s}</th>" for s in per)
    body = "".join(
        f'<tr{" class=flag" if flag else ""}><td>{html.escape(label)}</td>'
        + "".join(f"<td>{html.escape(v)}</td>" for v in vals) + "</tr>"
        for label, vals, flag in _rows(per, overall, section))
    chart = _svg(per, name) or ""
    marks = "".join(f'<p class="anomaly">{html.escape(ln)}</p>' for ln in lines)
    top = html.escape(_top(f0, 5))
    return (f'<section class="card{" flagged" if lines else ""}" '
            f'id="{section}-{html.escape(name)}"><h3>{html.escape(name)} '
            f"<small>{html.escape(kind)}</small></h3>{marks}"
            f"<table><tr><th></th>{head}</tr>{body}</table>{chart}"
            + (f'<p class="top">top: {top}</p>' if top else "") + "</section>")


def _section(doc: dict, section: str, flagged: dict) -> tuple[str, list[list[str]]]:
    """The cards of one section, and its rows of the overview table."""
    by_split = doc.get("by_split", {})
    splits = [s for s in SPLITS if by_split.get(s, {}).get(section)]
    names = sorted({f["name"] for s in splits for f in by_split[s][section]})
    overall = {f["name"]: f for f in doc.get("features", [])} if section == "inputs" else {}
    cards, overview = [], []
    for name in names:
        per = {s: next((f for f in by_split[s][section] if f["name"] == name), None)
               for s in splits}
        lines = flagged.get((section, name), [])
        cards.append(_card(name, section, per, overall.get(name), lines))
        f0 = next(f for f in per.values() if f)
        miss = overall.get(name, {}).get("missing", f0.get("nan", 0))
        rows = overall.get(name, {}).get("rows", f0.get("rows", 0))
        overview.append([f'<a href="#{section}-{html.escape(name)}">{html.escape(name)}</a>',
                         section, html.escape(f0.get("column_type") or f0.get("dtype", "")),
                         f"{miss / rows:.1%}" if rows else "", str(len(lines))])
    return f'<h2>{section}</h2><div class="grid">{"".join(cards)}</div>', overview


STYLE = """body{font-family:sans-serif;margin:1em auto;max-width:1800px;padding:0 1em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,440px),1fr));gap:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px;min-width:0;overflow-wrap:anywhere}
.card h3{margin:0 0 4px} .card small{color:#666;font-weight:normal}
.card svg{max-width:100%;height:auto;display:block}
table{border-collapse:collapse} td,th{padding:2px 8px;text-align:right}
td:first-child,th:first-child{text-align:left} .flag td{background:#fff3cd}
.flagged{border-color:#b00020} .anomaly{color:#b00020;margin:2px 0} .top{color:#444}
#overview th{cursor:pointer;border-bottom:1px solid #999} #overview{margin-bottom:1em}
.scroll,.card{overflow-x:auto}"""
# Click a column header of the overview to sort by it (numbers as numbers).
SORT = """document.querySelectorAll('#overview th').forEach((th,i)=>th.onclick=()=>{
const b=th.closest('table').tBodies[0],r=[...b.rows],d=th.dataset.d=-(th.dataset.d||-1),
v=x=>{const t=x.cells[i].innerText,n=parseFloat(t);return isNaN(n)?t:n};
r.sort((a,c)=>(v(a)>v(c)?1:v(a)<v(c)?-1:0)*d).forEach(x=>b.appendChild(x))})"""


def write_html(doc: dict, path: str, anomalies=None) -> None:
    """The report: per feature a card with the splits' numbers side by side and their
    distributions overlaid, in a grid that fits the window; an overview table (click a header
    to sort) and the ``anomalies`` (:class:`~shardforge.pipelines.validate.Anomaly`), listed
    and marked on their features."""
    splits = ", ".join(f"{s}: {v['records']}" for s, v in doc.get("splits", {}).items())
    flagged: dict = {}
    for a in anomalies or ():
        flagged.setdefault((a.section, a.feature), []).append(f"{a.kind}: {a.description}")
    listed = "".join(
        f'<li><a href="#{html.escape(a.section)}-{html.escape(a.feature)}">'
        f"{html.escape(a.line())}</a></li>" for a in anomalies or ())
    validation = (f'<h2 class="anomaly">{len(anomalies)} anomalies</h2><ul>{listed}</ul>'
                  if anomalies else "")
    inputs, in_rows = _section(doc, "inputs", flagged)
    outputs, out_rows = _section(doc, "outputs", flagged)
    overview = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>"
                       for r in in_rows + out_rows)
    page = f"""<!doctype html><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>shardforge stats</title>
<style>{STYLE}</style>
<h1>shardforge stats</h1>
<p>{doc['rows_read']} rows read, {doc['errors']} errors; records {html.escape(splits)}.
Charts overlay the splits as shares; skewed non-negative columns use a log scale.</p>
{validation}
<div class="scroll"><table id="overview"><thead><tr><th>feature</th><th>section</th>
<th>type</th><th>missing</th><th>anomalies</th></tr></thead><tbody>{overview}</tbody></table></div>
{inputs}
{outputs}
<script>{SORT}</script>
"""
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)


def write_anomalies_html(path: str, anomalies, new: dict, ref: dict, split: str = "train",
                         title: str = "") -> None:
    """Per flagged feature, its anomalies and one chart overlaying the new data, the reference
    and (when there is one) the new eval split; ``new`` and ``ref`` are ``stats.json``
    documents, outputs compared on ``split`` (inputs over all rows)."""
    def entry(doc, section, name, which=split):
        if section == "inputs" and which == split:
            return next((f for f in doc.get("features", []) if f["name"] == name), None)
        return next((f for f in doc.get("by_split", {}).get(which, {}).get(section, [])
                     if f["name"] == name), None)

    cards = []
    for key in dict.fromkeys((a.section, a.feature) for a in anomalies):
        section, name = key
        lines = "".join(f'<p class="anomaly">{html.escape(a.kind)}: '
                        f"{html.escape(a.description)}</p>"
                        for a in anomalies if (a.section, a.feature) == key)
        per = {"new": entry(new, section, name), "reference": entry(ref, section, name),
               "new eval": entry(new, section, name, "eval") if split != "eval" else None}
        chart = (_svg(per, name) if name else None) or ""
        where = f"{name} ({section[:-1]})" if name else "dataset"
        cards.append(f'<section class="card flagged"><h3>{html.escape(where)}</h3>{lines}{chart}'
                     "</section>")
    page = f"""<!doctype html><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>shardforge validate</title><style>{STYLE}</style>
<h1>{len(anomalies)} anomalies</h1><p>{html.escape(title)}</p>
<div class="grid">{"".join(cards)}</div>
"""
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)


def main(args: argparse.Namespace) -> int:
    from shardforge.records import fs
    from shardforge.records.manifest import is_job_output, verify_output

    stats_path = fs.join(args.output, "stats.json")
    if is_job_output(args.output):
        verify_output(args.output)  # OutputError: shardforge.cli says what is wrong
    if not fs.exists(stats_path):
        raise FileNotFoundError(f"{stats_path} not found (run `shardforge run` first)")
    doc = json.loads(fs.read_bytes(stats_path))
    print_table(doc)
    path = args.html or fs.join(args.output, "stats.html")
    if args.html or not fs.exists(path):  # the job wrote one (listed in its manifest)
        from shardforge.pipelines.validate import read_anomalies

        write_html(doc, path, read_anomalies(args.output))
        print(f"wrote {path}")
    else:
        print(f"report: {path}")
    return 0
