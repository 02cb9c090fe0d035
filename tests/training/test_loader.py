"""Loaders: exact resumption through DataLoader worker processes, packed batches from shards
(documents intact, labels and positions per document), topology-change resume of packed data."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from shardforge.training import ShardLoader, packed_loader, shard_loader
from shardforge.training.dataset import POSITION_KEY, ShardDataset
from shardforge.training.packing import IGNORE_INDEX
from tests.training.test_dataset import write_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    directory = tmp_path_factory.mktemp("loader") / "train"
    docs = write_shards(directory, sizes=(90, 33, 150, 7, 60), max_len=60)
    return str(directory), docs


def packed(path, **kw):
    kw.setdefault("packing_length", 128)
    kw.setdefault("lookahead", 24)
    kw.setdefault("side_features", ("id",))
    kw.setdefault("shuffle_buffer", 50)
    kw.setdefault("block_size", 8)
    kw.setdefault("seed", 11)
    return packed_loader(path, **kw)


def doc_ids(batches):
    return [b["doc_ids"].tolist() for b in batches]


def test_packed_batches_hold_whole_documents_with_their_own_labels_and_positions(shards):
    path, docs = shards
    batches = list(packed(path))
    seen = []
    for batch in batches:
        cu = batch["cu_seqlens"].tolist()
        assert batch["num_tokens"] == cu[-1] <= 128
        assert batch["id"].tolist() == batch["doc_ids"].tolist()  # side feature per document
        for i, doc in enumerate(batch["doc_ids"].tolist()):
            a, b = cu[i], cu[i + 1]
            assert batch["input_ids"][a:b].tolist() == docs[doc]
            assert batch["position_ids"][a:b].tolist() == list(range(b - a))
            assert batch["labels"][a] == IGNORE_INDEX
            assert batch["labels"][a + 1 : b].tolist() == docs[doc][1:]
        seen += batch["doc_ids"].tolist()
    assert sorted(seen) == list(range(len(docs)))  # one rank: every document once
    efficiency = sum(b["num_tokens"] for b in batches) / (128 * len(batches))
    assert efficiency > 0.9


def test_packed_resume_at_random_points_in_process(shards):
    path, _ = shards
    full = doc_ids(packed(path))
    rng = np.random.default_rng(1)
    for stop in sorted(set(rng.integers(0, len(full) + 1, 15).tolist()) | {0, len(full)}):
        loader = packed(path)
        it = iter(loader)
        head = [next(it)["doc_ids"].tolist() for _ in range(stop)]
        resumed = packed(path)
        resumed.load_state_dict(loader.state_dict())
        assert head + doc_ids(resumed) == full, stop


@pytest.mark.parametrize("kind", ["packed", "batches"])
def test_resume_through_worker_processes_is_exact(shards, kind):
    path, _ = shards

    def make():
        if kind == "packed":
            return packed(path, num_workers=2)
        return shard_loader(path, batch_size=16, num_workers=2, seed=3, shuffle_buffer=40,
                            block_size=8)

    key = "doc_ids" if kind == "packed" else "id"
    full = [b[key].tolist() for b in make()]
    for stop in (1, len(full) // 2 + 1, len(full) - 1):
        loader = make()
        head = []
        for batch in loader:  # workers prefetch ahead; the state counts only what we took
            head.append(batch[key].tolist())
            if len(head) == stop:
                state = loader.state_dict()
                break
        resumed = make()
        resumed.load_state_dict(state)
        assert head + [b[key].tolist() for b in resumed] == full, stop
        assert POSITION_KEY not in batch


def test_loader_epochs_continue_and_length_is_exact(shards):
    path, docs = shards
    loader = shard_loader(path, batch_size=16, num_workers=2, seed=0)
    first, second = [b["id"].tolist() for b in loader], [b["id"].tolist() for b in loader]
    assert len(first) == len(second) == len(loader) == len(docs) // 16
    assert first != second and loader.epoch == 2


def test_packed_resume_on_a_new_topology_reads_every_remaining_document_once(shards):
    path, docs = shards
    consumed, states = [], []
    for rank in range(2):
        loader = packed(path, rank=rank, world_size=2)
        loader.dataset.set_num_workers(2)  # simulate two workers in this process
        ds = loader.dataset
        ds.emit_positions = True
        for w, n in ((0, 3 + rank), (1, 2)):
            for i, item in enumerate(ds._iter_worker(w)):
                if i == n:
                    break
                ds.advance(item.pop(POSITION_KEY))
                consumed += item["doc_ids"].tolist()
        states.append(loader.state_dict())
    rest = []
    for worker_count in (2,):
        loader = packed(path, rank=0, world_size=1, num_workers=worker_count)
        loader.load_state_dict(states)
        rest += [d for b in loader for d in b["doc_ids"].tolist()]
    everything = consumed + rest
    assert len(everything) == len(set(everything))
    planned = len(docs) // 2 * 2  # "drop": the odd document out waits for the next epoch
    assert len(everything) == planned


def test_packed_state_needs_every_rank_on_a_new_topology(shards):
    path, _ = shards
    state = packed(path, rank=0, world_size=2).state_dict()
    with pytest.raises(ValueError, match="all 2 ranks"):
        packed(path, rank=0, world_size=1).load_state_dict(state)


def test_flattening_loader_and_shard_loader_types(shards):
    path, docs = shards
    loader = packed(path, packing_length=None, lookahead=10, shuffle=False)
    first = next(iter(loader))
    assert first["doc_ids"].tolist() == list(range(10))
    assert first["input_ids"].tolist() == sum(docs[:10], [])
    assert first["cu_seqlens"].dtype == torch.int32 and first["packing_efficiency"] == 1.0
    assert isinstance(loader, ShardLoader)
    batch = next(iter(shard_loader(path, batch_size=4, shuffle=False)))
    assert isinstance(batch["id"], np.ndarray) and batch["id"].tolist() == [0, 1, 2, 3]


def test_packed_resume_with_a_new_packing_length_reads_the_rest_once(shards):
    path, docs = shards
    loader = packed(path)
    it = iter(loader)
    head = [d for _ in range(5) for d in next(it)["doc_ids"].tolist()]
    resumed = packed(path, packing_length=200)
    resumed.load_state_dict(loader.state_dict())
    rest = [d for b in resumed for d in b["doc_ids"].tolist()]
    assert max(b["num_tokens"] for b in packed(path, packing_length=200)) > 128
    assert sorted(head + rest) == list(range(len(docs)))


@pytest.mark.parametrize("num_workers", [0, 1])
def test_decode_error_through_a_worker_names_shard_record_and_feature(tmp_path, num_workers):
    from shardforge.records import TFRecordWriter, build_index, encode_example, read_records

    directory = tmp_path / "train"
    write_shards(directory, sizes=(20, 25))
    bad = directory / "part-00001-of-00002.tfrecord.gz"
    records = list(read_records(bad))
    records[11] = encode_example({"id": 3, "tokens": [0.5]})
    with TFRecordWriter(bad) as w:
        for r in records:
            w.write(r)
    build_index(bad)
    with pytest.raises((ValueError, RuntimeError),
                       match=f"{bad}: feature 'tokens' of record 11: expected int64"):
        for _ in packed(str(directory), num_workers=num_workers):
            pass


@dataclass(frozen=True)
class PairPacker:
    """A packer of one's own (the declared Packer protocol): documents two by two."""

    lookahead: int = 10

    def bind(self, schema):
        return self

    def features(self, spec):
        return {"tokens": spec["tokens"]}

    def layout(self):
        return {"per_batch": 2}

    def plan(self, docs, doc_ids, layout):
        n = layout["per_batch"]
        return [doc_ids[i : i + n] for i in range(0, len(doc_ids), n)]

    def batch(self, window, i):
        return {"doc_ids": window[i]}

    def consumed(self, window, items):
        done = np.zeros(sum(len(pair) for pair in window), dtype=bool)
        done[: sum(len(pair) for pair in window[:items])] = True
        return done

    def to_torch(self, batch):
        return {"doc_ids": torch.from_numpy(batch["doc_ids"])}


