"""Mixture benchmark: the same three sources (web 0.6, code 0.3, books 0.1) through Grain
(``MapDataset.mix`` + ``FirstFitPackIterDataset``) and through shardforge (``Mixture`` +
``packed_loader``), in the same run: tokens/s, packing efficiency, realized proportions, the
cost of a resume; and shardforge's overhead of a 3-source mixture over one source. The last line
printed is one JSON object with every figure.

    .venv/bin/python benchmarks/mixture_bench.py            # ~1 min on 2 busy cores
    .venv/bin/python benchmarks/mixture_bench.py --quick    # a few seconds

Grain is found on the path, or in ``$GRAIN_SITE`` (a site-packages of its own, appended to the
path so this venv's packages win: ``python -m venv /work/grainvenv && /work/grainvenv/bin/pip
install grain``). ``shardforge_natural`` reads the three sources at their sizes' proportions and
``shardforge_single`` one output holding the same documents: their ratio is what mixing costs
(a weighted mixture of small sources also reads shuffle windows it uses only part of in an
epoch). Both loaders read the same uncompressed TFRecord shards; Grain through a random-access
source over their index (one record per ``__getitem__``, its model) and ``tf.Example`` parsing
with protobuf; both in the calling process (no workers), one pass of packing at
``PACKING_LENGTH`` tokens with 128 bins (Grain) / lookahead 4096 documents (shardforge).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shardforge.records import ShardedWriter, encode_example  # noqa: E402
from shardforge.training import Mixture, Source, packed_loader  # noqa: E402

PACKING_LENGTH = 4096
RESUME_AT = 30  # batches read before the state a resume is timed from
REPEATS = 3
WEIGHTS = {"web": 0.6, "code": 0.3, "books": 0.1}
GRAIN_SITE = os.environ.get("GRAIN_SITE", "/work/grainvenv/lib/python3.11/site-packages")


def lengths_of(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    median, sigma = {"web": (300, 1.0), "code": (250, 0.35), "books": (1500, 0.6)}[name]
    return np.clip(rng.lognormal(np.log(median), sigma, n), 1, PACKING_LENGTH).astype(np.int64)


def write_sources(root: Path, docs: int, rng: np.random.Generator) -> dict[str, Path]:
    """Three job-like outputs (``<root>/<name>/train``) and one holding all their records."""
    counts = {"web": docs, "code": docs // 2, "books": docs // 10}
    out, everything = {}, []
    for s, (name, n) in enumerate(counts.items()):
        records = [encode_example({"tokens": rng.integers(0, 32000, k).tolist(), "source": s})
                   for k in lengths_of(name, n, rng)]
        everything += records
        with ShardedWriter(root / name / "train", num_shards=4) as writer:
            for record in records:
                writer.write(record)
        out[name] = root / name
    with ShardedWriter(root / "all" / "train", num_shards=8) as writer:
        for record in everything:
            writer.write(record)
    out["all"] = root / "all"
    return out


def mixture(dirs: dict[str, Path], weighted: bool = True) -> Mixture:
    """The three sources at ``WEIGHTS``, or at their sizes' proportions (every document once an
    epoch, as the single output holding them all reads them)."""
    return Mixture([Source(str(dirs[name]), weight=w if weighted else None)
                    for name, w in WEIGHTS.items()])


def run_shardforge(source, batches: int | None) -> dict:
    loader = packed_loader(source, packing_length=PACKING_LENGTH, seed=0)
    ds = loader.dataset
    tokens, taken = 0, []
    start = time.perf_counter()
    for batch in loader:
        tokens += int(batch["num_tokens"])
        taken.append(batch)  # counted per source after the clock stops
        if len(taken) == RESUME_AT:
            state = loader.state_dict()
        if len(taken) == batches:
            break
    seconds = time.perf_counter() - start
    n = len(taken)
    docs = sum(ds.source_counts(batch)[0] for batch in taken)
    resumed = packed_loader(source, packing_length=PACKING_LENGTH, seed=0)
    start = time.perf_counter()
    resumed.load_state_dict(state)
    next(iter(resumed))
    resume = time.perf_counter() - start
    return {"tokens_per_s": tokens / seconds, "packing_efficiency": tokens / (n * PACKING_LENGTH),
            "proportions": dict(zip(ds.source_names, (docs / docs.sum()).round(4).tolist())),
            "resume_s": resume, "batches": n}


class TFRecordSource:
    """Grain's random-access source over TFRecord shards (one record per ``__getitem__``)."""

    def __init__(self, directory: Path) -> None:
        from shardforge.records import RecordFile, list_shards

        self.files = [RecordFile(p) for p in list_shards(directory)]
        self.start = np.cumsum([0] + [len(f) for f in self.files])

    def __len__(self) -> int:
        return int(self.start[-1])

    def __getitem__(self, i: int) -> bytes:
        shard = int(np.searchsorted(self.start, i, side="right")) - 1
        k = i - int(self.start[shard])
        return self.files[shard].read_block(k, k + 1)[0]


