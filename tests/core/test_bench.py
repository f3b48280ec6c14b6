"""FLOP counting against hand arithmetic, and the bench functions' JSON (no timing asserts)."""

from __future__ import annotations

import json

import pytest
import torch

from fowm_core.config import FowmConfig, LearnerConfig, Modality, ModelConfig, PlannerConfig
from fowm_core.jobs import bench

torch.set_num_threads(1)


def tiny_cfg(lam: float = 1.0, modality: Modality = Modality.STATE) -> FowmConfig:
    return FowmConfig(
        horizon=2, discount=0.9,
        model=ModelConfig(modality=modality, state_dim=3, action_dim=2, latent_dim=4,
                          mlp_dim=8, enc_dim=5, num_q=3, num_channels=2, img_size=40),
        planner=PlannerConfig(iterations=2, num_samples=10, num_elites=3, mixture_coef=0.2,
                              uncertainty_cost=lam),
        learner=LearnerConfig(batch_size=4),
    )


def test_plan_flops_match_hand_arithmetic() -> None:
    # L=4, A=2, M=8, K=3, H=2, N=10, Nπ=2, 2 iterations; state encoder 3→5→4.
    za = 6
    dyn, rew, q = za * 8 + 64 + 8 * 4, za * 8 + 64 + 8, za * 8 + 64 + 8
    pi = 4 * 8 + 64 + 8 * 2
    enc = 3 * 5 + 5 * 4
    step, terminal = dyn + rew + 3 * q, pi + 3 * q
    macs = enc + 2 * 2 * (pi + dyn) + 2 * 12 * (2 * step + terminal) + 3 * q
    assert bench.plan_flops(tiny_cfg()) == 2 * macs
    # λ = 0: no heads at the steps, only the 2 drawn heads at the terminal.
    macs0 = enc + 2 * 2 * (pi + dyn) + 2 * 12 * (2 * (dyn + rew) + pi + 2 * q) + 3 * q
    assert bench.plan_flops(tiny_cfg(lam=0.0)) == 2 * macs0


def test_executed_flops_subtract_cached_work() -> None:
    cfg = tiny_cfg()
    za, zpart = 6, 4 * 8
    dyn, rew, q, pi = za * 8 + 64 + 32, za * 8 + 72, za * 8 + 72, 32 + 64 + 16
    step, terminal = dyn + rew + 3 * q, pi + 3 * q
    enc = 35
    macs = enc + 2 * 2 * (pi + dyn) + 2 * 2 * (rew + 3 * q) + 5 * zpart
    macs += 2 * (10 * (2 * step - 5 * zpart) + 12 * terminal) + 3 * q
    assert bench.plan_flops(cfg, executed=True) == 2 * macs
    assert bench.plan_flops(cfg, executed=True) < bench.plan_flops(cfg)


def test_encoder_macs_for_rgb_follow_the_conv_shapes() -> None:
    cfg = tiny_cfg(modality=Modality.RGB)
    # 40 → 17 → 7 → 3 → 1 with 2 channels; flatten 2·1·1 → latent 4.
    expected = 17 * 17 * 2 * 3 * 49 + 7 * 7 * 2 * 2 * 25 + 3 * 3 * 2 * 2 * 9 + 1 * 2 * 2 * 9 + 2 * 4
    assert bench.encoder_macs(cfg) == expected


@pytest.mark.parametrize(("lam", "expected"), [(1.0, 81.6e9), (0.0, 26.7e9)])
def test_paper_plan_flops(lam: float, expected: float) -> None:
    flops = bench.plan_flops(bench.bench_config("paper", lam=lam))
    assert flops == pytest.approx(expected, rel=0.01)


def test_paper_update_flops_near_spec() -> None:
    # Spec §9 quotes ≈128 GFLOP (rgb + state, batch 256) and 24.7 GFLOP state-only.
    assert bench.update_flops(bench.bench_config("paper")) == pytest.approx(128e9, rel=0.05)
    state = bench.bench_config("paper", modality="state")
    assert bench.update_flops(state) == pytest.approx(24.7e9, rel=0.05)


def test_bench_plan_returns_the_json_keys() -> None:
    out = bench.bench_plan(tiny_cfg(), repeats=2, peak_size=64)
    for key in ("plan_s", "flops", "gflops_per_s", "torch_threads", "preset", "lam",
                "iterations", "samples", "peak_gflops_per_s", "flops_executed"):
        assert key in out
    assert out["flops"] == bench.plan_flops(tiny_cfg())
    assert out["plan_s"] > 0
    json.dumps(out)


def test_bench_update_and_peak_return_the_json_keys() -> None:
    out = bench.bench_update(tiny_cfg(modality=Modality.ALL), repeats=1)
    assert {"update_s", "flops", "gflops_per_s", "torch_threads"} <= set(out)
    assert out["flops"] == bench.update_flops(tiny_cfg(modality=Modality.ALL))
    peak = bench.bench_peak(size=64, repeats=1)
    assert peak["peak_gflops_per_s"] > 0


def test_cli_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["peak", "--size", "64", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["bench"] == "peak"
