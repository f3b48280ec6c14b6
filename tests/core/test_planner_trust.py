"""benchmarks/planner_trust.py: each variant changes only the planner settings it names."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.loop import tiny_checkpoint

from benchmarks.planner_trust import VARIANTS, overrides_of, run_variant
from fowm_core.errors import ConfigError
from fowm_core.learning.agent import load


def test_variants_keep_the_model_and_set_only_their_planner_values(tmp_path: Path) -> None:
    ckpt = tiny_checkpoint(tmp_path / "pre.safetensors")
    base = load(ckpt).cfg
    for name in VARIANTS:
        if name == "elites_128":          # more elites than the tiny planner has samples
            with pytest.raises(ConfigError, match="num_elites"):
                load(ckpt, overrides_of(name))
            continue
        cfg = load(ckpt, overrides_of(name)).cfg
        assert cfg.model == base.model
        assert cfg.planner.uncertainty_cost == (3.0 if name == "lam_3" else 1.0)
    assert load(ckpt, overrides_of("horizon_1")).cfg.horizon == 1
    assert load(ckpt, overrides_of("pi_mix_1.0")).cfg.planner.num_pi_trajs == \
        base.planner.num_samples
    assert load(ckpt, overrides_of("elites_16")).cfg.planner.mixture_coef == \
        base.planner.mixture_coef


def test_a_variant_row_is_an_evaluation_of_the_checkpoint(tmp_path: Path) -> None:
    ckpt = tiny_checkpoint(tmp_path / "pre.safetensors")
    row = run_variant(ckpt, 0, "horizon_1", episodes=1)
    assert row["variant"] == "horizon_1" and row["overrides"]["horizon"] == 1
    assert row["episodes"] == 1 and 0.0 <= row["success_rate"] <= 1.0
