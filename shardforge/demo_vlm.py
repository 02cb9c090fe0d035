"""The vision-language demo: a synthetic Pillow corpus -> Beam job -> shards -> three models.

    shardforge demo --vlm            # or: python -m shardforge.demo_vlm OUT_DIR [--full]

1. ``vision_corpus.write_corpus``: shapes of six colours, two sizes, five places on canvases of
   random size and aspect ratio, captioned ("a big red circle on the left"), 15% interleaved
   two-image samples, and six bad images (corrupt, truncated, empty, unsupported, a
   decompression bomb, a missing file) that must end in ``errors/``.
2. The Beam job (``vision_features.feature_set``): text ids, native-resolution images with
   learned normalization, and the early-fusion discrete tokens (k-means codebook).
3. Three models on the same captions (:mod:`shardforge.training.recipes.vlm`): the encoder VLM,
   the text-only baseline (same LM, no image features) and the early-fusion LM (QK-norm,
   z-loss). Printed: eval caption loss of each, and a probe: how often the model's most likely
   colour word, at the position where the caption names the first shape's colour, is the right
   one (chance: 1/6).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import torch

from shardforge.examples.vision_corpus import COLOURS, VOCAB, write_corpus
from shardforge.examples.vision_features import (
    IMAGE_TOKEN_ID,
    TEXT_VOCAB_SIZE,
    feature_set,
)
from shardforge.training.config import TrainConfig
from shardforge.training.recipes.vlm import VLMSettings, make_loader, vlm_forward
from shardforge.training.trainer import train

LM = {"n_layer": 2, "n_head": 4, "n_kv_head": 2, "d_model": 64}
VISION = {"patch_dim": 3 * 2 * 14 * 14, "d_model": 64, "n_layer": 2, "n_head": 4}
COLOUR_IDS = torch.tensor([VOCAB.index(c) for c in COLOURS])


@torch.no_grad()
def colour_probe(model: torch.nn.Module, cfg: TrainConfig) -> float:
    """Accuracy of the model's most likely colour word where each eval caption names its first
    colour (the logits one position before it, over the six colour words)."""
    s = VLMSettings.of(cfg)
    device = next(model.parameters()).device
    model.eval()
    right = total = 0
    for batch in make_loader(cfg, s, cfg.eval_split, train=False):
        logits = vlm_forward(model, batch, s, device).logits.cpu()
        ids, cu = batch["input_ids"], batch["cu_seqlens"].tolist()
        is_colour = torch.isin(ids, COLOUR_IDS)
        for doc, (a, b) in enumerate(zip(cu, cu[1:])):
            hits = torch.nonzero(is_colour[a:b]).flatten()
            if len(hits) == 0 or hits[0] == 0 or int(batch["doc_offsets"][doc]):
                continue  # no colour word, or a continuation piece
            p = a + int(hits[0])
            guess = COLOUR_IDS[logits[p - 1, COLOUR_IDS].argmax()]
            right += int(guess == ids[p])
            total += 1
    model.train()
    return right / max(total, 1)


def run_vlm_demo(out_dir: str | Path, quick: bool = True, log=print, *,
                 samples: int | None = None, steps: int | None = None) -> dict:
    """Run the whole demo under ``out_dir/vlm``; returns its figures (also ``summary.json``).

    ``quick``: 1200 samples and 800 steps per model (about 6 minutes on 2 CPU cores); else
    3000 samples and 2000 steps. ``samples`` / ``steps`` override both (tests).
    """
    from shardforge.pipelines import run_pipeline

    root = Path(out_dir) / "vlm"
    corpus, data = root / "corpus", root / "data"
    t0 = time.perf_counter()
    samples = samples or (1200 if quick else 3000)
    counts = write_corpus(str(corpus), samples=samples, seed=0)
    log(f"corpus: {counts['samples']} samples, {counts['images']} images, {counts['bad']} bad "
        f"-> {corpus}")
    summary = run_pipeline(feature_set(root=str(corpus)), str(corpus / "corpus.jsonl"),
                           str(data), num_shards=2, eval_fraction=0.15,
                           max_error_fraction=0.05, overwrite=True)
    log(f"beam job: {summary.splits} records, {summary.errors} rows in errors/ "
        f"({summary.seconds:.0f}s)")
    steps = steps or (800 if quick else 2000)
    # budgets in the data's ratio: ~13 LM tokens to ~10 patches per sample
    base = dict(task="vlm", data=str(data), max_steps=steps, lr=2e-3, min_lr=2e-4,
                warmup_steps=20, weight_decay=0.0, packing_length=640, eval_every=steps,
                eval_batches=0, log_every=max(1, steps // 4), ckpt_every=0, plot=False,
                threads=1, seed=0)
    settings = dict(lm=dict(LM), patch_budget=512, image_token_id=IMAGE_TOKEN_ID,
                    lookahead=512)
    figures: dict = {"corpus": counts, "splits": summary.splits, "errors": summary.errors}
    for kind, extra, budget in (
            ("encoder", {"vision": dict(VISION)}, 640), ("blind", {}, 640),
            ("fusion", {"text_vocab_size": TEXT_VOCAB_SIZE}, 1024)):
        cfg = TrainConfig(**{**base, "out_dir": str(root / kind), "packing_length": budget,
                             "model": {**settings, "kind": kind, **extra}})
        result = train(cfg, stream=_Lines(log))
        probe = colour_probe(result.model, cfg)
        loss = result.last_eval["eval_loss"]
        figures[kind] = {"eval_caption_loss": round(loss, 4), "colour_probe": round(probe, 3),
                         "steps": result.steps, "tokens_per_s": round(result.throughput),
                         "packing_efficiency": round(result.packing_efficiency or 1.0, 4)}
        log(f"{kind:>8}: eval caption loss {loss:.3f}, colour probe {probe:.0%} (chance "
            f"{1 / len(COLOURS):.0%}), {result.steps} steps, {result.throughput:.0f} tok/s")
    figures["seconds"] = round(time.perf_counter() - t0, 1)
    figures["encoder_vs_blind"] = round(figures["encoder"]["eval_caption_loss"]
                                        / figures["blind"]["eval_caption_loss"], 3)
    figures["fusion_vs_blind"] = round(figures["fusion"]["eval_caption_loss"]
                                       / figures["blind"]["eval_caption_loss"], 3)
    (root / "summary.json").write_text(json.dumps(figures, indent=2))
    log(f"caption loss vs the text-only baseline: encoder x{figures['encoder_vs_blind']}, "
        f"early fusion x{figures['fusion_vs_blind']} ({figures['seconds']:.0f}s in all)")
    return figures


class _Lines(io.TextIOBase):
    """A text stream (not a terminal) that hands each line the recipe prints to ``log``."""

    def __init__(self, log) -> None:
        super().__init__()
        self.log, self.buf = log, ""

    def write(self, text: str) -> int:
        self.buf += text.replace("\r", "\n")
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            if line.strip():
                self.log(line)
        return len(text)


def main() -> None:
    parser = argparse.ArgumentParser(description="the vision-language demo")
    parser.add_argument("out_dir", nargs="?", default="demo_out")
    parser.add_argument("--full", action="store_true", help="3000 samples, 2000 steps each")
    args = parser.parse_args()
    run_vlm_demo(args.out_dir, quick=not args.full)


if __name__ == "__main__":
    main()
