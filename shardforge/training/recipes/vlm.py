"""The VLM recipe: image–text shards -> multimodal packed batches -> vision encoder + PackedLM.

    shardforge train task=vlm data=out/ packing_length=640 max_steps=800 \
        model.kind=encoder model.patch_budget=512 model.image_token_id=0 ...

``cfg.model`` holds the VLM's settings (:class:`VLMSettings`); ``cfg.packing_length`` is the
LM token budget and ``model.patch_budget`` the vision one. Three kinds of model train on the
same captions, so their eval losses compare directly (``eval_loss`` is the cross-entropy of
caption tokens only: no image placeholder, no image code). What each kind is made of is one
row of :data:`KINDS`:

- ``kind="encoder"``: :class:`~shardforge.training.models.vision.VisionLanguageModel`, the
  native-resolution encoder's merged features at the placeholder tokens
  (:func:`~shardforge.training.mm_packing.multimodal_loader` batches, two budgets);
- ``kind="blind"``: the same batches and LM, placeholders left as their own embedding (no
  encoder): the text-only baseline;
- ``kind="fusion"``: early fusion, a ``PackedLM`` with QK-norm and z-loss over the interleaved
  discrete tokens of an ``sf.image_tokens`` column (the text packed loader).

The loop is the LM recipe's, built from the same shared pieces (``Run``, ``parallelize``,
``lr_at``, ``clip_and_step``, ``eval_batches``); only the model, the loader and the forward
differ, and those are the kind's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from shardforge.training.config import TrainConfig, coerce_fields, did_you_mean, make_settings
from shardforge.training.models.lm import IGNORE_INDEX, LMConfig, LMOutput, PackedLM
from shardforge.training.models.vision import VisionConfig, VisionEncoder, VisionLanguageModel
from shardforge.training.packing import shift_labels
from shardforge.training.parallel import clip_and_step, gradient_sync, parallelize
from shardforge.training.progress import SourceTally, eval_by_source
from shardforge.training.run import (
    Batches,
    Run,
    TrainResult,
    eval_batches,
    load_schema,
    reduce_sum,
)
from shardforge.training.schedule import lr_at, set_lr


@dataclass
class VLMSettings:
    """``cfg.model`` of a ``task="vlm"`` run."""

    kind: str = "encoder"  # encoder | blind | fusion (module docstring)
    lm: dict[str, Any] = field(default_factory=dict)  # LMConfig fields
    vision: dict[str, Any] = field(default_factory=dict)  # VisionConfig fields
    patch_budget: int = 2048  # vision patches per micro-batch (encoder, blind)
    image_feature: str = "image"  # the sf.image column (encoder, blind)
    image_token_id: int = 0  # the image marker / placeholder id in cfg.token_feature
    fused_feature: str = "fused"  # fusion: the sf.image_tokens column
    text_vocab_size: int = 0  # fusion: ids below it are text (the ones the eval loss counts)
    lookahead: int = 1024  # samples planned together

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"model.kind must be one of {', '.join(KINDS)}, not {self.kind!r}"
                             f"{did_you_mean(self.kind, KINDS)}")
        if self.kind == "fusion" and not self.text_vocab_size:
            raise ValueError("model.kind=fusion needs model.text_vocab_size (the text ids' "
                             "count)")
        for key, low in (("patch_budget", 1), ("image_token_id", 0), ("lookahead", 1),
                         ("text_vocab_size", 0)):
            if getattr(self, key) < low:
                raise ValueError(f"config key model.{key}: expected >= {low}, got "
                                 f"{getattr(self, key)!r}")
        # the nested settings' keys and values, checked when the config loads
        make_settings(LMConfig, self.lm, "model.lm")
        make_settings(VisionConfig, self.vision, "model.vision")

    @classmethod
    def of(cls, cfg: TrainConfig) -> VLMSettings:
        return cls(**coerce_fields(cls, dict(cfg.model), "model"))


Settings = VLMSettings  # what cfg.model sets


def check_schema(cfg: TrainConfig, schema) -> None:
    """The data has the features the kind reads (``model.kind=encoder`` on data without the
    image column is refused before training)."""
    s = VLMSettings.of(cfg)
    names = [f.name for f in schema.features]
    for key, name in KINDS[s.kind].features(cfg, s).items():
        if name not in names:
            raise ValueError(f"model.kind={s.kind} reads the feature {name!r} ({key}), which "
                             f"the data lacks{did_you_mean(name, names)}")


# -- the kinds --------------------------------------------------------------------------------


def _lm(cfg: TrainConfig, s: VLMSettings, schema) -> PackedLM:
    # the placeholder id must be an embedding row even when the text vocabulary lacks it
    vocab = max(int(schema.feature(cfg.token_feature).num_buckets), s.image_token_id + 1)
    return PackedLM(LMConfig(**{**s.lm, "vocab_size": vocab}))


def _encoder_model(cfg: TrainConfig, s: VLMSettings, schema) -> VisionLanguageModel:
    lm = _lm(cfg, s, schema)
    vision = VisionConfig(**{"out_dim": lm.cfg.d_model, **s.vision})
    return VisionLanguageModel(VisionEncoder(vision), lm, s.image_token_id)


def _fusion_model(cfg: TrainConfig, s: VLMSettings, schema) -> PackedLM:
    lm_cfg = {"qk_norm": True, "z_loss": 1e-5, **s.lm,
              "vocab_size": int(schema.feature(s.fused_feature).num_buckets)}
    return PackedLM(LMConfig(**lm_cfg))


def _common(cfg: TrainConfig, s: VLMSettings, train: bool) -> dict:
    """Shuffled with equal work per rank for training, in order and complete for eval."""
    return dict(shuffle=train, seed=cfg.seed, lookahead=s.lookahead,
                remainder="drop" if train else "keep",
                num_workers=cfg.num_workers if train else 0, **cfg.cache_settings())


def _multimodal_loader(cfg: TrainConfig, s: VLMSettings, split: str, *, train: bool,
                       only: str | None = None):
    from shardforge.training.mm_packing import multimodal_loader

    return multimodal_loader(cfg.mixture(split, only), token_budget=cfg.packing_length,
                             patch_budget=s.patch_budget, image_token_id=s.image_token_id,
                             token_feature=cfg.token_feature, image_feature=s.image_feature,
                             **_common(cfg, s, train))


def _fused_loader(cfg: TrainConfig, s: VLMSettings, split: str, *, train: bool,
                  only: str | None = None):
    from shardforge.training.loader import packed_loader

    return packed_loader(cfg.mixture(split, only), packing_length=cfg.packing_length,
                         token_feature=s.fused_feature, **_common(cfg, s, train))


def _forward_vlm(model, batch: dict, targets: torch.Tensor) -> LMOutput:
    return model(batch, targets)


def _forward_lm(model, batch: dict, targets: torch.Tensor) -> LMOutput:
    return model(batch["input_ids"], batch["position_ids"], batch["cu_seqlens"],
                 int(batch["max_seqlen"]), targets)


def _multimodal_features(cfg: TrainConfig, s: VLMSettings) -> dict[str, str]:
    return {"token_feature": cfg.token_feature, "model.image_feature": s.image_feature}


def _fused_features(cfg: TrainConfig, s: VLMSettings) -> dict[str, str]:
    return {"model.fused_feature": s.fused_feature}


def _all_targets(targets: torch.Tensor, s: VLMSettings) -> torch.Tensor:
    return targets  # the multimodal packer already ignores the placeholders


def _text_targets(targets: torch.Tensor, s: VLMSettings) -> torch.Tensor:
    return torch.where(targets < s.text_vocab_size, targets, IGNORE_INDEX)  # not image codes


@dataclass(frozen=True)
class Kind:
    """What one kind of VLM is made of; the training loop is shared."""

    build_model: Callable[[TrainConfig, VLMSettings, Any], torch.nn.Module]
    make_loader: Callable[..., Any]  # (cfg, s, split, *, train, only) -> a resumable loader
    forward: Callable[[torch.nn.Module, dict, torch.Tensor], LMOutput]  # (model, batch, targets)
    features: Callable[[TrainConfig, VLMSettings], dict[str, str]]  # config key -> feature read
    caption_targets: Callable[[torch.Tensor, VLMSettings], torch.Tensor]  # eval: caption only
    language_model: Callable[[torch.nn.Module], PackedLM]  # the LM inside (for the plan)


KINDS: dict[str, Kind] = {
    "encoder": Kind(_encoder_model, _multimodal_loader, _forward_vlm, _multimodal_features,
                    _all_targets, lambda model: model.lm),
    "blind": Kind(_lm, _multimodal_loader, _forward_lm, _multimodal_features, _all_targets,
                  lambda model: model),
    "fusion": Kind(_fusion_model, _fused_loader, _forward_lm, _fused_features, _text_targets,
                   lambda model: model),
}


# -- the recipe -------------------------------------------------------------------------------


def build_model(cfg: TrainConfig, s: VLMSettings, schema) -> torch.nn.Module:
    """The model ``s.kind`` names, its vocabulary from the schema."""
    return KINDS[s.kind].build_model(cfg, s, schema)


def make_loader(cfg: TrainConfig, s: VLMSettings, split: str, *, train: bool,
                only: str | None = None):
    """Multimodal packed batches (encoder, blind) or packed discrete-token batches (fusion):
    shuffled with equal work per rank for training, in order and complete for eval; ``only``:
    of that one source of the data's mixture."""
    return KINDS[s.kind].make_loader(cfg, s, split, train=train, only=only)


