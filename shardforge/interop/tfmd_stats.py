"""A job's ``stats.json`` as TensorFlow Metadata's ``DatasetFeatureStatisticsList`` in text format
(``stats_tfmd.pbtxt``), the statistics TFDV and Facets read (``tfdv.load_stats_text``,
``tfdv.visualize_statistics``).

    from shardforge.interop.tfmd_stats import tfmd_statistics_text
    text = tfmd_statistics_text(json.load(open("out/stats.json")))

One dataset per split of the raw inputs (``train``, ``eval``) and one per split of the transformed
outputs (``train/transformed``, ``eval/transformed``). Numbers are ``num_stats`` with the job's
histogram (``QUANTILES`` when its buckets are equal-mass, else ``STANDARD``, whose buckets here
may be log-spaced); strings and categorical ids are ``string_stats`` with top values and the rank
histogram. A string input's missing count is known over all rows only, so per split it is 0.

Written as text, like ``schema_tfmd.pbtxt``, without the ``tensorflow_metadata`` package; the
tests parse it with ``tensorflow_metadata``'s own ``statistics_pb2``.
"""

from __future__ import annotations

import json
import os

from shardforge.interop.tfmd import _quoted

TFMD_STATISTICS_FILE = "stats_tfmd.pbtxt"
SPLITS = ("train", "eval")


def _num(x) -> str:
    return repr(float(x))


def _common(e: dict, n_rows: int) -> list[str]:
    missing = int(e.get("nan", 0)) if e.get("dtype") in ("float32", "int64") else 0
    lines = [f"num_non_missing: {n_rows - missing}", f"num_missing: {missing}"]
    if "length_mean" in e and e.get("dtype") != "bytes":  # variable-length values per row
        lines += [f"min_num_values: {int(e['length_min'])}",
                  f"max_num_values: {int(e['length_max'])}",
                  f"avg_num_values: {_num(e['length_mean'])}"]
    total = e.get("ids", e.get("num_values", n_rows - missing))
    return lines + [f"tot_num_values: {int(total)}"]


def _block(name: str, lines: list[str]) -> list[str]:
    return [f"{name} {{", *("  " + ln for ln in lines), "}"]


def _numeric(e: dict, n_rows: int) -> list[str]:
    lines = _block("common_stats", _common(e, n_rows))
    if e.get("num_values"):
        lines += [f"mean: {_num(e['mean'])}", f"std_dev: {_num(e['std'])}",
                  f"min: {_num(e['min'])}", f"max: {_num(e['max'])}"]
        if "quantiles" in e:
            lines.append(f"median: {_num(e['quantiles']['0.5'])}")
    if e.get("histogram"):
        kind = "QUANTILES" if e.get("histogram_scale") == "quantile" else "STANDARD"
        hist = [f"num_nan: {int(e.get('nan', 0))}"]
        for b in e["histogram"]:
            hist += _block("buckets", [f"low_value: {_num(b['low'])}",
                                       f"high_value: {_num(b['high'])}",
                                       f"sample_count: {_num(b['count'])}"])
        lines += _block("histograms", [*hist, f"type: {kind}",
                                       f"name: {_quoted(e.get('histogram_scale', 'linear'))}"])
    return lines


def _string(e: dict, n_rows: int) -> list[str]:
    lines = _block("common_stats", _common(e, n_rows))
    if "distinct" in e:
        lines.append(f"unique: {int(e['distinct'])}")
    elif "buckets_used" in e:
        lines.append(f"unique: {int(e['buckets_used'])}")
    top = e.get("top_values") or [[f"id {i}", c] for i, c in e.get("top_ids", [])]
    for value, count in top:
        lines += _block("top_values", [f"value: {_quoted(str(value))}",
                                       f"frequency: {_num(count)}"])
    if e.get("dtype") == "bytes" and "length_mean" in e:
        lines.append(f"avg_length: {_num(e['length_mean'])}")
    ranks = []
    for rank, (value, count) in enumerate(e.get("value_counts") or top):
        ranks += _block("buckets", [f"low_rank: {rank}", f"high_rank: {rank}",
                                    f"label: {_quoted(str(value))}",
                                    f"sample_count: {_num(count)}"])
    if ranks:
        lines += _block("rank_histogram", ranks)
    return lines


def _feature(e: dict) -> list[str]:
    n_rows = int(e.get("rows", 0))
    dtype = e.get("dtype")
    if dtype in ("bytes", "categorical"):
        kind, body = ("STRING" if dtype == "bytes" else "INT"), _block("string_stats",
                                                                       _string(e, n_rows))
    else:
        kind = "FLOAT" if dtype == "float32" else "INT"
        body = _block("num_stats", _numeric(e, n_rows))
    return _block("features", [*_block("path", [f"step: {_quoted(e['name'])}"]),
                               f"type: {kind}", *body])


def tfmd_statistics_text(doc: dict) -> str:
    """``doc`` (a job's ``stats.json``) as a ``tensorflow.metadata.v0.DatasetFeatureStatisticsList``
    in text format.

    >>> print(tfmd_statistics_text(json.load(open("out/stats.json")))[:60])  # doctest: +SKIP
    datasets {
      name: "train"
      num_examples: 17987
    """
    lines: list[str] = []
    for section, suffix in (("inputs", ""), ("outputs", "/transformed")):
        for split in SPLITS:
            entries = doc.get("by_split", {}).get(split, {}).get(section, [])
            if not entries:
                continue
            n = max(int(e.get("rows", 0)) for e in entries)
            body = [f"name: {_quoted(split + suffix)}", f"num_examples: {n}"]
            for e in entries:
                body += _feature(e)
            lines += _block("datasets", body)
    return "\n".join(lines) + "\n"


def write_tfmd_statistics(output_dir: str) -> str:
    """Write ``stats_tfmd.pbtxt`` beside the ``stats.json`` of a local job output (atomically);
    returns its path."""
    from shardforge.records.manifest import atomic_write

    with open(os.path.join(output_dir, "stats.json"), encoding="utf-8") as f:
        text = tfmd_statistics_text(json.load(f))
    path = os.path.join(output_dir, TFMD_STATISTICS_FILE)
    atomic_write(path, text.encode())
    return path
