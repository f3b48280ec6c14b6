"""The world model's shape, initialisation and helpers follow docs/algorithm.md §2."""

from __future__ import annotations

import torch

from fowm_core import config
from fowm_core.model import WorldModel
from fowm_core.model.world_model import random_head_pair


def _obs(n: int = 3) -> dict[str, torch.Tensor]:
    return {"state": torch.randn(n, 4),
            "rgb": torch.randint(0, 256, (n, 3, 84, 84), dtype=torch.uint8)}


def test_parameter_count_matches_the_reference_xarm_model() -> None:
    model = WorldModel(config.paper().model)
    assert sum(p.numel() for p in model.parameters()) == 2_734_573   # docs/algorithm.md §2.7
    assert sum(p.numel() for p in model._qs.parameters()) == 5 * 292_353


def test_latents_are_bounded_and_modalities_are_averaged() -> None:
    torch.manual_seed(0)
    model = WorldModel(config.paper().model)
    obs = _obs()
    z = model.encode(obs)
    assert z.shape == (3, 50) and bool(((z > 0) & (z < 1)).all())
    z_state = model._encoder["state"](obs["state"])
    z_rgb = model._encoder["rgb"](obs["rgb"].float() / 255)
    torch.testing.assert_close(z, (z_state + z_rgb) / 2)
    a = torch.rand(3, 4) * 2 - 1
    z_next = model.next(z, a)
    assert bool(((z_next > 0) & (z_next < 1)).all())


def test_reward_and_q_heads_start_at_zero_but_v_does_not() -> None:
    model = WorldModel(config.paper().model)
    z = model.encode(_obs())
    a = torch.zeros(3, 4)
    assert torch.count_nonzero(model.reward(z, a)) == 0
    assert torch.count_nonzero(model.q(z, a)) == 0
    assert model.q(z, a).shape == (5, 3, 1)
    assert torch.count_nonzero(model.v(z)) > 0


def test_q_ensemble_heads_equal_independent_mlps() -> None:
    """The stacked ensemble computes exactly K separate Linear-LN-Tanh-Linear-ELU-Linear heads."""
    torch.manual_seed(1)
    cfg = config.cpu().model
    model = WorldModel(cfg)
    qs = model._qs
    with torch.no_grad():
        for p in qs.parameters():
            p.normal_()
    x = torch.randn(7, cfg.latent_dim + cfg.action_dim)
    out = qs(x)
    m = cfg.mlp_dim
    for k in range(cfg.num_q):
        h = x @ qs.w1[:, k * m:(k + 1) * m] + qs.b1[k * m:(k + 1) * m]
        h = torch.nn.functional.layer_norm(h, (m,), qs.ln_weight[k], qs.ln_bias[k]).tanh()
        h = torch.nn.functional.elu(h @ qs.w2[k] + qs.b2[k])
        torch.testing.assert_close(out[k], h @ qs.w3[k] + qs.b3[k], rtol=1e-4, atol=1e-4)


def test_min2_heads_are_always_distinct() -> None:
    gen = torch.Generator().manual_seed(0)
    pairs = [tuple(random_head_pair(5, gen).tolist()) for _ in range(2000)]
    assert all(i != j for i, j in pairs)
    assert len({frozenset(p) for p in pairs}) == 10          # every unordered pair occurs


def test_policy_noise_is_truncated_and_clamped() -> None:
    torch.manual_seed(0)
    model = WorldModel(config.cpu().model)
    z = torch.rand(4096, model.cfg.latent_dim)
    with torch.no_grad():
        mean = model.pi(z, std=0.0)
        noisy = model.pi(z, std=5.0)
    assert float((noisy - mean).abs().max()) <= 0.3 + 1e-6
    assert float(noisy.abs().max()) <= 1 - 1e-6 + 1e-7


def test_ema_parameters_are_encoder_and_q_only() -> None:
    model = WorldModel(config.cpu().model)
    ema = {id(p) for p in model.ema_parameters()}
    expected = {id(p) for p in [*model._encoder.parameters(), *model._qs.parameters()]}
    assert ema == expected
    assert not ema & {id(p) for p in model._dynamics.parameters()}


def test_min2_equals_the_min_of_the_chosen_heads_of_the_full_ensemble() -> None:
    torch.manual_seed(2)
    model = WorldModel(config.cpu().model)
    with torch.no_grad():
        for p in model._qs.parameters():
            p.normal_(std=0.3)
        z, a = torch.rand(6, model.cfg.latent_dim), torch.rand(6, model.cfg.action_dim)
        heads = random_head_pair(5, torch.Generator().manual_seed(7))
        full = model.q(z, a)
        got = model.q_min2(z, a, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(got, torch.minimum(full[heads[0]], full[heads[1]]))
