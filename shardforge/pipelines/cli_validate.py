"""``shardforge validate NEW --against REF``: anomalies and drift of new data against a reference
(see :mod:`shardforge.pipelines.validate`), one line per anomaly; exit status 0 when clean, 1 with
anomalies, 2 for a mistake in the command.

``NEW`` and ``REF`` are job outputs (or their ``stats.json``). ``NEW`` may also be a file of raw
serving-time rows (``.jsonl``, ``.csv``, ``.parquet``, ``.tfrecord``): it is transformed with
``REF``'s state by the feature file ``--features`` and compared with ``REF``'s training data
(training/serving skew; labels are not expected at serving time). A JSONL row may also carry
the transformed features its serving system computed, under ``"logged"``: a value other than
the one recomputed from the row is a ``FEATURE_SKEW`` anomaly::

    shardforge validate out-today/ --against out-yesterday/ --anomalies anomalies.json
    shardforge validate serving.jsonl --against out/ --features features.py
    shardforge validate out-today/ --against raw_schema.pbtxt    # declared domains

``REF`` may be a TensorFlow Metadata schema in text format (``.pbtxt``) with declared domains
(presence, ``int_domain``, ``float_domain``, ``string_domain``): each feature is checked against
it by TFDV's rules.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("new", help="job output (or its stats.json) to check, or a file of raw "
                        "serving rows (.jsonl, .csv, .parquet, .tfrecord) to check for skew")
    parser.add_argument("--against", required=True, metavar="REF",
                        help="reference job output (or its stats.json), or a TensorFlow "
                        "Metadata schema (.pbtxt) with declared domains")
    parser.add_argument("--schema-of", choices=("inputs", "outputs"), default=None,
                        help="with a schema as REF: whose features it describes (default: "
                        "outputs for a job's schema_tfmd.pbtxt, else inputs)")
    parser.add_argument("--features", default=None,
                        help="feature file: its VALIDATION dict overrides thresholds per feature; "
                        "required to transform serving rows")
    parser.add_argument("--logged-key", default="logged", metavar="KEY",
                        help="in serving rows (.jsonl), the object holding the transformed "
                        "features the serving system computed; each is compared with the value "
                        "recomputed from the row (default: logged)")
    parser.add_argument("--split", default="train", choices=("train", "eval"),
                        help="split whose outputs are compared (default train)")
    parser.add_argument("--anomalies", default=None, metavar="PATH",
                        help="write the anomalies and every drift distance as JSON here")
    parser.add_argument("--html", default=None, metavar="PATH",
                        help="write an HTML page here: per flagged feature, the new, reference "
                        "and new eval distributions overlaid")
    parser.add_argument("--json", action="store_true", help="print anomalies.json to stdout")
    parser.add_argument("--l-infinity", type=float, default=None, metavar="X",
                        help="categorical drift threshold (default 0.1)")
    parser.add_argument("--jensen-shannon", type=float, default=None, metavar="X",
                        help="numeric drift threshold (default 0.1)")


@dataclass
class Checked:
    """What ``shardforge validate`` found: the ``anomalies.json`` document, the anomalies, and
    the two ``stats.json`` documents compared (``ref`` is ``None`` against a schema)."""

    report: dict
    anomalies: list
    new: dict
    ref: dict | None


def check(args: argparse.Namespace) -> Checked:
    """Run the comparison the command's arguments ask for."""
    from shardforge.pipelines import validate as v
    from shardforge.pipelines.skew import data_format

    given = {"l_infinity": args.l_infinity, "jensen_shannon": args.jensen_shannon}
    thresholds = v.Thresholds().with_overrides({k: x for k, x in given.items() if x is not None})
    rules = v.load_rules(args.features) if args.features else {}
    if args.against.endswith(".pbtxt"):
        new, ref = v.load_stats(args.new), None
        anomalies, drift = _against_schema(args, new), []
    else:
        ref = v.load_stats(args.against)
        if os.path.isfile(args.new) and data_format(args.new) is not None:
            new, anomalies, drift = _skew(args, ref, thresholds, rules)
        else:
            new = v.load_stats(args.new)
            anomalies, drift = v.validate(new, ref, thresholds, rules, split=args.split)
    doc = v.report(anomalies, new=args.new, against=args.against, thresholds=thresholds,
                   drift=drift, rules=rules)
    return Checked(doc, anomalies, new, ref)


def _against_schema(args: argparse.Namespace, new: dict) -> list:
    from shardforge.pipelines.validate import load_reference, schema_section, validate_schema

    section = args.schema_of or schema_section(args.against)
    return validate_schema(new, load_reference(args.against), section, args.split)


def _skew(args: argparse.Namespace, ref: dict, thresholds, rules) -> tuple[dict, list, list]:
    """Serving rows against the training data of ``args.against``: their distributions, and
    (JSONL) the values the serving system logged against the recomputed ones."""
    import shardforge.features as sf
    from shardforge.pipelines.skew import data_format, read_rows, stats_doc, value_skew
    from shardforge.pipelines.validate import validate

    if not args.features:
        raise ValueError(f"{args.new} is a data file: pass --features FILE (the feature file "
                         f"{args.against} was made with) to transform its rows")
    schema = os.path.join(args.against, "schema.pbtxt")
    if not os.path.isfile(schema):
        raise FileNotFoundError(f"{schema} not found: --against must be a job output to check "
                                "serving rows against")
    fs, state = sf.load_feature_set(args.features), sf.TransformState.load(schema)
    labels = tuple(fs.label_names)  # not in a serving row
    new = stats_doc(fs, read_rows(fs, args.new, absent=labels), state)
    anomalies, drift = validate(new, ref, thresholds, rules, split=args.split, ignore=labels,
                                same_state=True)
    if data_format(args.new) == "jsonl":
        anomalies += value_skew(fs, state, args.new, args.logged_key, absent=labels)[0]
    return new, anomalies, drift


def main(args: argparse.Namespace) -> int:
    from shardforge.pipelines.validate import write_report

    found = check(args)
    doc, anomalies = found.report, found.anomalies
    if args.anomalies:
        write_report(args.anomalies, doc)
    if args.html:
        from shardforge.pipelines.cli_stats import write_anomalies_html

        write_anomalies_html(args.html, anomalies, found.new, found.ref or {}, args.split,
                             f"{args.new} against {args.against}")
    if args.json:
        print(json.dumps(doc, indent=1, sort_keys=True))
        return 1 if anomalies else 0
    for a in anomalies:
        print(a.line())
    compared = len({(d["section"], d["feature"]) for d in doc["drift"]})
    verdict = (f"{len(anomalies)} anomalies" if anomalies else "no anomalies")
    wrote = [p for p in (args.anomalies, args.html) if p]
    print(f"{verdict}: {args.new} against {args.against}"
          + (f" ({compared} distributions compared)" if compared else "")
          + (f"; wrote {', '.join(wrote)}" if wrote else ""))
    return 1 if anomalies else 0