def vlm_forward(model, batch: dict, s: VLMSettings, device: torch.device) -> LMOutput:
    """The model's ``LMOutput`` on one batch, with next-token targets."""
    batch = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
             for k, v in batch.items()}
    return KINDS[s.kind].forward(model, batch, shift_labels(batch["labels"]))


def caption_targets(batch: dict, s: VLMSettings) -> torch.Tensor:
    """Next-token targets that are caption text (not image placeholders, not image codes)."""
    return KINDS[s.kind].caption_targets(shift_labels(batch["labels"]), s)


@torch.no_grad()
def evaluate(model, run: Run, s: VLMSettings) -> dict:
    """Token-weighted caption cross-entropy over the eval split (first ``eval_batches``); for a
    mixture, of each source's eval split too (``eval_loss/<name>``)."""
    cfg = run.cfg

    def part(name: str | None) -> list[float]:
        total, count = 0.0, 0

        def spare():
            return next(iter(make_loader(cfg, s, cfg.train_split, train=False, only=name)))

        loader = make_loader(cfg, s, cfg.eval_split, train=False, only=name)
        for batch, counted in eval_batches(loader, run, spare):
            with run.autocast:
                logits = vlm_forward(model, batch, s, run.device).logits
            if not counted:
                continue
            targets = caption_targets(batch, s).to(run.device)
            keep = targets != IGNORE_INDEX
            total += float(torch.nn.functional.cross_entropy(logits[keep].float(),
                                                             targets[keep], reduction="sum"))
            count += int(keep.sum())
        return reduce_sum([total, count], run)

    model.eval()
    metrics = eval_by_source(cfg.mixture().names, part)
    model.train()
    return metrics


