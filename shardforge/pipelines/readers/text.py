"""Text documents: each file is one record, ``text`` (UTF-8, else raw bytes) and ``path``."""

from __future__ import annotations

from shardforge.pipelines.readers.base import Inputs, RawChunk, Split, open_path

# The columns a ``text`` record offers; a feature set declares the ones it uses.
TEXT_COLUMNS = ("text", "path")


class TextReader:
    """Whole files as documents (source code, prose)."""

    name = "text"
    suffixes = (".txt", ".py", ".md")

    def inputs(self, spec: dict) -> dict:
        return {n: s for n, s in spec.items() if n in TEXT_COLUMNS}

    def columns(self, path: str) -> None:
        return None

    def split(self, path: str, target: int) -> list[Split]:
        return [Split(path)]

    def read(self, split: Split, inputs: Inputs, chunk_rows: int):
        path = split.path
        with open_path(path) as raw:
            data = raw.read()
        try:
            text: str | bytes = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data
        record = {"text": text, "path": path}
        yield RawChunk(path, 1, 1, {n: [record.get(n)] for n in inputs})
