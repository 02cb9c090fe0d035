"""The memory planner reproduces the ZeRO paper's figures and the CLI prints them."""

import pytest

from shardforge.cli import main
from shardforge.training.memory import parse_count, parse_size, plan_memory


def test_textbook_7b_mixed_adamw_is_16_bytes_per_param():
    plan = plan_memory(7e9, precision="bf16-mixed", optimizer="adamw")
    assert plan.bytes_per_param == 16
    assert plan.model_states == pytest.approx(112e9)
    assert plan.weights == 14e9 and plan.gradients == 14e9 and plan.master == 28e9
    assert plan.states == {"exp_avg": 28e9, "exp_avg_sq": 28e9}


@pytest.mark.parametrize(
    "stage, expected_gb",
    # ZeRO paper, Figure 1: 7.5B params, N_d = 64, K = 12.
    [(0, 120.0), (1, 31.4), (2, 16.6), (3, 1.9)],
)
def test_zero_stages_match_the_paper(stage, expected_gb):
    plan = plan_memory(7.5e9, zero_stage=stage, gpus=64)
    assert plan.model_states / 1e9 == pytest.approx(expected_gb, abs=0.05)


def test_fp32_and_sgd_and_activations():
    assert plan_memory(1e9, precision="fp32").bytes_per_param == 16
    assert plan_memory(1e9, precision="fp32", optimizer="sgd").bytes_per_param == 12
    no_act = plan_memory(1e9)
    assert no_act.activations is None and no_act.total == no_act.model_states
    act = plan_memory(1e9, seq_len=1024, micro_batch=2, layers=4, hidden=256)
    assert act.activations == 34 * 1024 * 2 * 256 * 4
    ckpt = plan_memory(1e9, seq_len=1024, micro_batch=2, layers=4, hidden=256,
                       activation_checkpointing=True)
    assert ckpt.activations < act.activations
    assert plan_memory(7e9, gpu_memory=80e9).fits is False
    assert plan_memory(7e9, gpu_memory=80e9, zero_stage=3, gpus=8).fits is True


def test_parsers_and_errors():
    assert parse_count("7B") == 7e9 and parse_count("7e9") == 7e9 and parse_count("350M") == 350e6
    assert parse_size("80GB") == 80e9 and parse_size("1GiB") == 2**30 and parse_size("80") == 80e9
    with pytest.raises(ValueError, match="memory size"):
        parse_size("eighty")
    with pytest.raises(ValueError, match="precision"):
        plan_memory(1e9, precision="int3")


def test_cli_prints_breakdown(capsys):
    assert main(["plan", "--params", "7e9"]) == 0
    out = capsys.readouterr().out
    assert "112.00 GB" in out and "16 bytes/param" in out and "exp_avg_sq" in out
    assert main(["plan", "--params", "7e9", "--zero-stage", "3", "--gpus", "8",
                 "--gpu-memory", "80GB", "--seq-len", "4096", "--micro-batch", "1",
                 "--layers", "32", "--hidden", "4096"]) == 0
    out = capsys.readouterr().out
    assert "14.00 GB" in out and "fits in 80.00 GB" in out and "stage 1" in out
