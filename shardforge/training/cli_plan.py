"""``shardforge plan``: per-GPU memory breakdown for training a model of a given size.

    shardforge plan --params 7e9                       # 16 bytes/param -> 112 GB
    shardforge plan --params 7e9 --zero-stage 3 --gpus 8 --gpu-memory 80GB \\
        --seq-len 4096 --micro-batch 1 --layers 32 --hidden 4096 --vocab 32000
"""

from __future__ import annotations

import argparse

from shardforge.training.memory import (
    OPTIMIZER_STATES,
    PRECISIONS,
    format_plan,
    parse_count,
    parse_size,
    plan_memory,
    zero_table,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=parse_count, default=None,
                        help="parameter count: 7e9, 7B, 350M (default: from --layers/--hidden)")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="bf16-mixed",
                        help="weights/gradients/master-weights layout (default: bf16-mixed)")
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZER_STATES), default="adamw",
                        help="optimizer whose states are counted (default: adamw)")
    parser.add_argument("--zero-stage", type=int, choices=(0, 1, 2, 3), default=0,
                        help="0 DDP, 1 shard optimizer states, 2 + gradients, 3 + parameters")
    parser.add_argument("--gpus", type=int, default=1, help="data-parallel GPUs")
    parser.add_argument("--seq-len", type=int, default=None,
                        help="tokens per sequence: counts activations (with --layers/--hidden)")
    parser.add_argument("--micro-batch", type=int, default=None, help="sequences per GPU per step")
    parser.add_argument("--layers", type=int, default=None, help="transformer blocks")
    parser.add_argument("--hidden", type=int, default=None, help="model width (d_model)")
    parser.add_argument("--heads", type=int, default=None, help="only used with --no-flash")
    parser.add_argument("--vocab", type=int, default=None, help="count the fp32 logits")
    parser.add_argument("--activation-checkpointing", action="store_true",
                        help="keep only each block's input; recompute the rest in backward")
    parser.add_argument("--no-flash", action="store_true",
                        help="attention materializes the s x s matrix (no flash kernel)")
    parser.add_argument("--gpu-memory", type=parse_size, default=None,
                        help="memory of one GPU, e.g. 80GB or 141GiB: says whether it fits")


def main(args: argparse.Namespace) -> int:
    kwargs = dict(
        params=args.params, precision=args.precision, optimizer=args.optimizer,
        seq_len=args.seq_len, micro_batch=args.micro_batch, layers=args.layers,
        hidden=args.hidden, heads=args.heads, vocab=args.vocab,
        activation_checkpointing=args.activation_checkpointing,
        flash_attention=not args.no_flash, gpu_memory=args.gpu_memory,
    )
    plan = plan_memory(**kwargs, zero_stage=args.zero_stage, gpus=args.gpus)  # ValueError: exit 2
    print(format_plan(plan))
    if args.gpus > 1:
        print(zero_table(kwargs, args.gpus))
    return 0
