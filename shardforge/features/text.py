"""Text columns: a tokenizer composed with a vocabulary, or byte ids.

``text("query", top_k=2000)`` is ``categorical_vocab(split("query"), top_k=2000,
num_oov_buckets=1)`` marked as a sequence: the tokens are a :mod:`~shardforge.features.strings`
column, the ids a :class:`~shardforge.features.categorical.VocabColumn` over them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from shardforge.features.categorical import (
    LookupColumn,
    categorical_vocab,
    categorical_vocab_list,
)
from shardforge.features.column import Input, Output, as_bytes, check_int, check_name
from shardforge.features.strings import lower, regex_split, split, to_strbuf
from shardforge.records.spec import Ragged

TOKENIZERS = ("whitespace", "regex", "bytes")


@dataclass(frozen=True)
class ByteIds(LookupColumn):
    """The UTF-8 bytes of each string as ids 0..255 (byte-level: no unknown tokens)."""

    column_type = "text"
    reads_strbuf = True

    @property
    def varlen(self) -> bool:
        return True

    def num_buckets(self, state: dict[str, Any]) -> int:
        return 256

    def transform(self, values: Sequence[Any], state: dict[str, Any]) -> Ragged:
        sb = to_strbuf(values[0])
        return self._truncate(Ragged(sb.buf[sb.offsets[0]:sb.offsets[-1]].astype(np.int64),
                                     sb.offsets - sb.offsets[0]))

    def output(self, state: dict[str, Any], inputs: Sequence[Output]) -> Output:
        return Output.ids(256, varlen=True, sequence=True, max_length=self.max_length or 0)


def text(
    key: str,
    tokenizer: str = "whitespace",
    pattern: str | None = None,
    lowercase: bool = False,
    top_k: int | None = None,
    frequency_threshold: int | None = None,
    num_oov_buckets: int = 1,
    default_value: int = -1,
    vocabulary_list: Sequence | None = None,
    max_length: int | None = None,
    default: Any = "",
    name: str | None = None,
    approximate_capacity: int | None = None,
) -> LookupColumn:
    """Text to varlen int64 token ids (a sequence column).

    ``tokenizer``: ``whitespace`` (``tf.strings.split(x)``) | ``regex`` (split on matches of
    ``pattern``, empty parts dropped) | ``bytes`` (UTF-8 bytes as ids 0..255, no vocabulary).
    The vocabulary is learned (``top_k``, ``frequency_threshold``, tf.Transform's order) unless
    ``vocabulary_list`` is given; OOV tokens hash into ``num_oov_buckets``. ``max_length``
    keeps the first tokens of each row. For ``split(x, sep=" ")``, n-grams or other token
    pipelines compose the columns yourself: ``sequence(categorical_vocab(ngrams(...)))``.

    >>> query = text("query", tokenizer="whitespace", top_k=2000)
    """
    check_name(key, "text key")
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"text column {key!r}: tokenizer={tokenizer!r}; "
                         f"expected one of {TOKENIZERS}")
    if tokenizer != "regex" and pattern is not None:
        raise ValueError(f"text column {key!r}: pattern= is only used with tokenizer='regex'")
    if tokenizer == "regex" and not pattern:
        raise ValueError(f"text column {key!r}: tokenizer='regex' needs pattern=")
    if max_length is not None:
        check_int(max_length, f"text column {key!r}: max_length")
    source = Input(key, "bytes", (), False, None if default is None else as_bytes(default))
    out_name = name or key
    if tokenizer == "bytes":
        if top_k or frequency_threshold or vocabulary_list:
            raise ValueError(f"text column {key!r}: the bytes tokenizer has a fixed "
                             "vocabulary of 256 ids")
        return ByteIds(source, out_name, True, max_length)
    strings = lower(source, name=f"{out_name}_lower") if lowercase else source
    if tokenizer == "regex":
        tokens = regex_split(strings, pattern, name=f"{out_name}_tokens")
    else:
        tokens = split(strings, name=f"{out_name}_tokens")
    if vocabulary_list is not None:
        ids = categorical_vocab_list(tokens, vocabulary_list, num_oov_buckets, default_value,
                                     dtype="bytes", name=out_name)
    else:
        ids = categorical_vocab(tokens, top_k, frequency_threshold, num_oov_buckets,
                                default_value, approximate_capacity=approximate_capacity,
                                name=out_name)
    return replace(ids, sequence=True, max_length=max_length, column_type="text")

