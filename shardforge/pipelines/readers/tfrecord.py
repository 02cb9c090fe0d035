"""TFRecord files of tf.Example records (``records.iter_blocks``), decoded a block at a time.

Every input comes as value lists (``Ragged``); coercion checks the counts against the
declarations (a one-element list is a scalar's value). A record failing its checksum, not a
tf.Example, or holding a declared input of another type is one error with its offset, and the
other records of its block are read as usual; a broken frame ends the file with an error.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

import numpy as np

from shardforge.pipelines.readers.base import Inputs, RawChunk, ReadError, Split, open_path


class TfrecordReader:
    """tf.Example records; a record is named ``file@offset``."""

    name = "tfrecord"
    suffixes = (".tfrecord", ".tfrecords")

    def inputs(self, spec: dict) -> dict:
        return spec

    def columns(self, path: str) -> None:
        return None

    def split(self, path: str, target: int) -> list[Split]:
        return [Split(path)]

    def read(self, split: Split, inputs: Inputs, chunk_rows: int):
        from shardforge.records.example import decode_batch
        from shardforge.records.framing import ReadReport, iter_blocks
        from shardforge.records.spec import VarLen

        path, names = split.path, list(inputs)
        varlen = ({n: VarLen(inputs[n].dtype) for n in names} if isinstance(inputs, Mapping)
                  else None)
        with _local_copy(path) as local:
            report = ReadReport()
            seen = 0
            try:
                for _, offsets, block in iter_blocks(local, on_corrupt="skip", report=report,
                                                     compression="auto"):
                    yield from _problems(path, report, seen)
                    seen = len(report.problems)
                    for lo in range(0, len(block), chunk_rows):
                        part, offs = block[lo:lo + chunk_rows], offsets[lo:lo + chunk_rows]
                        yield from _tfrecord_chunk(path, part, offs, names, varlen, decode_batch)
            except Exception as err:  # noqa: BLE001 - a broken file is one error, not a failed job
                yield ReadError(path, f"unreadable TFRecord file: {err}")
            yield from _problems(path, report, seen)


def _problems(path, report, seen):
    for p in report.problems[seen:]:
        yield ReadError(f"{path}@{p.offset}", f"corrupt record: {p.reason}")


def _tfrecord_chunk(path, block, offsets, names, varlen, decode_batch):
    """One chunk of ``block``'s records; when the block does not decode as a whole, each record
    that does not (not a tf.Example, a value of another type than declared) is one error and
    the others decode together, exactly as a clean block would."""
    from shardforge.records.errors import ExampleDecodeError
    from shardforge.records.example import decode_example

    decode = ((lambda records: decode_batch(records, varlen)) if varlen is not None
              else (lambda records: _as_lists(decode_example, records, names)))
    try:
        batch = decode(block)
        kept = list(range(len(block)))
    except Exception:  # noqa: BLE001 - find the bad records one by one below
        kept = []
        for i, (data, off) in enumerate(zip(block, offsets.tolist())):
            try:
                decode([data])
            except ExampleDecodeError as err:  # a malformed record is one bad row
                yield ReadError(f"{path}@{off}", f"expected {err.expected}, got {err.actual}",
                                feature=err.feature)
                continue
            except Exception as err:  # noqa: BLE001 - protobuf's own errors: one bad row too
                yield ReadError(f"{path}@{off}", f"not a tf.Example: {err}")
                continue
            kept.append(i)
        if not kept:
            return
        batch = decode([block[i] for i in kept])
    yield RawChunk(path, int(offsets[kept[0]]), len(kept), {n: batch[n] for n in names},
                   np.asarray(offsets, dtype=np.int64)[kept], kind="offset")


def _as_lists(decode_example, records, names) -> dict:
    """The value lists of ``names`` of each record (``None``: absent or empty)."""
    examples = [decode_example(data) for data in records]
    return {n: [None if e.get(n) is None or len(e[n]) == 0 else e[n].tolist()
                for e in examples] for n in names}


@contextlib.contextmanager
def _local_copy(path: str):
    if "://" not in path:
        yield path
        return
    # Remote file: copy to local scratch first; the records reader works on local paths.
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(path))
        with open_path(path) as src, open(local, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        yield local
