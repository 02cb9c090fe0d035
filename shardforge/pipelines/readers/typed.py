"""A feature set's view of the input: typed chunks of a file (read, then coerced by the declared
inputs), and the check, before a job, that the input files hold the declared columns. Both
passes of the job read through :func:`typed_chunks`; it is plain Python, so it runs in a test."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from shardforge.features.image import SOURCE_DIR
from shardforge.pipelines.readers import check_columns, reader_for
from shardforge.pipelines.readers.base import (
    RawChunk,
    ReadError,
    Split,
    missing_mask,
    row_error_records,
)
from shardforge.records.spec import Batch


@dataclass
class TypedChunk:
    """One chunk after coercion: the typed rows, which raw rows they are, their missing counts."""

    chunk: RawChunk
    batch: Batch
    keep: np.ndarray
    missing: dict[str, int]

    def row_id(self, i: int) -> str:
        """The source of typed row ``i`` (``file:line`` and the like)."""
        return self.chunk.row_id(int(self.keep[i]))


def typed_chunks(fs, split: Split | str, fmt: str | None, chunk_rows: int,
                 non_finite: str = "error") -> Iterator[TypedChunk | dict]:
    """``TypedChunk``\\ s and error dicts (one per failed row) of one file or split, in file
    order: read and coerce, the common first step of both passes over the input. Every chunk
    read comes out as a ``TypedChunk``, its failed rows too (``keep`` may be empty), so a pass
    counts every row it read (``chunk.count``) before any can fail."""
    from shardforge.features.coerce import coerce

    split = split if isinstance(split, Split) else Split(split)
    reader = reader_for(fmt, split.path)
    spec = reader.inputs(fs.input_spec())
    # the reader provides SOURCE_DIR itself (the row's input directory, where relative image
    # paths resolve); it is never a column of the file
    provided = spec.pop(SOURCE_DIR, None) is not None
    inputs = [inp for inp in fs.input_columns if inp.name in spec or inp.name == SOURCE_DIR]
    for item in reader.read(split, spec, chunk_rows):
        if isinstance(item, ReadError):
            yield item.to_json()
            continue
        if provided:
            item.columns[SOURCE_DIR] = [posixpath.dirname(item.source).encode()] * item.count
        batch, errors = coerce(inputs, item.columns, non_finite=non_finite)
        keep = np.arange(item.count)
        if errors:
            yield from row_error_records(errors, "parse", item.row_id)
            keep = np.setdiff1d(keep, np.fromiter({e.row for e in errors}, dtype=np.int64))
        missing = {n: int(missing_mask(item.columns.get(n), item.count)[keep].sum())
                   for n in spec}
        yield TypedChunk(item, batch, keep, missing)


def check_input_columns(patterns: str | Sequence[str], fs, fmt: str | None = None,
                        absent_ok: Sequence[str] = ()) -> None:
    """Fail before the job starts when a matched file lacks a declared input of the feature set
    ``fs`` (see :func:`~shardforge.pipelines.readers.check_columns`); remote and unmatched
    patterns are left to the job."""
    from apache_beam.io.filesystems import FileSystems

    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    names = [n for n in fs.input_spec() if n != SOURCE_DIR]
    paths = [m.path for p in patterns if "://" not in p
             for m in FileSystems.match([p])[0].metadata_list]
    check_columns(sorted(paths), fmt, names, absent_ok)
