"""A real 2-process torchrun (gloo): the ranks read disjoint records, the same number of batches,
and a resumed run on one rank picks up exactly what the two ranks left."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.training.test_dataset import write_shards

SCRIPT = textwrap.dedent("""
    import json, sys
    import torch.distributed as dist
    from shardforge.training import packed_loader, shard_loader

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    path, out = sys.argv[1], sys.argv[2]
    loader = shard_loader(path, batch_size=8, num_workers=1, seed=4)
    ids = [int(i) for batch in loader for i in batch["id"]]
    packed = packed_loader(path, packing_length=96, lookahead=16, num_workers=1, seed=4)
    head, it = [], iter(packed)
    for _ in range(3 + rank):
        head += next(it)["doc_ids"].tolist()
    states = [None, None]
    dist.all_gather_object(states, packed.state_dict())  # what a checkpoint saves
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump({"ids": ids, "batches": len(ids) // 8, "world": dist.get_world_size(),
                   "head": head, "states": states}, f)
    dist.destroy_process_group()
""")


def test_two_process_torchrun_splits_records_and_resumes(tmp_path):
    data = tmp_path / "train"
    docs = write_shards(data, sizes=(40, 17, 66), max_len=30)
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(data), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["world"] == 2 for r in ranks)
    assert ranks[0]["batches"] == ranks[1]["batches"] == len(docs) // 16
    ids = ranks[0]["ids"] + ranks[1]["ids"]
    assert len(ids) == len(set(ids)) == len(docs) // 16 * 16

    # resume the packed stream of both ranks on a single process: the rest, exactly once
    from shardforge.training import packed_loader

    resumed = packed_loader(str(data), packing_length=96, lookahead=16, seed=4, world_size=1,
                            rank=0)
    resumed.load_state_dict(ranks[0]["states"])
    rest = [d for batch in resumed for d in batch["doc_ids"].tolist()]
    everything = ranks[0]["head"] + ranks[1]["head"] + rest
    assert len(everything) == len(set(everything)) == len(docs) // 2 * 2
