"""TFRecord files of tf.Example records (``records.iter_blocks``), decoded a block at a time.

Every input comes as value lists (``Ragged``); coercion checks the counts against the
declarations. A record failing its checksum or not a tf.Example is an error with its offset; a
broken frame ends the file with an error.
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
    from shardforge.records.example import decode_example

    if varlen is not None:
        try:
            batch = decode_batch(block, varlen)
            yield RawChunk(path, int(offsets[0]), len(block), {n: batch[n] for n in names},
                           np.asarray(offsets, dtype=np.int64), kind="offset")
            return
        except Exception:  # noqa: BLE001 - find the bad records one by one below
            pass
    records, kept = [], []
    for data, off in zip(block, offsets.tolist()):
        try:
            example = decode_example(data)
        except Exception as err:  # noqa: BLE001 - a malformed payload is one bad record
            yield ReadError(f"{path}@{off}", f"not a tf.Example: {err}")
            continue
        records.append({n: (None if example.get(n) is None or len(example[n]) == 0
                            else example[n].tolist()) for n in names})
        kept.append(off)
    if records:
        yield RawChunk(path, kept[0], len(records), {n: [r[n] for r in records] for n in names},
                       np.asarray(kept, dtype=np.int64), kind="offset")


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