def train(cfg: TrainConfig, *, resume: bool = False, stop_at: int | None = None,
          stream=None) -> TrainResult:
    """Train the VLM ``cfg.model`` describes (see the module docstring)."""
    s = VLMSettings.of(cfg)
    run = Run(cfg, unit="tok", stream=stream)
    model = build_model(cfg, s, load_schema(cfg.mixture().sources[0].path)).to(run.device)
    lm = KINDS[s.kind].language_model(model)
    run.print_plan(model, seq_len=cfg.packing_length, micro_batch=1, layers=lm.cfg.n_layer,
                   hidden=lm.cfg.d_model, vocab=lm.cfg.vocab_size)
    model, optimizer = parallelize(model, cfg, run.dist, run.device)
    batches = Batches(make_loader(cfg, s, cfg.train_split, train=True))
    tally = SourceTally(batches.loader.dataset, run.meter)  # a mixture's sources
    start = run.resume(model, optimizer, batches) if resume else 0
    run.begin(start, stop_at)
    if start == 0:
        run.record_eval(evaluate(model, run, s), step=0)

    model.train()
    for step in run.steps():
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        set_lr(optimizer, lr)
        step_loss, tokens, packing = 0.0, 0, []
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            tally.add(batch)
            with gradient_sync(model, micro == cfg.grad_accum - 1), run.autocast:
                loss = vlm_forward(model, batch, s, run.device).loss
                (loss / cfg.grad_accum).backward()
            step_loss += loss.item() / cfg.grad_accum
            tokens += int(batch["input_ids"].numel())
            packing.append(float(batch["packing_efficiency"]))
        tally.end_step(lambda values: reduce_sum(values, run))
        grad_norm = clip_and_step(model, optimizer, cfg.grad_clip)
        run.measure_memory(model, optimizer)
        optimizer.zero_grad(set_to_none=True)
        run.end_step(step + 1, step_loss, tokens, time.perf_counter() - t0, lr, grad_norm,
                     packing)
        if run.eval_due():
            run.record_eval(evaluate(model, run, s))
        if run.checkpoint_due():
            run.save(model, optimizer, batches)
        if run.is_final:
            break
    return run.finish(model)
