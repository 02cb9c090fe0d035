"""Training/serving skew: raw serving-time rows transformed in-process with a job output's state,
their statistics in ``stats.json``'s format, compared with the job's by
:func:`~shardforge.pipelines.validate.validate`.

    from shardforge.pipelines.skew import read_rows, stats_doc
    fs = sf.load_feature_set("features.py")
    rows = read_rows(fs, "serving.jsonl")
    doc = stats_doc(fs, rows, sf.TransformState.load("out/schema.pbtxt"))

Statistics come from the job's own statistics code (``pipelines/stats.py``), every row under
the ``train`` split; rows the transform rejects count as errors, as in a job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from shardforge.records.spec import Batch, batch_size

LOGGED_KEY = "logged"  # a serving row's transformed features, as its system computed them
FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet",
           ".tfrecord": "tfrecord"}


@dataclass
class TypedRows:
    """Typed input rows read from a file: its batches, missing values per input, and how many
    rows were read and failed to parse."""

    batches: list[Batch]
    missing: dict[str, int] = field(default_factory=dict)
    rows_read: int = 0
    errors: int = 0


def data_format(path: str) -> str | None:
    """The input format of a data file from its suffix, or ``None`` (not a data file)."""
    return FORMATS.get(os.path.splitext(path)[1].lower())


def read_rows(fs, path: str, fmt: str | None = None, absent: tuple[str, ...] = ()) -> TypedRows:
    """Every row of ``path`` read and coerced to ``fs``'s declared inputs, as a job reads.
    ``absent``: inputs a file may lack altogether (labels at serving time), read as zeros."""
    from shardforge.features.coerce import coerce
    from shardforge.pipelines import readers
    from shardforge.pipelines.readers.base import missing_mask

    fmt = fmt or data_format(path)
    if fmt is None:
        raise ValueError(f"{path}: unknown data format; expected one of {sorted(FORMATS)}")
    spec = fs.input_spec()
    batches, missing, read, errors = [], {}, 0, 0
    for item in readers.read_file(path, fmt, spec):
        if isinstance(item, readers.ReadError):
            read, errors = read + 1, errors + 1
            continue
        read += item.count
        for name in absent:
            if missing_mask(item.columns.get(name), item.count).all():
                item.columns[name] = ["0"] * item.count
        batch, errs = coerce(fs.input_columns, item.columns)
        keep = np.setdiff1d(np.arange(item.count), [e.row for e in errs])
        errors += item.count - len(keep)
        for name in spec:
            miss = missing_mask(item.columns.get(name), item.count)[keep]
            missing[name] = missing.get(name, 0) + int(miss.sum())
        if len(keep):
            batches.append(batch)
    if not batches:
        raise ValueError(f"{path}: no row could be read as the feature set's inputs")
    return TypedRows(batches, missing, read, errors)


def stats_doc(fs, rows: TypedRows, state=None) -> dict:
    """``stats.json`` of ``rows`` transformed with ``state`` (``None``: learned from the rows,
    as a job would). Inputs a serving row does not carry (labels) are left out of the outputs."""
    from shardforge.pipelines import stats

    if state is None:
        state = fs.fit(rows.batches)
    features = {f.name: f for f in state.proto.features}
    acc: dict = {}
    n = kept = 0
    for batch in rows.batches:
        size = batch_size(batch)
        stats.add_inputs(acc, batch, np.zeros(size, dtype=bool))
        out, errs = fs.transform(batch, state, errors="collect")
        ok = size - len({e.row for e in errs})
        stats.add_outputs(acc, out, np.zeros(ok, dtype=bool), features)
        n, kept = n + size, kept + ok
    return stats.build_doc(acc, rows_read=rows.rows_read or n, errors=rows.errors + n - kept,
                           sizes={"train": (kept, 0)}, missing=rows.missing, state=state)


def value_skew(fs, state, path: str, key: str = LOGGED_KEY, absent: tuple[str, ...] = (),
               tolerance: float = 1e-5) -> tuple[list, int]:
    """Rows of a JSONL file that carry, under ``key``, the transformed features the serving
    system computed (``{"price": 12.5, ..., "logged": {"price": -0.31, "country": 4}}``):
    each logged value is compared with the one ``fs`` computes from the row's raw inputs with
    ``state`` (TFDV's feature skew: the same row, a different value). Returns one
    ``FEATURE_SKEW`` :class:`~shardforge.pipelines.validate.Anomaly` per output that differs
    in any row (floats within ``tolerance``, relative and absolute), and the rows compared.
    ``absent``: inputs a serving row lacks (labels), read as zeros."""
    import json

    from shardforge.pipelines.validate import Anomaly

    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    ids = [i for i, r in enumerate(rows) if isinstance(r.get(key), dict)]
    if not ids:
        return [], 0
    raw = {inp.name: [rows[i].get(inp.name, 0 if inp.name in absent else None) for i in ids]
           for inp in fs.input_columns}
    batch, errors = fs.coerce(raw, row_ids=ids)
    kept = [i for i in ids if i not in {e.row for e in errors}]
    out, errors = fs.transform(batch, state, errors="collect", row_ids=kept)
    kept = [i for i in kept if i not in {e.row for e in errors}]
    anomalies = []
    for name, col in out.items():
        if name in fs.label_names:  # computed from no label at serving time
            continue
        differ = []
        for j, i in enumerate(kept):
            logged = rows[i][key].get(name)
            if logged is None:
                continue
            want = np.asarray(col[j], dtype=np.float64).ravel()
            got = np.asarray(logged, dtype=np.float64).ravel()
            if got.shape != want.shape or not np.allclose(got, want, rtol=tolerance,
                                                          atol=tolerance):
                differ.append((i, logged, want.tolist()))
        if differ:
            i, logged, want = differ[0]
            anomalies.append(Anomaly(
                name, "outputs", "FEATURE_SKEW",
                f"{len(differ)} of {len(kept)} rows logged a value other than the one "
                f"recomputed from their raw inputs (line {i + 1}: logged {logged}, recomputed "
                f"{want[0] if len(want) == 1 else want})", len(differ) / len(kept)))
    return anomalies, len(kept)
