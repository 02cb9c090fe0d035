"""Shared helpers: the example click log and feature set, in-process oracles over the outputs.

Beam start-up dominates these tests, so each module runs its pipelines once in module-scoped
fixtures and asserts many things on the outputs; modules are pinned to one xdist worker each.
"""

import glob
import os
from collections import Counter

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLICK_FEATURES = os.path.join(REPO, "shardforge", "examples", "click_features.py")
# In-process pipelines for most tests; the offline multi-process default runs where it matters.
IN_MEMORY = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
# two worker processes, which a small input would not get by default (pipelines/options.py)
MULTI_PROCESS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def read_typed(fs, path: str, fmt: str = "csv"):
    """The typed input batches of a file, read and coerced in-process (the oracle's input)."""
    from shardforge.features.coerce import coerce
    from shardforge.pipelines.readers import ReadError, read_file

    batches, errors = [], []
    for item in read_file(path, fmt, fs.input_spec()):
        if isinstance(item, ReadError):
            errors.append(item)
            continue
        batch, errs = coerce(fs.input_columns, item.columns, [item.row_id(i)
                                                              for i in range(item.count)])
        batches.append(batch)
        errors.extend(errs)
    return batches, errors


def concat(batches):
    from shardforge.records.spec import Ragged

    out = {}
    for name in batches[0]:
        cols = [b[name] for b in batches]
        if isinstance(cols[0], Ragged):
            out[name] = Ragged.from_rows([r for c in cols for r in c.to_list()],
                                         dtype=cols[0].values.dtype)
        else:
            out[name] = np.concatenate(cols)
    return out


def shard_paths(out: str, split: str) -> list[str]:
    paths = glob.glob(os.path.join(out, split, "part-*"))
    return sorted(p for p in paths if not p.endswith(".idx"))


def read_split(out: str, split: str, spec):
    """Decode every record of a split (protobuf reference decoder: no JIT warm-up)."""
    from shardforge.records import decode_batch_reference, read_records

    return decode_batch_reference(list(read_records(shard_paths(out, split))), spec)


def row_multiset(batch) -> Counter:
    """Rows of a columnar batch as hashable tuples."""
    from shardforge.records.spec import batch_size

    def cell(col, i):
        v = np.asarray(col[i])
        return tuple(v.ravel().tolist())

    names = sorted(batch)
    return Counter(tuple(cell(batch[n], i) for n in names) for i in range(batch_size(batch)))
