"""The MPPI loop is written once over a Scorer (planner/scoring.py); the reference scorer (the
model's own methods) is the oracle the fused one must agree with, decision for decision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_planner import gen, random_model, tiny_cfg

from fowm_core.planner.mppi import Planner
from fowm_core.planner.scoring import FusedScorer, ReferenceScorer

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/core/conftest.py


@pytest.mark.parametrize("lam", [1.0, 0.0])
def test_whole_decisions_agree_between_the_two_scorers(lam: float) -> None:
    """One loop, two scorers: the same draws in the same order (the generators end equal) and
    the same decisions to float rounding, warm start included."""
    cfg = tiny_cfg(uncertainty_cost=lam, iterations=3)
    model = random_model(cfg, seed=4)
    planners = [Planner(model, cfg, gen(11), fast=fast) for fast in (True, False)]
    assert isinstance(planners[0].scorer, FusedScorer)
    assert isinstance(planners[1].scorer, ReferenceScorer)
    obs = {"state": np.array([0.1, -0.2, 0.3], np.float32)}
    for t in range(3):
        fast, ref = (p.plan(obs, t0=t == 0, eval_mode=False) for p in planners)
        np.testing.assert_allclose(fast.action, ref.action, rtol=0, atol=1e-5)
        np.testing.assert_allclose(fast.mean, ref.mean, rtol=0, atol=1e-5)
        assert fast.value == pytest.approx(ref.value, abs=1e-5)
        assert fast.uncertainty == pytest.approx(ref.uncertainty, abs=1e-5)
    assert torch.equal(planners[0].generator.get_state(), planners[1].generator.get_state())


def test_the_fused_scorer_refuses_a_rollout_without_its_cached_steps() -> None:
    cfg = tiny_cfg()
    model = random_model(cfg)
    fused, ref = (Planner(model, cfg, gen(0), fast=fast).scorer for fast in (True, False))
    z = torch.rand(1, cfg.model.latent_dim)
    gauss = torch.zeros(cfg.horizon, cfg.planner.num_samples, cfg.model.action_dim)
    with torch.no_grad():
        plain = ref.pi_rollout(z, gen(1))
        with pytest.raises(TypeError, match="needs the CachedPiRollout of its own pi_rollout"):
            fused.values(z, gauss, plain, fused.prepare(z), gen(2))
