"""The VLM recipe and demo end to end on a small synthetic corpus (Beam job included)."""

import json
import math

import pytest


@pytest.mark.slow
def test_vlm_demo_runs_every_model_and_reports_its_figures(tmp_path):
    from shardforge.demo_vlm import run_vlm_demo

    lines = []
    figures = run_vlm_demo(tmp_path, samples=150, steps=12, log=lines.append)
    assert figures["errors"] == figures["corpus"]["bad"] == 6
    for name in ("encoder", "blind", "fusion"):
        fig = figures[name]
        assert fig["steps"] == 12 and math.isfinite(fig["eval_caption_loss"])
        assert 0.0 <= fig["colour_probe"] <= 1.0
        assert 0.0 < fig["packing_efficiency"] <= 1.0
    saved = json.loads((tmp_path / "vlm" / "summary.json").read_text())
    assert saved == figures
    assert any("caption loss vs the text-only baseline" in line for line in lines)
