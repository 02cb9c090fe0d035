"""Transform is a pure row-wise function: splitting a batch never changes a row's output."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import shardforge.features as sf
from shardforge.records.spec import Ragged, take_rows

WORDS = ["a", "bb", "c c", "dé", "", "x" * 70]
COUNTRY = sf.categorical_vocab("country", top_k=3, num_oov_buckets=2)
TAGS = sf.categorical_vocab("tags", multivalued=True, frequency_threshold=2)
AGE = sf.bucketized(sf.numeric("age", default=30.0), num_buckets=4)
FS = sf.FeatureSet([
    sf.numeric("price", default=0.0, normalize="zscore"),
    AGE,
    sf.embedding(COUNTRY, dim=2),
    sf.indicator(sf.crossed([COUNTRY, AGE, "tags"], hash_bucket_size=50)),
    sf.embedding(sf.text("q", tokenizer="regex", pattern=r"\s+", top_k=4, max_length=3), dim=3),
    sf.indicator(TAGS),
    sf.categorical_hash("item", 97, dtype="int64"),
])

rows = st.lists(st.fixed_dictionaries({
    "price": st.one_of(st.none(), st.floats(-1e3, 1e3, allow_nan=False).map(str)),
    "age": st.one_of(st.none(), st.integers(0, 99)),
    "country": st.sampled_from(WORDS),
    "tags": st.lists(st.sampled_from(WORDS[:4]), max_size=3),
    "q": st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join),
    "item": st.integers(-(2**40), 2**40),
}), min_size=2, max_size=40)


def split_equal(a, b, c):
    for k in a:
        if isinstance(a[k], Ragged):
            assert a[k].to_list() == b[k].to_list() + c[k].to_list(), k
        else:
            assert np.array_equal(a[k], np.concatenate([b[k], c[k]])), k


@settings(max_examples=25, deadline=None, database=None)
@given(rows, st.data())
def test_transform_is_rowwise_and_deterministic(data_rows, data):
    raw = {k: [r[k] for r in data_rows] for k in data_rows[0]}
    batch, errors = FS.coerce(raw)
    assert errors == []
    state = FS.fit([batch])
    full = FS.transform(batch, state)
    cut = data.draw(st.integers(1, len(data_rows) - 1))
    n = len(data_rows)
    first = FS.transform(take_rows(batch, np.arange(cut)), state)
    second = FS.transform(take_rows(batch, np.arange(cut, n)), state)
    split_equal(full, first, second)
    # fitting on the same data in two batches and one merge gives the same vocabularies
    an = FS.analyzer()
    parts = [an.add_batch(an.create(), take_rows(batch, idx))
             for idx in (np.arange(cut), np.arange(cut, n))]
    merged = an.extract(an.merge(parts))
    for key in ("country", "tags", "q"):
        assert merged.columns[key]["vocab"] == state.columns[key]["vocab"]


@settings(max_examples=40, deadline=None, database=None)
@given(st.lists(st.binary(max_size=40) | st.text(alphabet=" \t\nAbc\x0bé", max_size=20)
                .map(str.encode), min_size=1, max_size=20), st.booleans())
def test_whitespace_and_bytes_tokenizers_match_python(values, lowercase):
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    prep = [v.lower() if lowercase else v for v in values]  # bytes.lower() is ASCII-only
    raw = sf.Input("t", "bytes", default=b"")
    source = sf.lower(raw) if lowercase else raw
    fs = sf.FeatureSet([sf.split(source, name="ws"), sf.split(source, sep=" ", name="sp"),
                        sf.ByteIds(source, "by")])
    out = fs.transform({"t": arr}, fs.fit([]))
    assert out["ws"].to_list() == [v.split() for v in prep]
    assert out["sp"].to_list() == [v.split(b" ") for v in prep]
    assert out["by"].to_list() == [list(v) for v in prep]
