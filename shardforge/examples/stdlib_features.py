"""The demo's feature set for a corpus of Python source files read with ``--format text``.

The ``text`` reader gives each file as one row with its ``text`` and ``path``. Features:

- ``tokens``: the file's UTF-8 bytes as ids 0..255 (byte-level: no unknown tokens);
- ``package``: the name of the directory the file is in (``email``, ``asyncio``, ``mime``, ...;
  top-level modules get the corpus directory's name), vocabulary learned in the analyze pass;
- ``size_bucket``: the file's size bucketed at :data:`SIZE_BUCKETS` bytes.

``package`` and ``size_bucket`` are derived from the raw inputs by two small custom columns
written with the public column API (:class:`shardforge.features.Column`), composed with the
built-in vocabulary and bucketized columns. The file is self-contained: ``shardforge run``
ships its text to every Beam worker::

    shardforge run --features shardforge/examples/stdlib_features.py --format text \\
        --split-key text --input 'corpus/*.py' --input 'corpus/*/*.py' --output out/
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import shardforge.features as sf

SIZE_BUCKETS = (2_000, 5_000, 10_000, 20_000)  # file-size bucket boundaries, bytes


@dataclass(frozen=True)
class DirectoryName(sf.Column):
    """The name of the directory of each path, as bytes (separators ``/`` or ``\\``)."""

    path: str
    name: str

    def inputs(self):
        return (sf.Input(self.path, "bytes", default=b""),)

    def transform(self, values, state):
        out = np.empty(len(values[0]), dtype=object)
        for i, p in enumerate(values[0]):
            parts = p.replace(b"\\", b"/").rsplit(b"/", 2)
            out[i] = parts[-2] if len(parts) > 1 else b""
        return out

    def output(self, state, inputs):
        return sf.Output.strings()


@dataclass(frozen=True)
class ByteLength(sf.Column):
    """The length in bytes of each string of an input declared by another column."""

    source: str
    name: str

    def inputs(self):
        return (self.source,)

    def transform(self, values, state):
        return np.fromiter(map(len, values[0]), dtype=np.int64, count=len(values[0]))

    def output(self, state, inputs):
        return sf.Output.numeric(dtype="int64")


tokens = sf.text("text", tokenizer="bytes", name="tokens")
package = sf.categorical_vocab(DirectoryName("path", "directory"), num_oov_buckets=1,
                               name="package")
size_bucket = sf.bucketized(sf.numeric(ByteLength("text", "size"), name="size_bytes"),
                            boundaries=SIZE_BUCKETS, name="size_bucket")

FEATURES = sf.FeatureSet([tokens, package, size_bucket])