def parse(record: bytes) -> dict:
    from shardforge.protos import example_pb2

    features = example_pb2.Example.FromString(record).features.feature
    return {"tokens": np.asarray(features["tokens"].int64_list.value, dtype=np.int64),
            "source": int(features["source"].int64_list.value[0])}


def run_grain(grain, dirs: dict[str, Path], batches: int | None) -> dict:
    from grain.experimental import FirstFitPackIterDataset

    def build():
        parts = [grain.MapDataset.source(TFRecordSource(dirs[name] / "train")).shuffle(seed=0)
                 .map(parse) for name in WEIGHTS]
        mixed = grain.MapDataset.mix(parts, weights=list(WEIGHTS.values()))
        return FirstFitPackIterDataset(mixed.to_iter_dataset(),
                                       length_struct={"tokens": PACKING_LENGTH},
                                       num_packing_bins=128, meta_features=("source",))

    it = iter(build())
    docs = np.zeros(len(WEIGHTS))
    tokens, taken = 0, []
    start = time.perf_counter()
    for batch in it:
        tokens += int((batch["tokens_segment_ids"] > 0).sum())
        taken.append(batch)
        if len(taken) == RESUME_AT:
            state = it.get_state()
        if len(taken) == batches:
            break
    seconds = time.perf_counter() - start
    n = len(taken)
    for batch in taken:
        docs += np.bincount(np.asarray(batch["source"]).ravel(), minlength=len(WEIGHTS))
    resumed = iter(build())
    start = time.perf_counter()
    resumed.set_state(state)
    next(resumed)
    resume = time.perf_counter() - start
    return {"tokens_per_s": tokens / seconds, "packing_efficiency": tokens / (n * PACKING_LENGTH),
            "proportions": dict(zip(WEIGHTS, (docs / docs.sum()).round(4).tolist())),
            "resume_s": resume, "batches": n}


def import_grain():
    try:
        import grain
    except ImportError:
        if not os.path.isdir(GRAIN_SITE):
            return None
        sys.path.append(GRAIN_SITE)
        try:
            import grain
        except ImportError:
            return None
    return grain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    # shardforge reads one whole epoch (its proportions hold per packing window: the first
    # batches of a window are its longest documents); Grain, as many batches
    docs = 1500 if args.quick else 8000
    global REPEATS
    REPEATS = 1 if args.quick else REPEATS
    rng = np.random.default_rng(0)
    results: dict = {"weights": WEIGHTS}
    with tempfile.TemporaryDirectory() as tmp:
        dirs = write_sources(Path(tmp), docs, rng)
        run_shardforge(mixture(dirs), RESUME_AT)  # warm up: numba, page cache
        sources = {"shardforge_mixture": mixture(dirs),
                   "shardforge_natural": mixture(dirs, weighted=False),
                   "shardforge_single": str(dirs["all"] / "train")}
        for _ in range(REPEATS):  # interleaved, best of each: a busy machine's noise is not ours
            for name, source in sources.items():
                run = run_shardforge(source, None)
                if run["tokens_per_s"] > results.get(name, {}).get("tokens_per_s", 0):
                    results[name] = run
        grain = import_grain()
        if grain is not None:
            batches = results["shardforge_mixture"]["batches"]
            results["grain_mixture"] = run_grain(grain, dirs, batches)
    mix, single = results["shardforge_mixture"], results["shardforge_single"]
    # the same documents as three sources or as one: what mixing itself costs
    results["mixture_overhead"] = (1 - results["shardforge_natural"]["tokens_per_s"]
                                   / single["tokens_per_s"])
    print(f"{'':22s}{'tokens/s':>12s}{'packing':>9s}{'resume s':>10s}   realized proportions "
          f"(weights {WEIGHTS})")
    for name in ("shardforge_mixture", "grain_mixture", "shardforge_natural",
                 "shardforge_single"):
        if name in results:
            r = results[name]
            print(f"{name:22s}{r['tokens_per_s']:>12,.0f}{r['packing_efficiency']:>9.2%}"
                  f"{r['resume_s']:>10.3f}   {r['proportions']}")
    print(f"3-source mixture vs one source holding the same documents (shardforge): "
          f"{results['mixture_overhead']:+.1%} tokens/s lost")
    if "grain_mixture" in results:
        print(f"shardforge / Grain tokens/s: "
              f"{mix['tokens_per_s'] / results['grain_mixture']['tokens_per_s']:.1f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
