"""The input formats, one :class:`~shardforge.pipelines.readers.base.Reader` each, in one registry.

Adding a format is one module with a class that follows the ``Reader`` protocol (``name``,
``suffixes``, ``inputs``, ``columns``, ``split``, ``read``) and one line in :data:`READERS`; the
job, the ``--format`` choices, suffix inference and the header check all ask the registry.

What a reader does with a bad input is in its module's docstring (the README's error policy).

>>> reader_for(None, "data/clicks.csv.gz").name
'csv'
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Sequence

from shardforge.pipelines.readers.base import (
    COMPRESSED,
    DEFAULT_CHUNK_ROWS,
    Inputs,
    MissingColumnsError,
    RawChunk,
    Reader,
    ReadError,
    Split,
)
from shardforge.pipelines.readers.csv import CsvReader
from shardforge.pipelines.readers.jsonl import JsonlReader
from shardforge.pipelines.readers.parquet import ParquetReader
from shardforge.pipelines.readers.text import TextReader
from shardforge.pipelines.readers.tfrecord import TfrecordReader

READERS: dict[str, Reader] = {
    r.name: r for r in (CsvReader(), JsonlReader(), ParquetReader(), TfrecordReader(),
                        TextReader())
}

__all__ = [
    "DEFAULT_CHUNK_ROWS", "READERS", "MissingColumnsError", "RawChunk", "ReadError", "Reader",
    "Split", "check_columns", "infer_format", "read_file", "reader_for",
]


def infer_format(path: str) -> str:
    """The format of ``path`` (or glob) from its suffix, looking through ``.gz`` and the like."""
    name = path.lower()
    for suffix in COMPRESSED:
        name = name.removesuffix(suffix)
    ext = os.path.splitext(name)[1]
    for reader in READERS.values():
        if ext in reader.suffixes:
            return reader.name
    raise ValueError(
        f"cannot infer the input format of {path!r} from its suffix {ext!r}; "
        f"pass --format {'|'.join(READERS)}"
    )


def reader_for(fmt: str | None, path: str = "") -> Reader:
    """The reader named ``fmt``, or (``fmt=None``) the one ``path``'s suffix names."""
    name = fmt or infer_format(path)
    if name not in READERS:
        raise ValueError(f"unknown format {name!r}; expected one of {', '.join(READERS)}")
    return READERS[name]


def read_file(path: str, fmt: str | None, inputs: Inputs,
              chunk_rows: int = DEFAULT_CHUNK_ROWS, split: Split | None = None
              ) -> Iterator[RawChunk | ReadError]:
    """Chunks and :class:`ReadError`\\ s of one file (or of one ``split`` of it, from the
    reader's ``split``), in file order. ``inputs``: the input names, or the input spec
    (``FeatureSet.input_spec()``), which types JSON and TFRecord reads.

    >>> for item in read_file("clicks.csv", None, ["price"]):  # doctest: +SKIP
    ...     print(item.row_id(0) if isinstance(item, RawChunk) else item.reason)
    clicks.csv:2
    """
    return reader_for(fmt, path).read(split or Split(path), inputs, chunk_rows)


def check_columns(paths: Sequence[str], fmt: str | None, names: Sequence[str],
                  absent_ok: Collection[str] = ()) -> None:
    """Raise :class:`MissingColumnsError` when a file's declared columns (a CSV header, a Parquet
    schema) lack a declared input (other than ``absent_ok``), naming the column, the file and
    the closest names. Files whose records name their own fields are not checked.

    >>> check_columns(["clicks.csv"], None, ["prcie"])  # doctest: +SKIP
    MissingColumnsError: clicks.csv has no column 'prcie' (closest: 'price'); ...
    """
    import difflib

    unknown = set(absent_ok) - set(names)
    if unknown:
        raise ValueError(f"absent_ok names {sorted(unknown)}, which are not inputs of the "
                         f"feature set (inputs: {list(names)})")
    problems = []
    for path in paths:
        reader = reader_for(fmt, path)
        try:
            columns = reader.columns(path)
        except Exception:  # noqa: BLE001 - an unreadable file is reported by the reader
            continue
        if columns is None:
            continue
        for name in reader.inputs(dict.fromkeys(names)):
            if name in columns or name in absent_ok:
                continue
            close = difflib.get_close_matches(name, columns, n=3, cutoff=0.5)
            hint = f" (closest: {', '.join(map(repr, close))})" if close else ""
            problems.append(f"{path} has no column {name!r}{hint}; its columns: "
                            f"{', '.join(columns[:20])}{' ...' if len(columns) > 20 else ''}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise MissingColumnsError(
            "declared inputs missing from the input files: " + "; ".join(problems[:5]) + more
            + ". Fix the header or the feature set, or list columns that may be absent in "
            "absent_ok (--allow-absent)")
