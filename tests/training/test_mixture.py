"""Mixtures: a deterministic schedule with a stated bound on every window, each document once per
epoch of its source, the same (source, document) sequence on any topology, exact resumption
(in process, through workers, after kill -9, onto 2 -> 3 -> 1 ranks with packing), a changed
mixture refused unless re-weighted, sources that disagree on a feature refused by name."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

from shardforge.training import Mixture, Source, packed_loader
from shardforge.training.dataset import ShardDataset
from shardforge.training.mixture import interleave, ranks_before
from tests.training.test_dataset import run_worker, write_shards

SIZES = {"web": (40, 30, 20), "code": (25, 15), "books": (12,)}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Three outputs (root/train shards of {id, tokens}); tokens by global record id."""
    root = tmp_path_factory.mktemp("mix")
    docs = []
    for seed, (name, sizes) in enumerate(SIZES.items()):
        docs += write_shards(root / name / "train", sizes=sizes, max_len=50, seed=seed)
    return root, docs


def mixture(root, weights=(0.6, 0.2, 0.2), epochs=(1, 1, 3)):
    return Mixture([Source(str(root / name), weight=w, epochs=e)
                    for name, w, e in zip(SIZES, weights, epochs)])


def packed(source, **kw):
    kw.setdefault("packing_length", 128)
    kw.setdefault("lookahead", 16)
    kw.setdefault("shuffle_buffer", 30)
    kw.setdefault("block_size", 4)
    kw.setdefault("seed", 3)
    return packed_loader(source, **kw)


def doc_ids(batches):
    return [b["doc_ids"].tolist() for b in batches]


# --------------------------------------------------------------------------------------------
# The schedule


@pytest.mark.parametrize("counts", [[5000, 5000], [12000, 7000, 1000], [30001, 9000, 450, 3, 17],
                                    [1, 20000]])
def test_every_window_holds_each_source_within_the_stated_bound(counts):
    length, n_sources = sum(counts), len(counts)
    source, rank = interleave(counts, 0, length)
    for i, c in enumerate(counts):  # each source's documents once, in order
        assert rank[source == i].tolist() == list(range(c))
    for i, c in enumerate(counts):
        # n(window) - m·c/L is a difference of two prefix deviations D(b) - D(a), so the range
        # of D over all prefixes is the worst window of any length, 10k or not
        deviation = (np.concatenate([[0], np.cumsum(source == i)])
                     - np.arange(length + 1) * c / length)
        worst = deviation.max() - deviation.min()
        assert worst < 1 + (n_sources + 4) * c / length, (i, worst)
    # any range computed alone is that range of the whole epoch (what each worker does)
    rng = np.random.default_rng(len(counts))
    for a in rng.integers(0, length, 20):
        b = int(min(length, a + rng.integers(1, 5000)))
        s, r = interleave(counts, int(a), b)
        assert s.tolist() == source[a:b].tolist() and r.tolist() == rank[a:b].tolist()
        assert ranks_before(counts, int(a)) == [int((source[:a] == i).sum())
                                                for i in range(n_sources)]


def test_weights_sizes_and_caps_give_the_epoch_counts():
    mix = Mixture([Source("a", weight=2), Source("b", weight=1), Source("c", weight=1, epochs=3)])
    # L = min(100 / .5, 1000 / .25, 3·10 / .25) = 120: source c caps it at 3 passes
    assert mix.epoch_counts([100, 1000, 10]).tolist() == [60, 30, 30]
    natural = Mixture([Source("a"), Source("b")])
    assert natural.epoch_counts([30, 10]).tolist() == [30, 10]
    assert Mixture.parse(["out/web:3", {"path": "gs://b/code", "weight": 1, "epochs": 2}]
                         ).sources[1] == Source("gs://b/code", weight=1.0, epochs=2.0)
    assert Mixture.parse("gs://bucket/out").sources[0].location == "gs://bucket/out/train"
    with pytest.raises(ValueError, match="every source a weight or none"):
        Mixture.parse(["a:1", "b"])
    with pytest.raises(ValueError, match="distinct names"):
        Mixture.parse(["x/out:1", "y/out:1"])


