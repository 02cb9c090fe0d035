"""ShardDataset: every record once per epoch across ranks x workers, equal batches per rank,
seeded shuffles, and exact resumption (also onto a different topology)."""

import numpy as np
import pytest

from shardforge.records import (
    ExampleDecodeError,
    FixedLen,
    TFRecordWriter,
    VarLen,
    build_index,
    encode_example,
    read_records,
)
from shardforge.training.dataset import (
    POSITION_KEY,
    ShardDataset,
    WorkList,
    subtract_ranges,
)

SHARD_SIZES = (37, 5, 120, 0, 64, 11)  # uneven on purpose, one empty shard


def write_shards(directory, sizes=SHARD_SIZES, max_len=40, seed=0):
    """Shards of records {id, tokens}; odd shards gzip. Returns the token lists by id."""
    rng = np.random.default_rng(seed)
    docs, rid = [], 0
    directory.mkdir(parents=True, exist_ok=True)
    for s, n in enumerate(sizes):
        path = directory / f"part-{s:05d}-of-{len(sizes):05d}.tfrecord{'.gz' if s % 2 else ''}"
        with TFRecordWriter(path) as w:
            for _ in range(n):
                tokens = rng.integers(0, 1000, int(rng.integers(1, max_len + 1))).tolist()
                w.write(encode_example({"id": rid, "tokens": tokens}))
                docs.append(tokens)
                rid += 1
        build_index(path)
    return docs


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    directory = tmp_path_factory.mktemp("shards") / "train"
    docs = write_shards(directory)
    return str(directory), docs


def make(path, **kw):
    kw.setdefault("batch_size", 8)
    kw.setdefault("shuffle_buffer", 64)
    kw.setdefault("block_size", 16)
    return ShardDataset(path, **kw)


def ids_of(batches):
    return [int(i) for b in batches for i in b["id"]]


def run_worker(ds, worker, n=None):
    """Items of one simulated DataLoader worker, consumed (advanced) as a loader would."""
    ds.emit_positions = True
    out = []
    for item in ds._iter_worker(worker):
        if n is not None and len(out) == n:
            break
        ds.advance(item.pop(POSITION_KEY))
        out.append(item)
    return out


