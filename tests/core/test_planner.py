"""The planner against the reference semantics (docs/algorithm.md §4, §13.5) on tiny models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fowm_core.config import FowmConfig, Modality, ModelConfig, PlannerConfig
from fowm_core.errors import ConfigError
from fowm_core.model import WorldModel
from fowm_core.planner.fused import (
    FusedModel,
    hidden1,
    hidden1_eager,
    hidden2,
    hidden2_eager,
    mish_exp,
    tanh_exp,
)
from fowm_core.planner.mppi import Planner, weighted_moments
from fowm_core.planner.scoring import FusedScorer, reference_value

torch.set_num_threads(1)

L, A = 6, 2


def tiny_cfg(**planner: object) -> FowmConfig:
    base = {"iterations": 3, "num_samples": 24, "num_elites": 6, "mixture_coef": 0.25,
            "uncertainty_cost": 1.0}
    base.update(planner)
    return FowmConfig(
        horizon=3, discount=0.9,
        model=ModelConfig(modality=Modality.STATE, state_dim=3, action_dim=A, latent_dim=L,
                          mlp_dim=16, enc_dim=8, num_q=5),
        planner=PlannerConfig(**base),
    )


def random_model(cfg: FowmConfig, seed: int = 0) -> WorldModel:
    """Default init plus noise, so reward and Q heads (zero-init last layers) are non-trivial."""
    torch.manual_seed(seed)
    model = WorldModel(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def hand_value(model: WorldModel, cfg: FowmConfig, z: torch.Tensor, actions: torch.Tensor,
               eps: torch.Tensor, heads: tuple[int, int]) -> float:
    """Ĝ of ONE candidate (actions (H, A)) with the terminal noise eps (A,) and head pair given,
    every term spelled out: unbiased std over the K heads, penalty before each dynamics step."""
    lam, gamma, K = cfg.planner.uncertainty_cost, cfg.discount, cfg.model.num_q
    total = 0.0
    with torch.no_grad():
        for t in range(cfg.horizon):
            a = actions[t][None]
            q = [float(model.q(z, a)[k]) for k in range(K)]
            mean = sum(q) / K
            std = math.sqrt(sum((x - mean) ** 2 for x in q) / (K - 1))
            total += gamma**t * (float(model.reward(z, a)) - lam * std)
            z = model.next(z, a)
        noise = (cfg.planner.min_std * eps).clamp(-0.3, 0.3)
        a_h = (model.pi_mean(z)[0] + noise).clamp(-1 + 1e-6, 1 - 1e-6)[None]
        q = [float(model.q(z, a_h)[k]) for k in range(K)]
        mean = sum(q) / K
        std = math.sqrt(sum((x - mean) ** 2 for x in q) / (K - 1))
        total += gamma**cfg.horizon * (min(q[heads[0]], q[heads[1]]) - lam * std)
    return total


@pytest.mark.parametrize("lam", [1.0, 0.0])
@pytest.mark.parametrize("fast", [True, False])
def test_score_equals_hand_computed_penalised_return(lam: float, fast: bool) -> None:
    cfg = tiny_cfg(uncertainty_cost=lam)
    model = random_model(cfg)
    g = gen(1)
    planner = Planner(model, cfg, g, fast=fast)
    z = torch.rand(1, L)
    gauss = torch.rand(cfg.horizon, cfg.planner.num_samples, A, generator=gen(2)) * 2 - 1
    with torch.no_grad():
        rollout = planner.scorer.pi_rollout(z, planner.generator)
        state = g.get_state()
        shared = planner.scorer.prepare(z)
        values = planner.scorer.values(z, gauss, rollout, shared, planner.generator)
    # The terminal draws, in the reference order: π noise for every candidate, then the head pair.
    g.set_state(state)
    n_all = cfg.planner.num_samples + cfg.planner.num_pi_trajs
    eps = torch.randn(n_all, A, generator=g)
    heads = tuple(int(h) for h in torch.randperm(cfg.model.num_q, generator=g)[:2])
    actions = torch.cat([gauss, rollout.actions], dim=1)
    for j in (0, 7, cfg.planner.num_samples - 1, cfg.planner.num_samples, n_all - 1):
        expected = hand_value(model, cfg, z, actions[:, j], eps[j], heads)
        assert values[j, 0].item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("lam", [1.0, 0.0])
def test_fused_path_matches_model_methods(lam: float) -> None:
    cfg = tiny_cfg(uncertainty_cost=lam)
    model = random_model(cfg, seed=3)
    fused = FusedModel(model)
    z, a = torch.rand(9, L), torch.rand(9, A) * 2 - 1
    with torch.no_grad():
        out = fused.step(z, a, with_q=True)
        torch.testing.assert_close(out.z, model.next(z, a), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.r, model.reward(z, a), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.q, model.q(z, a), atol=1e-5, rtol=1e-5)
        heads = torch.tensor([3, 1])
        torch.testing.assert_close(fused.q(z, a, heads), model.q(z, a)[heads], atol=1e-5, rtol=1e-5)
        shared = fused.step(z[:1].expand(9, L), a, with_q=True, z_part=fused.z_part(z[:1]))
        torch.testing.assert_close(shared.q, model.q(z[:1].expand(9, L), a), atol=1e-5, rtol=1e-5)
        # Whole iterations: the fast planner (π steps cached) vs the reference formula.
        scores = []
        for fast in (True, False):
            planner = Planner(model, cfg, gen(5), fast=fast)
            rollout = planner.scorer.pi_rollout(z[:1], planner.generator)
            gauss = torch.rand(cfg.horizon, cfg.planner.num_samples, A, generator=gen(6)) * 2 - 1
            shared = planner.scorer.prepare(z[:1])
            scores.append(planner.scorer.values(z[:1], gauss, rollout, shared, planner.generator))
    torch.testing.assert_close(scores[0], scores[1], atol=1e-5, rtol=1e-5)


def test_fused_weights_follow_parameter_updates() -> None:
    cfg = tiny_cfg()
    model = random_model(cfg)
    fused = FusedModel(model)
    with torch.no_grad():
        model._qs.w2.mul_(1.5)
        model._dynamics[0][0].weight.add_(0.1)
    assert fused.refresh()
    assert not fused.refresh()
    z, a = torch.rand(4, L), torch.rand(4, A)
    with torch.no_grad():
        out = fused.step(z, a, with_q=True)
        torch.testing.assert_close(out.q, model.q(z, a), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.z, model.next(z, a), atol=1e-5, rtol=1e-5)


def disagreement_model(cfg: FowmConfig) -> WorldModel:
    """A model built by hand: the K Q heads agree (≈ 0) for a[0] < 0 and spread widely for a[0] > 0,
    while the reward rises slightly with a[0]. Latents ignore the action and π pushes a[0] to −1.

    Hidden patterns p = (1, −1, 0, 0), q = (0, 0, 1, −1): a first layer b = p, W = a[0]·q gives
    LayerNorm output unit 2 = √2·a0/√(1 + a0²), increasing in a0, which the next layers read."""
    model = WorldModel(cfg.model)
    K, M = cfg.model.num_q, cfg.model.mlp_dim
    p, q = torch.tensor([1.0, -1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0, -1.0])
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        for norm in (model._reward[1], model._reward[4], model._qs):
            for name in ("weight", "ln_weight"):
                if hasattr(norm, name):
                    getattr(norm, name).fill_(1.0)
        dyn = model._dynamics
        dyn[0][1].weight.fill_(1.0), dyn[0][4].weight.fill_(1.0), dyn[1].norm.weight.fill_(1.0)
        dyn[0][6].bias.copy_(torch.linspace(-1, 1, cfg.model.latent_dim))
        rew = model._reward
        rew[0].weight[:M, L] = q
        rew[0].bias.copy_(p)
        rew[3].bias.copy_(p)
        rew[3].weight[2, 2], rew[3].weight[3, 2] = 1.0, -1.0
        rew[6].weight[0, 2] = 0.1
        spread = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])
        for k in range(K):
            model._qs.w1[L, k * M:(k + 1) * M] = q
            model._qs.b1[k * M:(k + 1) * M] = p
            model._qs.w2[k, 2, 0] = 5.0           # unit 0 = 5·tanh(LN unit 2) → ELU
            model._qs.b2[k, 0, 1] = 1.0           # unit 1 = ELU(1) = 1: cancels ELU's −1 floor
            model._qs.w3[k, 0, 0] = model._qs.w3[k, 1, 0] = spread[k]
        model._pi[1].weight.fill_(1.0), model._pi[4].weight.fill_(1.0)
        model._pi[6].bias[0] = -5.0
    return model


@pytest.mark.parametrize("fast", [True, False])
def test_penalty_steers_away_from_ensemble_disagreement(fast: bool) -> None:
    firsts = {}
    for lam in (0.0, 1.0):
        cfg = FowmConfig(
            horizon=3, discount=0.9,
            model=ModelConfig(modality=Modality.STATE, state_dim=3, action_dim=A, latent_dim=L,
                              mlp_dim=4, enc_dim=8, num_q=5),
            planner=PlannerConfig(iterations=4, num_samples=64, num_elites=8, uncertainty_cost=lam),
        )
        planner = Planner(disagreement_model(cfg), cfg, gen(0), fast=fast)
        obs = {"state": np.zeros(3, np.float32)}
        results = [planner.plan(obs, t0=i == 0, eval_mode=True) for i in range(3)]
        firsts[lam] = results[-1]
    assert firsts[0.0].action[0] > 0.5            # reward alone: push a[0] up
    assert firsts[1.0].action[0] < 0.0            # λ = 1: stay where the heads agree
    assert firsts[1.0].uncertainty < 0.05 < firsts[0.0].uncertainty


def test_warm_start_shifts_mean_by_one_step_and_t0_resets() -> None:
    cfg = tiny_cfg()
    planner = Planner(random_model(cfg), cfg, gen(0))
    obs = {"state": torch.rand(3)}
    first = planner.plan(obs, t0=True, eval_mode=True)
    assert np.any(first.mean != 0)
    shifted = planner.initial_mean(t0=False).numpy()
    np.testing.assert_array_equal(shifted[:-1], first.mean[1:])
    np.testing.assert_array_equal(shifted[-1], 0.0)
    np.testing.assert_array_equal(planner.initial_mean(t0=True).numpy(), 0.0)
    planner.reset()
    np.testing.assert_array_equal(planner.initial_mean(t0=False).numpy(), 0.0)


def test_plan_starts_from_the_warm_started_mean() -> None:
    # σ pinned to ~1e-4 and no π candidates: every sample ≈ μ_init, so the final mean ≈ μ_init.
    cfg = tiny_cfg(min_std=1e-4, max_std=1e-4, mixture_coef=0.0, iterations=1)
    planner = Planner(random_model(cfg), cfg, gen(0))
    prev = torch.tensor([[0.1, -0.2], [0.3, 0.4], [-0.5, 0.6]])
    planner._prev_mean = prev
    obs = {"state": torch.rand(3)}
    warm = planner.plan(obs, t0=False, eval_mode=True)
    np.testing.assert_allclose(warm.mean, [[0.3, 0.4], [-0.5, 0.6], [0.0, 0.0]], atol=1e-3)
    cold = planner.plan(obs, t0=True, eval_mode=True)
    np.testing.assert_allclose(cold.mean, 0.0, atol=1e-3)


def test_eval_mode_has_no_noise_and_collection_adds_sd0_noise() -> None:
    cfg = tiny_cfg()
    model = random_model(cfg)
    obs = {"state": torch.rand(3)}
    g_eval = gen(7)
    planner = Planner(model, cfg, g_eval)
    evaluated = planner.plan(obs, t0=True, eval_mode=True)
    first_actions = planner.last_elites[0].numpy()
    assert any(np.array_equal(evaluated.action, row) for row in first_actions)
    exploration = torch.randn(A, generator=g_eval)       # the draw collection mode takes next
    collected = Planner(model, cfg, gen(7)).plan(obs, t0=True, eval_mode=False)
    expected = np.clip(evaluated.action + evaluated.std[0] * exploration.numpy(), -1, 1)
    np.testing.assert_allclose(collected.action, expected, atol=1e-6)
    assert not np.array_equal(collected.action, evaluated.action)
    assert collected.action.dtype == np.float32 and collected.action.shape == (A,)


def test_pi_rollouts_are_drawn_once_per_decision_and_reused() -> None:
    cfg = tiny_cfg(iterations=4)
    model = random_model(cfg)
    planner = Planner(model, cfg, gen(0))
    calls: list[int] = []
    assert isinstance(planner.scorer, FusedScorer)
    original_pi = planner.scorer.fused.pi   # the fast path's π (the model's without kernels)

    def counting_pi(z: torch.Tensor, std: float = 0.0, generator=None) -> torch.Tensor:
        calls.append(z.shape[0])
        return original_pi(z, std, generator)

    seen: list[torch.Tensor] = []
    original_elites = planner._elites

    def capturing_elites(value: torch.Tensor, actions: torch.Tensor):
        seen.append(actions[:, cfg.planner.num_samples:].clone())
        return original_elites(value, actions)

    planner.scorer.fused.pi = counting_pi
    planner._elites = capturing_elites
    planner.plan({"state": torch.rand(3)}, t0=True, eval_mode=True)
    n, n_pi, H = cfg.planner.num_samples, cfg.planner.num_pi_trajs, cfg.horizon
    # H rollout draws of Nπ rows, then one terminal draw of N + Nπ rows per iteration.
    assert calls == [n_pi] * H + [n + n_pi] * cfg.planner.iterations
    assert len(seen) == cfg.planner.iterations
    for later in seen[1:]:
        torch.testing.assert_close(later, seen[0], rtol=0, atol=0)


def test_momentum_on_mean_only_and_std_from_last_elites() -> None:
    cfg = tiny_cfg(iterations=1, momentum=0.3)
    planner = Planner(random_model(cfg), cfg, gen(0))
    prev = torch.full((cfg.horizon, A), 0.5)
    planner._prev_mean = prev
    result = planner.plan({"state": torch.rand(3)}, t0=False, eval_mode=True)
    m, sd = weighted_moments(planner.last_elites, planner.last_score, cfg.planner.min_std,
                             cfg.planner.max_std)
    start = planner.initial_mean(t0=True)
    start[:-1] = prev[1:]
    np.testing.assert_allclose(result.mean, (0.3 * start + 0.7 * m).numpy(), atol=1e-6)
    np.testing.assert_allclose(result.std, sd.numpy(), atol=1e-6)   # replaced, no momentum


def test_weighted_moments_clamps_std() -> None:
    score = torch.full((4, 1), 0.25)
    same = torch.full((2, 4, A), 0.3)
    mean, std = weighted_moments(same, score, 0.05, 2.0)
    torch.testing.assert_close(mean, torch.full((2, A), 0.3 / (1 + 1e-9)))
    assert torch.all(std == 0.05)
    spread = torch.tensor([-1.0, 1.0, -1.0, 1.0]).view(1, 4, 1).expand(2, 4, A)
    _, std = weighted_moments(spread, score, 0.05, 0.5)
    assert torch.all(std == 0.5)
    _, std = weighted_moments(spread * 0.2, score, 0.05, 0.5)
    torch.testing.assert_close(std, torch.full((2, A), 0.2), atol=1e-6, rtol=1e-6)


def test_a_state_of_another_layout_is_refused_with_the_sizes() -> None:
    cfg = tiny_cfg()
    planner = Planner(random_model(cfg), cfg, gen(0))
    with pytest.raises(ConfigError, match="'state' has 4 values but the model takes 3"):
        planner.plan({"state": np.zeros(4, np.float32)}, t0=True, eval_mode=True)


def test_policy_only_mode() -> None:
    cfg = tiny_cfg(mpc=False)
    model = random_model(cfg)
    obs = {"state": np.random.default_rng(0).random(3).astype(np.float32)}
    evaluated = Planner(model, cfg, gen(0)).plan(obs, t0=True, eval_mode=True)
    with torch.no_grad():
        expected = model.pi_mean(model.encode({"state": torch.as_tensor(obs["state"])[None]}))[0]
    np.testing.assert_allclose(evaluated.action, expected.numpy(), atol=1e-6)
    collected = Planner(model, cfg, gen(0)).plan(obs, t0=True, eval_mode=False)
    gap = np.abs(collected.action - evaluated.action)
    assert 0 < gap.max() <= 0.3 + 1e-6                   # truncated σ = min_std noise


def test_reference_value_uses_unbiased_std_of_all_heads() -> None:
    cfg = tiny_cfg(uncertainty_cost=2.0)
    model = random_model(cfg)
    z, actions = torch.rand(5, L), torch.rand(cfg.horizon, 5, A)
    with torch.no_grad():
        g = gen(4)
        value = reference_value(model, z, actions, cfg, g)
        g_zero = gen(4)
        no_pen = reference_value(model, z, actions, cfg.with_overrides(
            {"planner": {"uncertainty_cost": 0.0}}), g_zero)
        penalty = sum(0.9**t * torch.std(model.q(zt, actions[t]), dim=0, unbiased=True)
                      for t, zt in enumerate(_latents(model, z, actions)))
    assert torch.all(value < no_pen)
    assert torch.all(no_pen - value >= 2.0 * penalty - 1e-5)     # steps only; terminal adds more


def _latents(model: WorldModel, z: torch.Tensor, actions: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for a in actions:
        out.append(z)
        z = model.next(z, a)
    return out


def test_compiled_elementwise_bodies_match_eager() -> None:
    """The one-exp Mish/Tanh identities (what inductor compiles) agree with torch's ops."""
    x = torch.linspace(-90, 90, 20001)
    torch.testing.assert_close(mish_exp(x), torch.nn.functional.mish(x), atol=3e-6, rtol=1e-6)
    torch.testing.assert_close(tanh_exp(x), torch.tanh(x), atol=3e-7, rtol=1e-6)
    assert torch.isnan(mish_exp(torch.tensor([float("nan")]))).all()
    h, bias = torch.randn(7, 5, 16) * 3, torch.randn(7, 1, 16)
    w, b = torch.rand(7, 1, 16) + 0.5, torch.randn(7, 1, 16)
    torch.testing.assert_close(hidden1(h, bias, w, b, 2), hidden1_eager(h.clone(), bias, w, b, 2),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hidden2(h, bias, w[:2], b[:2], 2),
                               hidden2_eager(h.clone(), bias, w[:2], b[:2], 2),
                               atol=1e-5, rtol=1e-5)


