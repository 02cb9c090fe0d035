"""The demo's feature set for a corpus of Python source files read with ``--format text``.

The ``text`` reader gives each file as one row with its ``text`` and ``path``. Features:

- ``tokens``: the file's UTF-8 bytes as ids 0..255 (byte-level: no unknown tokens);
- ``package``: the name of the directory the file is in (``email``, ``asyncio``, ``mime``, ...;
  top-level modules get the corpus directory's name), vocabulary learned in the analyze pass;
- ``size_bucket``: the file's size bucketed at :data:`SIZE_BUCKETS` bytes.

``package`` and ``size_bucket`` are derived from the raw inputs, which no built-in column does, so
they are two small custom columns (subclasses of the feature library's column types). They live
in this file, which is self-contained: ``shardforge run`` ships its text to every Beam worker::

    shardforge run --features shardforge/examples/stdlib_features.py --format text --split-key text \\
        --input 'corpus/*.py' --input 'corpus/*/*.py' --output out/
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import shardforge.features as sf
from shardforge.features.columns import CategoricalColumn, VocabColumn, vocab_lookup

SIZE_BUCKETS = (2_000, 5_000, 10_000, 20_000)  # file-size bucket boundaries, bytes

tokens = sf.text("text", tokenizer="bytes", name="tokens")


def package_of(paths) -> np.ndarray:
    """The name of each path's directory, as bytes (path separators ``/`` or ``\\``)."""
    out = np.empty(len(paths), dtype=object)
    for i, p in enumerate(paths):
        p = p.decode() if isinstance(p, bytes) else str(p)
        parts = p.replace("\\", "/").rsplit("/", 2)
        out[i] = (parts[-2] if len(parts) > 1 else "").encode()
    return out


@dataclass(frozen=True, eq=True)
class PackageColumn(VocabColumn):
    """A vocabulary over :func:`package_of` of the ``path`` input."""

    def analyze_values(self, batch: dict, key: str) -> np.ndarray:
        return package_of(batch[self.key_])

    def compute_ids(self, ctx) -> np.ndarray:
        values = package_of(ctx.get(self.source, self.name))
        return vocab_lookup(ctx.state[self.key], values, "bytes", self.num_oov_buckets,
                            self.default_value)


@dataclass(frozen=True, eq=True)
class SizeBucketColumn(CategoricalColumn):
    """The length of the ``text`` input (characters), bucketized at ``boundaries``."""

    boundaries: tuple = SIZE_BUCKETS
    name: str = "size_bucket"
    column_type = "bucketized"

    def inputs(self) -> list:
        return [tokens.source]  # the same raw input as the tokens: the file's text

    def num_buckets(self, state: dict) -> int:
        return len(self.boundaries) + 1

    def compute_ids(self, ctx) -> np.ndarray:
        texts = ctx.get(tokens.source, self.name)
        sizes = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        return np.searchsorted(np.asarray(self.boundaries), sizes, side="right")


FEATURES = sf.FeatureSet([
    tokens,
    PackageColumn("path", num_oov_buckets=1, default=b"", name="package"),
    SizeBucketColumn(),
])