# --------------------------------------------------------------------------------------------
# Reading a mixture


def test_each_document_once_per_epoch_of_its_source_and_proportions_hold(outputs):
    root, docs = outputs
    ds = ShardDataset(mixture(root), batch_size=8, record_ids=True, seed=1, shuffle_buffer=30,
                      block_size=4, remainder="keep")
    assert ds.counts.tolist() == [90, 30, 30]  # L = min(90/.6, 40/.2, 36/.2) = 150
    epochs = [[int(i) for b in ds for i in b["record_id"]] for _ in range(3)]
    for ids in epochs:
        assert Counter(ds.source_of(ids).tolist()) == {0: 90, 1: 30, 2: 30}
    web, code, books = ([i for ids in epochs for i in ids if ds.source_of([i])[0] == s]
                        for s in range(3))
    assert sorted(web[:90]) == sorted(web[90:180]) == list(range(90))  # one pass an epoch
    # code is down-weighted: its 40 documents, then its next epoch goes on where it stopped
    assert sorted(code[:40]) == sorted(code[40:80]) == list(range(90, 130))
    # books is upsampled to 2.5 passes of its 12 documents per mixture epoch
    assert all(sorted(books[k : k + 12]) == list(range(130, 142)) for k in range(0, 84, 12))
    assert epochs[1][:12] != epochs[0][:12]  # each epoch reshuffles
    # the records read are the records stored
    batch = next(iter(ShardDataset(mixture(root), batch_size=20, record_ids=True)))
    assert [docs[i] for i in batch["record_id"]] == batch["tokens"].to_list()


@pytest.mark.parametrize("world,workers", [(2, 1), (3, 2), (1, 3)])
def test_the_sequence_of_source_and_document_is_the_same_on_any_topology(outputs, world,
                                                                          workers):
    root, _ = outputs

    def make(**kw):
        return ShardDataset(mixture(root), batch_size=7, record_ids=True, seed=9,
                            shuffle_buffer=30, block_size=4, remainder="keep", **kw)

    single = [int(i) for b in make() for i in b["record_id"]]
    split = []
    for rank in range(world):
        ds = make(rank=rank, world_size=world)
        ds.set_num_workers(workers)
        split += [int(i) for w in range(workers) for b in run_worker(ds, w)
                  for i in b["record_id"]]
    assert split == single


# --------------------------------------------------------------------------------------------
# Resumption