def test_planner_sees_every_learner_update() -> None:
    """The planner's stacked weight copy must follow the learner's in-place optimiser steps,
    including fused Adam, which does not advance tensors' version counters."""
    import numpy as np

    from fowm_core import config
    from fowm_core.data.episode import Episode
    from fowm_core.learning.learner import Learner
    from fowm_core.learning.replay import offline_buffer

    cfg = config.cpu(task="reach", modality="state", state_dim=3).with_overrides({
        "model": {"latent_dim": 8, "mlp_dim": 16, "enc_dim": 16},
        "planner": {"iterations": 1, "num_samples": 8, "num_elites": 2},
        "learner": {"batch_size": 8}})
    model = WorldModel(cfg.model)
    planner = Planner(model, cfg, torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)
    episodes = [Episode({"state": rng.normal(size=(6, 3)).astype(np.float32)},
                        rng.uniform(-1, 1, (5, 3)), rng.normal(size=5)) for _ in range(4)]
    buffer = offline_buffer(episodes, cfg)
    planner.plan({"state": np.zeros(3, np.float32)}, t0=True, eval_mode=True)
    learner = Learner(model, cfg, torch.Generator().manual_seed(1))
    learner.update(buffer.sample(8, rng))
    assert isinstance(planner.scorer, FusedScorer)
    assert planner.scorer.fused.refresh(), "the planner kept stale weights after a learner update"
    torch.testing.assert_close(planner.scorer.fused.w2[2:], model._qs.w2.detach())
