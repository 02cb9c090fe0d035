"""The VLM recipe: image–text shards -> multimodal packed batches -> vision encoder + PackedLM.

Three models over the same captions, so their caption losses compare directly:

- ``model="encoder"``: :class:`~shardforge.training.models.vision.VisionLanguageModel`, the
  native-resolution encoder's merged features at the placeholder tokens
  (:func:`~shardforge.training.mm_packing.multimodal_loader` batches, two budgets);
- ``model="blind"``: the same batches and LM, placeholders left as their own embedding (no
  encoder): the text-only baseline;
- ``model="fusion"``: early fusion, a ``PackedLM`` with QK-norm and z-loss over the
  interleaved discrete tokens of an ``sf.image_tokens`` column (text packed loader).

The loop is a plain one (warmup + cosine, AdamW, clipping), top to bottom::

    for step in range(cfg.max_steps):
        set_lr(optimizer, lr_at(step, cfg))
        loss = forward(model, next(batches)).loss
        loss.backward(); clip; optimizer.step(); optimizer.zero_grad()
        every eval_every steps: caption loss on the eval split

>>> cfg = VLMConfig(data="out/", model="encoder", max_steps=200)   # doctest: +SKIP
>>> result = train(cfg); result.eval_caption_loss                  # doctest: +SKIP
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shardforge.training.models.lm import IGNORE_INDEX, LMConfig, PackedLM
from shardforge.training.packing import shift_labels

MODELS = ("encoder", "blind", "fusion")


@dataclass
class VLMConfig:
    data: str = ""  # a pipeline output dir with train/, eval/ and schema.pbtxt
    out_dir: str = "runs/vlm"
    model: str = "encoder"  # encoder | blind | fusion (module docstring)
    token_feature: str = "tokens"  # encoder/blind: text ids with image markers
    image_feature: str = "image"  # encoder/blind: the sf.image column
    image_token_id: int = 0  # the marker / placeholder id
    fused_feature: str = "fused"  # fusion: the sf.image_tokens column
    text_vocab_size: int = 0  # fusion: ids below it are text (the caption loss counts those)
    token_budget: int = 1024
    patch_budget: int = 2048
    lm: dict[str, Any] = field(default_factory=dict)  # LMConfig fields
    vision: dict[str, Any] = field(default_factory=dict)  # VisionConfig fields
    max_steps: int = 200
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 10
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 50
    eval_batches: int = 0  # 0: the whole eval split
    seed: int = 0
    threads: int = 1  # small models run fastest on one CPU thread
    time_limit_s: float = 0.0  # stop early after this long (0: no limit)
    lookahead: int = 1024

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, not {self.model!r}")
        if self.model == "fusion" and not self.text_vocab_size:
            raise ValueError("model='fusion' needs text_vocab_size (the text ids' count)")


@dataclass
class VLMResult:
    steps: int
    losses: list[float]
    eval_caption_loss: float
    evals: list[dict]
    seconds: float
    model: torch.nn.Module
    packing: dict[str, float]


def lr_at(step: int, cfg: VLMConfig) -> float:
    """Linear warmup, then cosine decay from ``lr`` to ``min_lr`` at ``max_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * (cfg.lr - cfg.min_lr)


def _schema(cfg: VLMConfig):
    import shardforge.features as sf

    return sf.load_schema(cfg.data)


def _num_buckets(schema, feature: str) -> int:
    return int(schema.feature(feature).num_buckets)


def build_model(cfg: VLMConfig, schema) -> torch.nn.Module:
    """The model ``cfg.model`` names, sized from the schema (vocabulary, patch layout)."""
    from shardforge.training.models.vision import VisionConfig, VisionEncoder, VisionLanguageModel

    if cfg.model == "fusion":
        lm_cfg = {"qk_norm": True, "z_loss": 1e-5, **cfg.lm,
                  "vocab_size": _num_buckets(schema, cfg.fused_feature)}
        return PackedLM(LMConfig(**lm_cfg))
    # the placeholder id must be a valid embedding row even when the vocabulary lacks it
    vocab = max(_num_buckets(schema, cfg.token_feature), cfg.image_token_id + 1)
    lm = PackedLM(LMConfig(**{**cfg.lm, "vocab_size": vocab}))
    if cfg.model == "blind":
        return lm
    vision = {"out_dim": lm.cfg.d_model, **cfg.vision}
    return VisionLanguageModel(VisionEncoder(VisionConfig(**vision)), lm, cfg.image_token_id)


