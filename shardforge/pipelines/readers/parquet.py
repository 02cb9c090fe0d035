"""Parquet, read in Arrow record batches (``iter_batches``) of the declared columns only, split
by row groups. An unreadable file or row group is one error naming the file."""

from __future__ import annotations

from shardforge.pipelines.readers.base import Inputs, RawChunk, ReadError, Split, open_path

# Rows per split: enough work per element to amortize its overhead, enough splits that one big
# file keeps every worker busy.
SPLIT_ROWS = 1 << 18


class ParquetReader:
    """Parquet files; a row is named ``file:row N``."""

    name = "parquet"
    suffixes = (".parquet", ".pq")

    def inputs(self, spec: dict) -> dict:
        return spec

    def columns(self, path: str) -> list[str]:
        import pyarrow.parquet as pq

        with open_path(path) as raw:
            return list(pq.ParquetFile(raw).schema_arrow.names)

    def split(self, path: str, target: int) -> list[Split]:
        """Whole row groups of about :data:`SPLIT_ROWS` rows each (``target`` bytes do not
        apply: a row group is the unit Parquet reads)."""
        import pyarrow.parquet as pq

        try:
            with open_path(path) as raw:
                meta = pq.ParquetFile(raw).metadata
        except Exception:  # noqa: BLE001 - the reader reports an unreadable file, naming it
            return [Split(path)]
        splits, start, first, rows = [], 0, 0, 0
        for g in range(meta.num_row_groups):
            rows += meta.row_group(g).num_rows
            if rows - first >= SPLIT_ROWS:
                splits.append(Split(path, start, g + 1, first))
                start, first = g + 1, rows
        if start < meta.num_row_groups or not splits:
            splits.append(Split(path, start, None, first))
        return splits

    def read(self, split: Split, inputs: Inputs, chunk_rows: int):
        import pyarrow as pa
        import pyarrow.parquet as pq

        path, names = split.path, list(inputs)
        start = split.first
        with open_path(path) as raw:
            try:
                pf = pq.ParquetFile(raw)
                present = [n for n in names if n in pf.schema_arrow.names]
                groups = range(split.start, pf.metadata.num_row_groups if split.end is None
                               else split.end)
                for rb in pf.iter_batches(batch_size=chunk_rows, columns=present,
                                          row_groups=list(groups)):
                    columns = {n: rb.column(n) for n in present}
                    columns.update({n: None for n in names if n not in columns})
                    yield RawChunk(path, start, rb.num_rows, columns, kind="row")
                    start += rb.num_rows
            except (pa.ArrowException, OSError, ValueError) as err:
                where = "" if not start else f" after row {start}"
                yield ReadError(path, f"unreadable Parquet file{where}: {err}")
