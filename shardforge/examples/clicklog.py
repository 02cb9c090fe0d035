"""Synthetic click log with a known relationship between the features and the click label.

    from shardforge.examples.clicklog import generate_clicklog, write_csv
    cols = generate_clicklog(100_000, seed=0)    # dict of numpy columns
    write_csv("clicks.csv", 100_000, seed=0)

Columns: ``label`` (0/1 click), ``price`` (log-normal, ~5% missing), ``age`` (18..80),
``country`` (Zipf over 200 codes), ``item_id`` (Zipf over 50k ids), ``query`` (1-20 words, Zipf over
a 5k-word vocabulary), ``lat``, ``lon``. The click probability is ``sigmoid(logit)`` with
(see :func:`click_logit`):

- a fixed per-country effect (N(0, 0.7), the same for every seed),
- ``-0.6 * z(log price)``; a missing price adds +0.3,
- +0.6 for ages 25-34, -0.4 above 60,
- +0.8 for items whose number is a multiple of 5,
- +0.4 per "intent" word (``w0``, ``w2``, ... ``w18``) in the query, at most 3.

The Bayes-optimal AUC is about 0.75 (``click_logit`` itself scores that), so a tabular model over
the example features should clearly beat 0.5.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

N_COUNTRIES = 200
N_ITEMS = 50_000
N_WORDS = 5_000
MISSING_PRICE = 0.05
_EFFECT_SEED = 1234  # the per-country effects are part of the "known" relationship


def _zipf(rng: np.random.Generator, n_values: int, size: int, s: float = 1.1) -> np.ndarray:
    p = 1.0 / np.arange(1, n_values + 1) ** s
    return rng.choice(n_values, size=size, p=p / p.sum())


def country_codes() -> np.ndarray:
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    i = np.arange(N_COUNTRIES)
    return np.array([f"{a}{b}" for a, b in zip(letters[i // 26 % 26], letters[(i * 7) % 26])])


def country_effects() -> np.ndarray:
    return np.random.default_rng(_EFFECT_SEED).normal(0.0, 0.7, N_COUNTRIES)


def click_logit(cols: dict[str, np.ndarray]) -> np.ndarray:
    """The true logit of a click given the generated columns."""
    codes = np.char.encode(country_codes())
    order = np.argsort(codes)
    country = np.asarray(cols["country"]).astype(codes.dtype)
    country_idx = order[np.searchsorted(codes[order], country)]
    logp = np.log(cols["price"])
    z = (logp - np.nanmean(logp)) / np.nanstd(logp)
    price_term = np.where(np.isnan(z), 0.3, -0.6 * np.nan_to_num(z))
    age = cols["age"]
    age_term = np.where((age >= 25) & (age < 35), 0.6, 0.0) + np.where(age > 60, -0.4, 0.0)
    items = pa.array(cols["item_id"], pa.binary()).cast(pa.string())
    item_num = pc.utf8_slice_codeunits(items, 5).cast(pa.int64()).to_numpy()
    item_term = np.where(item_num % 5 == 0, 0.8, 0.0)
    words = pc.ascii_split_whitespace(pa.array(cols["query"], pa.binary()).cast(pa.string()))
    flat = pc.list_flatten(words).to_numpy(zero_copy_only=False)
    parent = pc.list_parent_indices(words).to_numpy()
    intent = np.isin(flat, [f"w{i}" for i in range(0, 20, 2)])
    n_intent = np.bincount(parent, weights=intent, minlength=len(age))
    query_term = 0.4 * np.minimum(n_intent, 3)
    return -1.2 + country_effects()[country_idx] + price_term + age_term + item_term + query_term


def generate_clicklog(n_rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Columns of ``n_rows`` clicks: numpy float/int arrays, object arrays of ``bytes`` for text;
    a missing price is NaN."""
    rng = np.random.default_rng(seed)
    price = np.exp(rng.normal(3.0, 1.0, n_rows))
    price[rng.random(n_rows) < MISSING_PRICE] = np.nan
    age = rng.integers(18, 81, n_rows).astype(np.int64)
    country = country_codes()[_zipf(rng, N_COUNTRIES, n_rows)]
    item = _zipf(rng, N_ITEMS, n_rows, s=1.05)
    lengths = rng.integers(1, 21, n_rows)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    vocab = pa.array([f"w{i}" for i in range(N_WORDS)])
    words = vocab.take(pa.array(_zipf(rng, N_WORDS, int(offsets[-1]))))
    query = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), words), " ")
    cols = {
        "price": price,
        "age": age,
        "country": np.char.encode(country).astype(object),
        "item_id": pc.binary_join_element_wise("item_", pa.array(item).cast(pa.string()), "")
        .cast(pa.binary())
        .to_numpy(zero_copy_only=False),
        "query": query.cast(pa.binary()).to_numpy(zero_copy_only=False),
        "lat": rng.uniform(-60.0, 70.0, n_rows),
        "lon": rng.uniform(-180.0, 180.0, n_rows),
    }
    p = 1.0 / (1.0 + np.exp(-click_logit(cols)))
    cols["label"] = (rng.random(n_rows) < p).astype(np.int64)
    return cols


def write_csv(path: str, n_rows: int, seed: int = 0) -> str:
    """Write the click log as CSV with a header; a missing price is an empty field."""
    return columns_to_csv(path, generate_clicklog(n_rows, seed))


def columns_to_csv(path: str, cols: dict[str, np.ndarray]) -> str:
    """Write click-log columns (as :func:`generate_clicklog` returns them, possibly altered) as
    CSV; a NaN is an empty field, and columns beyond the click log's are written too."""
    import pyarrow.csv as pacsv

    table = pa.table(
        {
            "label": cols["label"],
            "price": pa.array(cols["price"], from_pandas=True),
            "age": cols["age"],
            "country": pa.array(cols["country"], pa.binary()).cast(pa.string()),
            "item_id": pa.array(cols["item_id"], pa.binary()).cast(pa.string()),
            "query": pa.array(cols["query"], pa.binary()).cast(pa.string()),
            "lat": cols["lat"],
            "lon": cols["lon"],
        }
    )
    for name in sorted(set(cols) - set(table.column_names)):
        table = table.append_column(name, pa.array(cols[name], from_pandas=True))
    pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="needed"))
    return path


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(write_csv(a.path, a.rows, a.seed))