def test_a_packer_of_ones_own_is_handed_to_the_same_dataset_and_resumes_exactly(shards):
    path, docs = shards

    def make(num_workers=2, **kw):
        dataset = ShardDataset(path, packer=PairPacker(), seed=5, shuffle_buffer=50,
                               block_size=8, **kw)
        return ShardLoader(dataset, num_workers=num_workers)

    full = doc_ids(make())
    assert all(len(pair) == 2 for pair in full[:-1])
    assert sorted(sum(full, [])) == list(range(len(docs)))
    loader, head = make(), []
    for batch in loader:
        head.append(batch["doc_ids"].tolist())
        if len(head) == 7:
            break
    resumed = make()
    resumed.load_state_dict(loader.state_dict())
    assert head + doc_ids(resumed) == full

    consumed, states = [], []  # two ranks stop part-way; one process reads the rest once
    for rank in range(2):
        loader = make(num_workers=0, rank=rank, world_size=2)
        it = iter(loader)
        consumed += [d for _ in range(3 + rank) for d in next(it)["doc_ids"].tolist()]
        states.append(loader.state_dict())
    resumed = make(num_workers=0, rank=0, world_size=1)
    resumed.load_state_dict(states)
    everything = consumed + [d for b in resumed for d in b["doc_ids"].tolist()]
    assert len(everything) == len(set(everything)) == len(docs) // 2 * 2