def test_packed_mixture_resumes_exactly_through_workers(outputs):
    root, docs = outputs
    full = doc_ids(packed(mixture(root), num_workers=2))
    seen = [d for b in full for d in b]
    assert Counter(seen) == Counter(
        [int(i) for b in ShardDataset(mixture(root), batch_size=1, record_ids=True, seed=3,
                                      shuffle_buffer=30, block_size=4) for i in b["record_id"]])
    for stop in (1, len(full) // 2, len(full) - 1):
        loader, head = packed(mixture(root), num_workers=2), []
        for batch in loader:
            head.append(batch["doc_ids"].tolist())
            if len(head) == stop:
                break
        resumed = packed(mixture(root), num_workers=2)
        resumed.load_state_dict(loader.state_dict())
        assert head + doc_ids(resumed) == full, stop


KILLED = """
import json, os, sys
from shardforge.training import Mixture, Source, packed_loader
root, out = sys.argv[1], sys.argv[2]
mix = Mixture([Source(os.path.join(root, n), weight=w, epochs=e)
               for n, w, e in (("web", .6, 1), ("code", .2, 1), ("books", .2, 3))])
loader = packed_loader(mix, packing_length=128, lookahead=16, shuffle_buffer=30, block_size=4,
                       seed=3, num_workers=2)
if os.path.exists(out + "/state.json"):
    loader.load_state_dict(json.load(open(out + "/state.json"))["loader"])
while loader.epoch < 2:
    for batch in loader:
        with open(out + "/batches.jsonl", "a") as f:
            f.write(json.dumps(batch["doc_ids"].tolist()) + "\\n")
        done = sum(1 for _ in open(out + "/batches.jsonl"))
        state = {"loader": loader.state_dict(), "batches": done}
        with open(out + "/state.tmp", "w") as f:
            json.dump(state, f)
        os.replace(out + "/state.tmp", out + "/state.json")
"""


def test_kill_9_at_random_steps_then_resume_gives_the_same_batches(outputs, tmp_path):
    root, _ = outputs
    loader = packed(mixture(root), num_workers=2)
    full = doc_ids(loader) + doc_ids(loader)  # two epochs
    script = tmp_path / "train.py"
    script.write_text(KILLED)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    rng = np.random.default_rng(0)
    log = tmp_path / "batches.jsonl"
    for _ in range(3):
        target = len(log.read_text().splitlines()) + int(rng.integers(1, 12)) if log.exists() \
            else int(rng.integers(1, 12))
        proc = subprocess.Popen([sys.executable, str(script), str(root), str(tmp_path)], env=env)
        while proc.poll() is None:
            if log.exists() and len(log.read_text().splitlines()) >= target:
                proc.send_signal(signal.SIGKILL)  # kill -9, between or inside a write
                break
            time.sleep(0.01)
        proc.wait()
        # what survives: the state, and the batches up to it (later lines a resume repeats)
        state = json.loads((tmp_path / "state.json").read_text())
        lines = log.read_text().splitlines()[: state["batches"]]
        log.write_text("".join(line + "\n" for line in lines))
    subprocess.run([sys.executable, str(script), str(root), str(tmp_path)], env=env, check=True)
    assert [json.loads(line) for line in log.read_text().splitlines()] == full


def test_world_size_2_then_3_then_1_reads_every_document_once_per_its_epoch(outputs):
    root, _ = outputs

    def make(rank, world, workers):
        loader = packed(mixture(root), rank=rank, world_size=world, remainder="keep")
        loader.dataset.set_num_workers(workers)  # workers simulated in this process
        return loader.dataset

    def consume(ds, steps):
        out = []
        for w, n in enumerate(steps):
            out += [d for b in run_worker(ds, w, n) for d in b["doc_ids"].tolist()]
        return out

    consumed, states = [], []
    for rank in range(2):
        ds = make(rank, 2, 2)
        consumed += consume(ds, (2 + rank, 1))
        states.append(ds.state_dict())
    again = []
    for rank in range(3):
        ds = make(rank, 3, 1)
        ds.load_state_dict(states)
        consumed += consume(ds, (1 + rank,))
        again.append(ds.state_dict())
    ds = make(0, 1, 2)
    ds.load_state_dict(again)
    consumed += consume(ds, (None, None))
    planned = ShardDataset(mixture(root), batch_size=1, record_ids=True, seed=3,
                           shuffle_buffer=30, block_size=4)
    epoch = [int(b["record_id"][0]) for b in planned]
    assert Counter(consumed) == Counter(epoch)  # nothing lost, nothing read twice
    source = planned.source_of(consumed)
    for s, c in enumerate(planned.counts):  # per source: its share, once per its epoch
        ids = [d for d, k in zip(epoch, planned.source_of(epoch)) if k == s]
        n = int(planned.source_sizes[s].sum())
        assert (source == s).sum() == c
        assert all(len(set(ids[k : k + n])) == len(ids[k : k + n]) for k in range(0, c, n))


def test_a_changed_mixture_is_refused_unless_reweighted(outputs):
    root, _ = outputs
    loader = packed(mixture(root))
    it = iter(loader)
    for _ in range(4):
        next(it)
    state = loader.state_dict()
    changed = mixture(root, weights=(0.2, 0.3, 0.5))
    with pytest.raises(ValueError, match=r"source 'web': weight 0.6 -> 0.2.*reweight"):
        packed(changed).load_state_dict(state)
    dropped = Mixture(mixture(root).sources[:2])
    with pytest.raises(ValueError, match="source 'books' was removed"):
        packed(dropped).load_state_dict(state)
    resumed = packed(dataclasses.replace(changed, reweight=True))
    resumed.load_state_dict(state)
    rest = [d for b in resumed for d in b["doc_ids"].tolist()]
    ds = resumed.dataset
    assert ds.counts.tolist() == [14, 22, 36]
    assert Counter(ds.source_of(rest).tolist()) == {0: 14, 1: 22, 2: 36}
    # code (40 documents) had 30 in the interrupted epoch; its 22 now are the other 10 of its
    # first pass, then 12 of its second: none skipped, none read twice within a pass
    old = [int(b["record_id"][0]) for b in ShardDataset(mixture(root), batch_size=1, seed=3,
                                                         shuffle_buffer=30, block_size=4,
                                                         record_ids=True)]
    planned = Counter(d for d in old + rest if ds.source_of([d])[0] == 1)
    assert sorted(planned) == list(range(90, 130))
    assert sorted(Counter(planned.values()).items()) == [(1, 28), (2, 12)]


# --------------------------------------------------------------------------------------------
# Safety


def write_output(directory, vocab, side=True):
    """Shards with a schema.pbtxt: tokens with a learned vocabulary, an id if ``side``."""
    from google.protobuf import text_format

    from shardforge.protos import schema_pb2

    write_shards(directory / "train", sizes=(10,))
    proto = schema_pb2.Schema(version=1)
    proto.features.add(name="tokens", dtype=schema_pb2.INT64, varlen=True,
                       kind=schema_pb2.Feature.CATEGORICAL, num_buckets=len(vocab) + 1,
                       column_type="text", source="tokens")
    if side:
        proto.features.add(name="id", dtype=schema_pb2.INT64)
    proto.state.columns.add(column="tokens/vocabulary", vocab=vocab,
                            vocab_counts=list(range(len(vocab), 0, -1)))
    (directory / "schema.pbtxt").write_text(text_format.MessageToString(proto))
    return str(directory)


def test_sources_that_disagree_on_a_feature_are_named(tmp_path):
    a = write_output(tmp_path / "a", [b"x", b"y"])
    b = write_output(tmp_path / "b", [b"y", b"x"])  # the same tokens, other ids
    c = write_output(tmp_path / "c", [b"x", b"y"], side=False)
    same = Mixture([Source(a), Source(a, name="a2"), Source(c)])
    assert packed(same).dataset.counts.tolist() == [10, 10, 10]
    with pytest.raises(ValueError, match="source 'b': feature 'tokens' .*vocabulary"):
        packed(Mixture([Source(a), Source(b)]))
    with pytest.raises(KeyError, match="source 'c' has no feature 'id'"):
        packed(Mixture([Source(a), Source(c)]), side_features=("id",))


def test_image_text_and_text_only_sources_mix_under_both_budgets_and_resume(tmp_path):
    from shardforge.records import TFRecordWriter, build_index, encode_example
    from shardforge.training.mm_packing import multimodal_loader
    from tests.vision.test_mm_packing import IMG, write_samples

    write_samples(tmp_path / "captions" / "train", n=60)
    text = tmp_path / "text" / "train"
    text.mkdir(parents=True)
    rng = np.random.default_rng(5)
    with TFRecordWriter(text / "part-00000-of-00001.tfrecord") as w:
        for _ in range(50):
            w.write(encode_example({"tokens": rng.integers(10, 100, int(rng.integers(1, 40)))}))
    build_index(text / "part-00000-of-00001.tfrecord")
    mix = Mixture([Source(str(tmp_path / "captions"), weight=0.5),
                   Source(str(tmp_path / "text"), weight=0.5, missing=("image",))])

    def make(**kw):
        return multimodal_loader(mix, token_budget=96, patch_budget=160, image_token_id=IMG,
                                 lookahead=20, seed=1, remainder="keep", **kw)

    full = make(num_workers=2)
    batches = [(b["doc_ids"].tolist(), b["image_doc"].tolist(), b["doc_offsets"].tolist())
               for b in full]
    ds = full.dataset
    assert ds.counts.tolist() == [50, 50]
    for ids, image_doc, _ in batches:  # text-only documents bring no image
        assert all(ds.source_of([ids[d]])[0] == 0 for d in image_doc)
    firsts = [d for ids, _, offsets in batches for d, o in zip(ids, offsets) if o == 0]
    assert Counter(ds.source_of(firsts).tolist()) == {0: 50, 1: 50}
    with pytest.raises(KeyError, match="source 'text' has no feature 'image'"):
        multimodal_loader(Mixture([mix.sources[0], Source(str(tmp_path / "text"), weight=1)]),
                          token_budget=96, patch_budget=160, image_token_id=IMG)

    consumed, states = [], []  # two ranks stop part-way; three ranks, then one, read the rest
    for rank in range(2):
        loader = make(rank=rank, world_size=2)
        it = iter(loader)
        consumed += [d for _ in range(2 + rank) for d in next(it)["doc_ids"].tolist()]
        states.append(loader.state_dict())
    again = []
    for rank in range(3):
        loader = make(rank=rank, world_size=3)
        loader.load_state_dict(states)
        it = iter(loader)
        consumed += [d for _ in range(rank) for d in next(it)["doc_ids"].tolist()]
        again.append(loader.state_dict())
    loader = make(num_workers=2)
    loader.load_state_dict(again)
    consumed += [d for b in loader for d in b["doc_ids"].tolist()]
    # (a text document split over two batches is read again whole if only its head was taken)
    assert set(consumed) == set(firsts)


# --------------------------------------------------------------------------------------------
# Training on a mixture: the config, what a run reports, a changed mixture on resume


def test_train_on_a_mixture_from_a_yaml_config_reports_each_source(tmp_path):
    from shardforge.training.trainer import train
    from tests.training.test_train_cli import TINY, shardforge
    from tests.training.test_trainer import lm_config, make_lm_data

    web, code = make_lm_data(tmp_path / "web", n_docs=60), make_lm_data(tmp_path / "code",
                                                                       n_docs=40, seed=1)
    config = tmp_path / "mix.yaml"
    config.write_text(f"task: lm\ndata:\n  - {web}:0.7\n  - path: {code}\n    weight: 0.3\n"
                      "packing_length: 256\nmodel: {n_layer: 1, d_model: 32, n_head: 2, "
                      "n_kv_head: 1}\n")
    proc = shardforge("train", "--config", str(config), "--out", str(tmp_path / "run"),
                      *TINY, "plot=true")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "mix web" in proc.stdout and "code" in proc.stdout  # the progress line
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
            .splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert all(r["tokens/web"] + r["tokens/code"] == 256 * r["packing_efficiency"]
               for r in steps)
    assert all(sum(r[f"docs/{name}"] for r in steps) > 0 for name in ("web", "code"))
    assert all({"eval_loss/web", "eval_loss/code"} <= set(r) for r in rows if "eval_loss" in r)
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000

    data = [f"{web}:0.7", f"{code}:0.3"]
    def config(data):
        return dataclasses.replace(lm_config(web, tmp_path / "resumed"), data=data)

    train(config(data), stop_at=4)
    with pytest.raises(ValueError, match="source 'web': weight 0.7 -> 0.5.*reweight"):
        train(config([f"{web}:0.5", f"{code}:0.5"]), resume=True)
    reweighted = {"sources": [f"{web}:0.5", f"{code}:0.5"], "reweight": True}
    result = train(config(reweighted), resume=True)
    assert result.steps == 12
    assert json.loads((tmp_path / "resumed" / "resumes.json").read_text()) == [4]


def test_a_temperature_weights_sources_by_their_jobs_token_counts(tmp_path):
    for name, tokens in (("big", 9000), ("small", 1000)):
        (tmp_path / name).mkdir()
        outputs = [{"name": "tokens", "ids": tokens - 10, "no_id": 10}]
        (tmp_path / name / "stats.json").write_text(json.dumps(
            {"by_split": {"train": {"outputs": outputs}}}))
    mix = Mixture.parse({"sources": [str(tmp_path / "big"), str(tmp_path / "small")],
                         "temperature": 0.5})
    from shardforge.training.mixture import source_tokens

    tokens = [source_tokens(s, "tokens") for s in mix.sources]
    assert tokens == [9000, 1000]
    assert mix.weights([100, 100], tokens).tolist() == pytest.approx([0.75, 0.25])  # 3:1
    with pytest.raises(ValueError, match="counts no values of feature 'text'"):
        source_tokens(mix.sources[0], "text")
