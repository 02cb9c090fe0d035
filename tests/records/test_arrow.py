"""Columnar batches <-> Arrow, and shards <-> Parquet."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shardforge.records import (
    FixedLen,
    Ragged,
    ShardedWriter,
    VarLen,
    arrow_to_batch,
    batch_to_arrow,
    decode_batch,
    encode_batch,
    infer_spec,
    parquet_to_shards,
    read_records,
    shards_to_parquet,
    take_rows,
)

from .conftest import assert_batches_equal

BATCH = {
    "id": np.arange(4, dtype=np.int64),
    "x": np.linspace(0, 1, 4, dtype=np.float32),
    "vec": np.arange(24, dtype=np.float32).reshape(4, 2, 3),
    "tok": Ragged.from_rows([[1, 2], [], [3], [4, 5, 6]]),
    "name": np.array([b"a", b"", b"c\0", b"d"], dtype=object),
    "words": Ragged.from_rows([[b"x"], [b"y", b"z"], [], []], dtype=object),
}


def test_batch_arrow_round_trip():
    rb = batch_to_arrow(BATCH)
    assert rb.schema.field("tok").type == pa.large_list(pa.int64())
    assert rb.schema.field("name").type == pa.binary()
    assert rb.num_rows == 4
    assert_batches_equal(arrow_to_batch(rb), BATCH)
    assert_batches_equal(arrow_to_batch(pa.Table.from_batches([rb]).slice(0, 4)), BATCH)
    sliced = arrow_to_batch(rb.slice(1, 2))
    assert sliced["tok"].to_list() == [[], [3]]


def test_foreign_arrow_types_coerce_to_example_types():
    rb = pa.record_batch({"i": pa.array([1, 2], pa.int32()), "f": pa.array([0.5, 1.0]),
                          "s": pa.array(["é", "b"]), "l": pa.array([[1.0], [2.0, 3.0]])})
    out = arrow_to_batch(rb)
    assert out["i"].dtype == np.int64 and out["f"].dtype == np.float32
    assert out["s"].tolist() == ["é".encode(), b"b"] and out["l"].to_list() == [[1.0], [2.0, 3.0]]


def test_shards_parquet_round_trip(tmp_path):
    with ShardedWriter(tmp_path / "in", num_shards=2, compression="gzip") as w:
        for rec in encode_batch(BATCH):
            w.write(rec)
    spec = {"id": FixedLen("int64"), "x": FixedLen("float32"), "vec": FixedLen("float32", (2, 3)),
            "tok": VarLen("int64"), "name": FixedLen("bytes"), "words": VarLen("bytes")}
    assert shards_to_parquet(w.paths, tmp_path / "a.parquet", spec=spec) == 4
    table = pq.read_table(tmp_path / "a.parquet")
    assert sorted(table.column("id").to_pylist()) == [0, 1, 2, 3]
    paths = parquet_to_shards(tmp_path / "a.parquet", tmp_path / "out", num_shards=1)
    back = decode_batch(list(read_records(paths)), spec)
    assert_batches_equal(take_rows(back, np.argsort(back["id"])), BATCH)
    # without a spec one is inferred from the records
    assert shards_to_parquet(paths, tmp_path / "b.parquet") == 4
    assert set(pq.read_table(tmp_path / "b.parquet").column_names) == set(BATCH)
    assert infer_spec(read_records(paths))["vec"] == FixedLen("float32", (6,))