def make_loader(cfg: VLMConfig, split: str, *, train: bool):
    """Multimodal packed batches (encoder, blind) or packed discrete-token batches (fusion)."""
    source = str(Path(cfg.data) / split)
    if cfg.model == "fusion":
        from shardforge.training.loader import packed_loader

        return packed_loader(source, packing_length=cfg.token_budget,
                             token_feature=cfg.fused_feature, shuffle=train, seed=cfg.seed,
                             lookahead=cfg.lookahead, remainder="drop" if train else "keep")
    from shardforge.training.mm_packing import multimodal_loader

    return multimodal_loader(source, token_budget=cfg.token_budget,
                             patch_budget=cfg.patch_budget, image_token_id=cfg.image_token_id,
                             token_feature=cfg.token_feature, image_feature=cfg.image_feature,
                             shuffle=train, seed=cfg.seed, lookahead=cfg.lookahead,
                             remainder="drop" if train else "keep")


def forward(model: torch.nn.Module, batch: dict, cfg: VLMConfig):
    """The model's output with next-token targets (``LMOutput``)."""
    targets = shift_labels(batch["labels"])
    if cfg.model == "encoder":
        return model(batch, targets)
    return model(batch["input_ids"], batch["position_ids"], batch["cu_seqlens"],
                 batch["max_seqlen"], targets)


def caption_targets(batch: dict, cfg: VLMConfig) -> torch.Tensor:
    """Next-token targets that are caption text (not image placeholders, not image codes)."""
    targets = shift_labels(batch["labels"])
    if cfg.model == "fusion":
        targets = torch.where(targets < cfg.text_vocab_size, targets, IGNORE_INDEX)
    return targets


@torch.no_grad()
def evaluate(model: torch.nn.Module, cfg: VLMConfig) -> dict:
    """Token-weighted caption cross-entropy over the eval split (in order)."""
    model.eval()
    total, count = 0.0, 0
    for i, batch in enumerate(make_loader(cfg, "eval", train=False)):
        if cfg.eval_batches and i >= cfg.eval_batches:
            break
        logits = forward(model, batch, cfg).logits
        targets = caption_targets(batch, cfg)
        keep = targets != IGNORE_INDEX
        total += float(torch.nn.functional.cross_entropy(logits[keep], targets[keep],
                                                         reduction="sum"))
        count += int(keep.sum())
    model.train()
    return {"eval_caption_loss": total / max(count, 1), "eval_tokens": count}


def _batches(loader):
    while True:
        got = False
        for batch in loader:
            got = True
            yield batch
        if not got:
            raise RuntimeError("the training split yields no batches: is it empty?")


def train(cfg: VLMConfig, *, log=print) -> VLMResult:
    """Train ``cfg.model`` on CPU (or the default device) and return its eval caption loss."""
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, _schema(cfg))
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
            lr=cfg.lr, betas=(0.9, 0.95))
        batches = _batches(make_loader(cfg, "train", train=True))
        losses, evals, tok_eff, patch_eff = [], [], [], []
        start = time.perf_counter()
        step = 0
        for step in range(cfg.max_steps):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg)
            batch = next(batches)
            out = forward(model, batch, cfg)
            out.loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(out.ce.item())
            tok_eff.append(float(batch["packing_efficiency"]))
            if "patch_efficiency" in batch:
                patch_eff.append(float(batch["patch_efficiency"]))
            if cfg.eval_every and (step + 1) % cfg.eval_every == 0:
                evals.append({"step": step + 1, **evaluate(model, cfg)})
                log(f"[{cfg.model}] step {step + 1}: train {losses[-1]:.3f} "
                    f"eval caption {evals[-1]['eval_caption_loss']:.3f}")
            if cfg.time_limit_s and time.perf_counter() - start > cfg.time_limit_s:
                break
        seconds = time.perf_counter() - start
        if not evals or evals[-1]["step"] != step + 1:
            evals.append({"step": step + 1, **evaluate(model, cfg)})
        packing = {"token_efficiency": sum(tok_eff) / len(tok_eff)}
        if patch_eff:
            packing["patch_efficiency"] = sum(patch_eff) / len(patch_eff)
        return VLMResult(step + 1, losses, evals[-1]["eval_caption_loss"], evals, seconds,
                         model, packing)
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> None:
    """``python -m shardforge.training.recipes.vlm DATA model=encoder max_steps=200 ...``"""
    import yaml

    args = sys.argv[1:] if argv is None else argv
    values: dict[str, Any] = {"data": args[0]}
    for item in args[1:]:
        key, _, raw = item.partition("=")
        *parents, leaf = key.split(".")
        target = values
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = yaml.safe_load(raw)
    result = train(VLMConfig(**values))
    print(f"{result.steps} steps in {result.seconds:.0f}s: eval caption loss "
          f"{result.eval_caption_loss:.3f}, packing {result.packing}")


if __name__ == "__main__":
    main()