def test_one_epoch_reads_every_record_once_with_the_spec_from_the_records(shards):
    path, docs = shards
    ds = make(path, shuffle=False, remainder="keep", record_ids=True)
    assert ds.spec == {"id": FixedLen("int64"), "tokens": VarLen("int64")}
    batches = list(ds)
    assert ids_of(batches) == list(range(len(docs)))  # shuffle=False keeps file order
    assert all(b["tokens"][i].tolist() == docs[b["id"][i]] for b in batches for i in range(2))
    assert [int(r) for b in batches for r in b["record_id"]] == list(range(len(docs)))
    assert len(batches) == len(ds) == -(-len(docs) // 8)


def test_seeded_shuffle_is_deterministic_per_epoch(shards):
    path, docs = shards
    a, b, c = make(path, seed=3), make(path, seed=3), make(path, seed=4)
    first, again, other = ids_of(a), ids_of(b), ids_of(c)
    assert first == again and first != other
    assert first != list(range(len(first)))
    assert ids_of(a) != first  # the next iteration is epoch 1: another order
    assert a.epoch == 2


@pytest.mark.parametrize("remainder", ["drop", "wrap"])
@pytest.mark.parametrize("world,workers", [(1, 1), (2, 1), (2, 3), (3, 2), (4, 4)])
def test_ranks_and_workers_split_records_without_duplicates(shards, world, workers, remainder):
    path, docs = shards
    n = len(docs)
    per_rank_batches, seen = set(), []
    for rank in range(world):
        ds = make(path, rank=rank, world_size=world, remainder=remainder, seed=1)
        ds.set_num_workers(workers)
        batches = [b for w in range(workers) for b in run_worker(ds, w)]
        assert all(len(b["id"]) == 8 for b in batches)
        per_rank_batches.add(len(batches))
        seen += ids_of(batches)
    assert len(per_rank_batches) == 1  # same number of batches on every rank
    if remainder == "drop":
        assert len(seen) == len(set(seen)) == n // (world * 8) * world * 8
    else:
        assert set(seen) == set(range(n)) and len(seen) == -(-n // (world * 8)) * world * 8


@pytest.mark.parametrize("shuffle", [True, False])
def test_resume_at_random_points_yields_exactly_the_rest(shards, shuffle):
    path, _ = shards
    full = [ids for ids in map(lambda b: b["id"].tolist(), make(path, shuffle=shuffle, seed=5))]
    rng = np.random.default_rng(0)
    for stop in sorted(set(rng.integers(0, len(full) + 1, 12).tolist()) | {0, len(full)}):
        ds = make(path, shuffle=shuffle, seed=5)
        it = iter(ds)
        head = [next(it)["id"].tolist() for _ in range(stop)]
        state = ds.state_dict()
        resumed = make(path, shuffle=shuffle, seed=5)
        resumed.load_state_dict(state)
        tail = [b["id"].tolist() for b in resumed]
        assert head + tail == full, stop
        assert resumed.epoch == 1


def test_resume_in_a_later_epoch_and_set_epoch(shards):
    path, _ = shards
    ds = make(path, seed=2)
    list(ds)
    epoch1 = ids_of(ds)
    ds.set_epoch(1)  # back to the start of epoch 1
    it = iter(ds)
    head = [next(it)["id"].tolist() for _ in range(3)]
    resumed = make(path, seed=2)
    resumed.load_state_dict(ds.state_dict())
    assert resumed.epoch == 1
    assert sum(head, []) + ids_of(resumed) == epoch1


def test_state_from_another_data_order_is_refused(shards):
    path, _ = shards
    state = make(path, seed=1).state_dict()
    with pytest.raises(ValueError, match="seed"):
        make(path, seed=2).load_state_dict(state)


@pytest.mark.parametrize("new_world,new_workers,new_batch", [(3, 1, 8), (1, 2, 5), (2, 2, 8)])
def test_resume_on_a_different_topology_reads_the_rest_exactly_once(shards, new_world,
                                                                    new_workers, new_batch):
    path, docs = shards
    old_world, old_workers = 2, 3
    consumed, states = [], []
    rng = np.random.default_rng(new_world * 10 + new_workers)
    for rank in range(old_world):
        ds = make(path, rank=rank, world_size=old_world, seed=7)
        ds.set_num_workers(old_workers)
        for w in range(old_workers):
            consumed += ids_of(run_worker(ds, w, n=int(rng.integers(0, 4))))
        states.append(ds.state_dict())
    rest = []
    for rank in range(new_world):
        ds = make(path, rank=rank, world_size=new_world, seed=7, batch_size=new_batch,
                  remainder="keep")
        ds.set_num_workers(new_workers)
        ds.load_state_dict(states)
        rest += [i for w in range(new_workers) for i in ids_of(run_worker(ds, w))]
    everything = consumed + rest
    assert len(everything) == len(set(everything))
    # exactly the records the old run's epoch would have read (its dropped remainder stays out)
    planned = []
    for rank in range(old_world):
        ds = make(path, rank=rank, world_size=old_world, seed=7)
        planned += ids_of(ds)
    assert len(planned) < len(docs) and set(everything) == set(planned)


def test_work_list_wraps_and_ranges_subtract():
    work = WorkList([(10, 14), (20, 22)])
    assert len(work) == 6
    assert work.to_g(2, 5) == [(12, 14), (20, 21)]
    assert work.to_g(4, 9) == [(20, 22), (10, 13)]
    assert subtract_ranges([(0, 10), (20, 30)], [(2, 4), (8, 22)]) == [(0, 2), (4, 8), (22, 30)]


def test_spec_comes_from_the_output_dirs_schema(tmp_path):
    from google.protobuf import text_format

    from shardforge.protos import schema_pb2

    write_shards(tmp_path / "out" / "train", sizes=(10,))
    schema = schema_pb2.Schema()
    schema.features.add(name="tokens", dtype=schema_pb2.INT64, varlen=True)
    (tmp_path / "out" / "schema.pbtxt").write_text(text_format.MessageToString(schema))
    ds = make(str(tmp_path / "out" / "train"), batch_size=5)
    assert ds.spec == {"tokens": VarLen("int64")}  # not inferred: the schema has no "id"
    assert set(next(iter(ds))) == {"tokens"}
    with pytest.raises(KeyError, match="nope"):
        make(str(tmp_path / "out" / "train"), features=["nope"])


@pytest.mark.parametrize("payload", [encode_example({"id": 1.5, "tokens": [1]}), b"\xff\x01junk"])
def test_decode_errors_name_the_shard_the_record_and_the_feature(tmp_path, payload):
    """A bad record deep in a shuffled epoch is reported by shard and index in it, not by its
    position in the batch."""
    directory = tmp_path / "train"
    write_shards(directory, sizes=(30, 40))
    bad = directory / "part-00001-of-00002.tfrecord.gz"
    records = list(read_records(bad))
    records[17] = payload
    with TFRecordWriter(bad) as w:
        for r in records:
            w.write(r)
    build_index(bad)
    spec = {"id": FixedLen("int64"), "tokens": VarLen("int64")}
    with pytest.raises(ExampleDecodeError) as err:
        for _ in make(str(directory), spec_or_schema=spec, seed=3):
            pass
    assert err.value.file == str(bad) and err.value.index == 17
    assert str(err.value).startswith(f"{bad}: ")
    if payload.startswith(b"\xff"):
        assert err.value.feature is None and "malformed protobuf" in str(err.value)
    else:
        assert err.value.feature == "id" and "feature 'id' of record 17" in str(err.value)
