"""The learner against the reference semantics (docs/algorithm.md §3), on tiny CPU models.

Each test targets a rule that other ports get wrong (docs/algorithm.md §11.4): 2 *distinct* random
heads, the in-sample TD target with the terminal mask, loss masking past episode ends, EMA of
encoder+Q only every 2nd update, the 1/H gradient scale before a clip at 10, a separate π
optimiser.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fowm_core.config import FowmConfig, LearnerConfig, ModelConfig, ReplayConfig
from fowm_core.data.episode import Episode
from fowm_core.learning.augment import random_shift, shift_pad
from fowm_core.learning.checkpoints import read_agent, restore_learner, save_learner
from fowm_core.learning.learner import Learner, loss_mask
from fowm_core.learning.replay import BalancedSampler, Batch, Source, offline_buffer, online_buffer
from fowm_core.model import WorldModel
from fowm_core.model.world_model import random_head_pair

H, B, S, A = 5, 16, 3, 2


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/core/conftest.py


def tiny_cfg(**learner: float) -> FowmConfig:
    return FowmConfig(
        horizon=H, discount=0.9,
        model=ModelConfig(modality="state", state_dim=S, action_dim=A, latent_dim=8, mlp_dim=32,
                          enc_dim=32, num_q=5),
        learner=LearnerConfig(batch_size=B, **learner),
        replay=ReplayConfig(online_capacity=200),
    )


def make_learner(cfg: FowmConfig | None = None, seed: int = 0) -> Learner:
    cfg = cfg or tiny_cfg()
    torch.manual_seed(seed)
    return Learner(WorldModel(cfg.model), cfg, torch.Generator().manual_seed(seed))


def make_batch(seed: int = 0, done_at: dict[int, int] | None = None) -> Batch:
    """A random batch; done_at maps row -> the step whose done flag is 1 (mask 0 there too)."""
    g = torch.Generator().manual_seed(seed)
    done = torch.zeros(H, B)
    mask = torch.ones(H, B)
    for row, t in (done_at or {}).items():
        done[t, row] = 1.0
        mask[t, row] = 0.0
    return Batch(
        obs={"state": torch.randn(B, S, generator=g)},
        next_obs={"state": torch.randn(H, B, S, generator=g)},
        action=torch.rand(H, B, A, generator=g) * 2 - 1,
        reward=torch.randn(H, B, generator=g),
        mask=mask, done=done,
        weights=torch.rand(B, generator=g) * 0.9 + 0.1,
        indices=torch.arange(B), source=torch.zeros(B, dtype=torch.int64),
    )


def set_head_outputs(model: WorldModel, values: list[float]) -> None:
    """Make Q head k output values[k] everywhere (its last layer weights are zero at init)."""
    with torch.no_grad():
        model._qs.w3.zero_()
        model._qs.b3.copy_(torch.tensor(values).view(-1, 1, 1))


def set_value_output(model: WorldModel, value: float) -> None:
    with torch.no_grad():
        model._v[-1].weight.zero_()
        model._v[-1].bias.fill_(value)


def reference_losses(learner: Learner, batch: Batch, pair: torch.Tensor) -> dict[str, torch.Tensor]:
    """Spec §3.2-3.3 written out step by step and head by head, independent of Learner.losses."""
    model, target, cfg = learner.model, learner.target, learner.cfg
    lc = cfg.learner
    out = {k: torch.zeros(B) for k in ("consistency", "reward", "q", "v", "priority")}
    z = model.encode(batch.obs)
    w = torch.ones(B)
    for t in range(H):
        if t > 0:
            w = w * (1 - batch.done[t - 1])
        a, r = batch.action[t], batch.reward[t]
        with torch.no_grad():
            o_next = {"state": batch.next_obs["state"][t]}
            y = r + cfg.discount * batch.mask[t] * model.v(model.encode(o_next))[:, 0]
            z_hat = target.encode(o_next)
            q_target = target.q(z.detach(), a)
            q_bar = torch.minimum(q_target[pair[0]], q_target[pair[1]])[:, 0]
        qs, v = model.q(z, a)[..., 0], model.v(z)[:, 0]
        r_hat = model.reward(z, a)[:, 0]
        z_next = model.next(z, a)
        c = lc.rho ** t * w
        out["consistency"] = out["consistency"] + c * (z_next - z_hat).pow(2).mean(-1)
        out["reward"] = out["reward"] + c * (r_hat - r).pow(2)
        for k in range(cfg.model.num_q):
            out["q"] = out["q"] + c * (qs[k] - y).pow(2)
            out["priority"] = out["priority"] + c * (qs[k] - y).abs().detach()
        u = q_bar - v
        out["v"] = out["v"] + c * torch.where(u > 0, lc.expectile, 1 - lc.expectile) * u.pow(2)
        z = z_next
    out["total"] = (20 * out["consistency"] + 0.5 * out["reward"] + 0.1 * out["q"]
                    + 0.1 * out["v"])
    return out


def trained_learner(steps: int = 3) -> Learner:
    """A learner after a few updates, so Q heads and V are no longer at their zero init."""
    learner = make_learner()
    for k in range(steps):
        learner.update(make_batch(100 + k))
    return learner


# -- losses and targets ---------------------------------------------------------------------------
def test_losses_match_a_step_by_step_reference() -> None:
    learner = trained_learner()
    batch = make_batch(1, done_at={0: 1, 3: 0, 5: 4})
    state = learner.generator.get_state()
    pair = random_head_pair(5, torch.Generator().manual_seed(0).set_state(state))
    expected = reference_losses(learner, batch, pair)
    learner.generator.set_state(state)
    got = learner.losses(learner.prepare(batch))
    for name in ("consistency", "reward", "q", "v", "priority", "total"):
        torch.testing.assert_close(getattr(got, name), expected[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.weighted, (expected["total"] * batch.weights).mean())


def test_td_target_uses_next_observation_value_and_terminal_mask_not_pi() -> None:
    learner = trained_learner()
    batch = make_batch(2, done_at={0: 2})
    next_z = learner.model.encode({"state": batch.next_obs["state"]})
    y = learner.td_target(next_z, batch.reward, batch.mask)
    v_next = learner.model.v(next_z)[..., 0].detach()
    torch.testing.assert_close(y, batch.reward + 0.9 * batch.mask * v_next)
    assert y[2, 0] == batch.reward[2, 0]          # a true terminal drops the bootstrap
    assert v_next.abs().min() > 0                 # ...which is non-trivial here

    def q_terms() -> tuple[torch.Tensor, torch.Tensor]:
        learner.generator.manual_seed(7)
        terms = learner.losses(learner.prepare(batch))
        return terms.q.detach(), terms.priority

    q_before, p_before = q_terms()
    with torch.no_grad():                         # an absurd policy: the Q target must not move
        for p in learner.model.pi_parameters():
            p.copy_(torch.randn_like(p) * 100)
    q_after, p_after = q_terms()
    torch.testing.assert_close(q_after, q_before)
    torch.testing.assert_close(p_after, p_before)


def test_value_target_takes_the_min_of_two_distinct_heads() -> None:
    learner = make_learner()
    set_head_outputs(learner.target, [0.0, 1.0, 2.0, 3.0, 4.0])
    z, a = torch.rand(H, B, 8), torch.rand(H, B, A)
    seen = []
    for _ in range(400):
        q_bar = learner.value_target(z, a)
        assert (q_bar == q_bar.flatten()[0]).all()    # one pair for the whole (H, B) batch
        seen.append(float(q_bar.flatten()[0]))
    counts = np.bincount(np.array(seen, dtype=int), minlength=5)
    # Distinct pairs: min = 4 is impossible (with replacement it would appear 1 time in 25).
    assert counts[4] == 0
    np.testing.assert_allclose(counts[:4] / 400, [0.4, 0.3, 0.2, 0.1], atol=0.07)
    for _ in range(200):
        pair = random_head_pair(5, learner.generator)
        assert pair[0] != pair[1]


@pytest.mark.parametrize(("q_value", "v_value", "weight"), [(1.0, 0.0, 0.9), (0.0, 1.0, 0.1)])
def test_expectile_weight_is_tau_when_the_target_is_above_v(q_value: float, v_value: float,
                                                           weight: float) -> None:
    learner = make_learner()
    set_head_outputs(learner.target, [q_value] * 5)
    set_value_output(learner.model, v_value)
    batch = make_batch(3, done_at={0: 1})
    terms = learner.losses(learner.prepare(batch))
    w = 0.5 ** torch.arange(H).view(H, 1) * loss_mask(batch.done)
    torch.testing.assert_close(terms.v, weight * (q_value - v_value) ** 2 * w.sum(0))


def test_awr_weights_clip_at_100_and_pi_loss_formula() -> None:
    learner = make_learner()
    set_value_output(learner.model, 0.0)
    z, a = torch.rand(H, B, 8), torch.rand(H, B, A) * 2 - 1
    set_head_outputs(learner.target, [10.0] * 5)
    weights, adv = learner.awr_weights(z, a)
    assert torch.all(adv == 10.0) and torch.all(weights == 100.0)
    set_head_outputs(learner.target, [0.1] * 5)
    weights, _ = learner.awr_weights(z, a)
    torch.testing.assert_close(weights, torch.full((H, B), float(np.exp(0.3))))
    loss, _ = learner.pi_loss(z, a)
    mu = learner.model.pi_mean(z)
    log_p = -0.5 * (a - mu).pow(2).sum(-1) - 0.5 * A * np.log(2 * np.pi)
    rho = 0.5 ** torch.arange(H, dtype=torch.float32)
    expected = -(rho * (np.exp(0.3) * log_p).mean(1)).sum() / H
    torch.testing.assert_close(loss, expected)


def test_losses_and_priorities_ignore_everything_past_an_episode_boundary() -> None:
    learner = trained_learner()
    batch = make_batch(4, done_at={0: 1, 7: 0})
    perturbed = make_batch(4, done_at={0: 1, 7: 0})
    g = torch.Generator().manual_seed(9)
    for row, first_masked in ((0, 2), (7, 1)):
        tail = slice(first_masked, H)
        perturbed.next_obs["state"][tail, row] += 5 * torch.randn(H - first_masked, S, generator=g)
        perturbed.reward[tail, row] += 10.0
        perturbed.action[tail, row] = -perturbed.action[tail, row]
        perturbed.mask[tail, row] = 0.0
    results = []
    for b in (batch, perturbed):
        learner.generator.manual_seed(3)
        results.append(learner.losses(learner.prepare(b)))
    for name in ("consistency", "reward", "q", "v", "total", "priority"):
        torch.testing.assert_close(getattr(results[1], name), getattr(results[0], name))
    assert results[0].reward[0] > 0 and results[0].q[7] > 0


# -- the update step -------------------------------------------------------------------------------
def test_optimisers_match_the_reference_parameter_groups() -> None:
    learner = make_learner()
    model_params = {id(p) for g in learner.optim.param_groups for p in g["params"]}
    pi_params = {id(p) for g in learner.pi_optim.param_groups for p in g["params"]}
    assert model_params == {id(p) for p in learner.model.parameters()}
    assert pi_params == {id(p) for p in learner.model.pi_parameters()}
    assert learner.optim.param_groups[0]["lr"] == learner.pi_optim.param_groups[0]["lr"] == 3e-4


def test_gradient_is_scaled_by_one_over_h_before_the_clip() -> None:
    learner = make_learner(tiny_cfg(grad_clip_norm=1e9), seed=1)
    learner.update(make_batch(10))
    batch = make_batch(11, done_at={2: 3})
    state = learner.generator.get_state()
    params = [p for p in learner.model.parameters()
              if all(p is not q for q in learner.model.pi_parameters())]
    grads = torch.autograd.grad(learner.losses(learner.prepare(batch)).weighted, params,
                                allow_unused=True)
    raw_norm = torch.linalg.vector_norm(torch.stack(
        [torch.linalg.vector_norm(g) for g in grads if g is not None]))
    learner.generator.set_state(state)
    metrics = learner.update(batch)
    assert metrics["grad_norm"] == pytest.approx(float(raw_norm) / H, rel=1e-5)


def test_model_and_pi_gradients_are_clipped_separately() -> None:
    clip = 1e-3
    learner = make_learner(tiny_cfg(grad_clip_norm=clip), seed=2)
    metrics = learner.update(make_batch(12))
    assert metrics["grad_norm"] > 10 * clip and metrics["pi_grad_norm"] > 10 * clip
    pi_ids = {id(p) for p in learner.model.pi_parameters()}
    model_grads = [p.grad for p in learner.model.parameters()
                   if id(p) not in pi_ids and p.grad is not None]
    pi_grads = [p.grad for p in learner.model.pi_parameters()]

    def norm(gs: list[torch.Tensor]) -> float:
        return float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in gs])))

    # The clip acts on the already 1/H-scaled gradient: the stored norm is the clip, not clip/H.
    assert norm(model_grads) == pytest.approx(clip, rel=1e-3)
    assert norm(pi_grads) == pytest.approx(clip, rel=1e-3)


def test_ema_moves_only_encoder_and_q_by_tau_every_second_update() -> None:
    learner = make_learner()
    tau = learner.cfg.learner.tau
    ema_ids = {id(p) for p in learner.target.ema_parameters()}
    initial = {n: p.detach().clone() for n, p in learner.target.named_parameters()}
    for step in range(4):
        before = {n: p.detach().clone() for n, p in learner.target.named_parameters()}
        learner.update(make_batch(20 + step))
        online = dict(learner.model.named_parameters())
        for name, p in learner.target.named_parameters():
            if id(p) not in ema_ids:          # dynamics, reward, π, V: never touched
                torch.testing.assert_close(p, initial[name], rtol=0, atol=0)
            elif step % 2 == 0:               # updates 0, 2, ... as the reference's step % 2 == 0
                expected = before[name] + tau * (online[name].detach() - before[name])
                torch.testing.assert_close(p, expected, rtol=1e-6, atol=1e-7)
            else:
                torch.testing.assert_close(p, before[name], rtol=0, atol=0)
    moved = [n for n, p in learner.target.named_parameters() if not torch.equal(p, initial[n])]
    assert any(n.startswith("_encoder") for n in moved) and any(n.startswith("_qs") for n in moved)


def test_priorities_are_written_back_clamped_to_the_right_buffer() -> None:
    cfg = tiny_cfg()
    rng = np.random.default_rng(0)

    def episodes(n: int, scale: float) -> list[Episode]:
        return [Episode(obs={"state": rng.normal(size=(11, S))}, action=rng.uniform(-1, 1, (10, A)),
                        reward=rng.normal(size=10) * scale) for _ in range(n)]

    offline = offline_buffer(episodes(30, 1e6), cfg)    # huge rewards: priorities hit the clamp
    online = online_buffer(cfg)
    online.add_episodes(episodes(3, 1.0))
    sampler = BalancedSampler(offline, online)
    learner = make_learner(cfg)
    batch = sampler.sample(B, rng)
    before_on = online.priorities
    learner.generator.manual_seed(5)
    expected = learner.losses(learner.prepare(batch)).priority.clamp(max=1e4).numpy()
    learner.generator.manual_seed(5)
    learner.update(batch)
    rows_off = batch.source.numpy() == Source.OFFLINE
    idx = batch.indices.numpy()
    np.testing.assert_allclose(offline.priorities[idx[rows_off]], 1e4 + 1e-6)
    expect_on = before_on.copy()
    for row in np.flatnonzero(~rows_off):
        expect_on[idx[row]] = expected[row] + 1e-6
    np.testing.assert_allclose(online.priorities, expect_on, rtol=1e-5)


def test_a_saved_learner_continues_bit_identically(tmp_path) -> None:
    """The checkpoint path (save_learner → read_agent → restore_learner) is the only one: the
    restored learner's next update equals the original's. The generator is not checkpointed (a
    resumed run is reseeded), so it is handed over here."""
    learner = make_learner(seed=3)
    for k in range(3):
        learner.update(make_batch(30 + k))
    path = tmp_path / "learner.safetensors"
    save_learner(path, learner, {"loss": 1.0})
    restored = make_learner(seed=99)
    restore_learner(read_agent(path), restored)
    restored.generator.set_state(learner.generator.get_state())
    assert restored.step == learner.step == 3
    batch = make_batch(40)
    m1, m2 = learner.update(batch), restored.update(batch)
    assert m1 == m2
    for (n, p), q in zip(learner.model.state_dict().items(), restored.model.state_dict().values(),
                         strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)
    for p, q in zip(learner.target.parameters(), restored.target.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


# -- augmentation --------------------------------------------------------------------------------
def test_random_shift_is_an_integer_crop_of_the_replicate_padded_image() -> None:
    pad = shift_pad(84)
    assert pad == 4
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 84, 84), generator=g, dtype=torch.uint8)
    out = random_shift(images, pad, generator=g)
    padded = torch.nn.functional.pad(images.float(), (pad,) * 4, mode="replicate")
    shifts = set()
    for n in range(32):
        match = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                 if torch.allclose(out[n], padded[n, :, dy:dy + 84, dx:dx + 84], atol=1e-2)]
        assert len(match) == 1
        shifts.add(match[0])
    assert len(shifts) > 10          # each image draws its own shift


def test_update_with_rgb_shifts_images_and_learns_without_error() -> None:
    cfg = FowmConfig(horizon=H, model=ModelConfig(modality="all", state_dim=S, action_dim=A,
                                                  latent_dim=8, mlp_dim=32, enc_dim=32,
                                                  num_channels=8, img_size=42),
                     learner=LearnerConfig(batch_size=8))
    learner = Learner(WorldModel(cfg.model), cfg, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    batch = make_batch(50)
    batch = Batch(
        obs={"state": batch.obs["state"][:8],
             "rgb": torch.randint(0, 256, (8, 3, 42, 42), generator=g, dtype=torch.uint8)},
        next_obs={"state": batch.next_obs["state"][:, :8],
                  "rgb": torch.randint(0, 256, (H, 8, 3, 42, 42), generator=g, dtype=torch.uint8)},
        action=batch.action[:, :8], reward=batch.reward[:, :8], mask=batch.mask[:, :8],
        done=batch.done[:, :8], weights=batch.weights[:8], indices=torch.arange(8),
        source=torch.zeros(8, dtype=torch.int64),
    )
    prepared = learner.prepare(batch)
    assert not torch.equal(prepared.obs["rgb"], batch.obs["rgb"].float())
    assert torch.equal(prepared.obs["state"], batch.obs["state"])
    metrics = learner.update(batch)
    assert all(np.isfinite(v) for v in metrics.values())


# -- learning --------------------------------------------------------------------------------------
def synthetic_episodes(rng: np.random.Generator, count: int, steps: int = 10) -> list[Episode]:
    """A point that moves by 0.2·a in a box; reward = −‖s‖ of the state it leaves."""
    episodes = []
    for _ in range(count):
        s = np.empty((steps + 1, S), np.float32)
        s[0] = rng.uniform(-1, 1, S)
        a = rng.uniform(-1, 1, (steps, A)).astype(np.float32)
        for t in range(steps):
            s[t + 1] = np.clip(s[t] + 0.2 * np.append(a[t], 0.0), -1, 1)
        reward = -np.linalg.norm(s[:-1], axis=1)
        episodes.append(Episode(obs={"state": s}, action=a, reward=reward))
    return episodes


@pytest.mark.slow
def test_offline_training_reduces_the_losses() -> None:
    cfg = tiny_cfg(lr=1e-3)
    rng = np.random.default_rng(0)
    buffer = offline_buffer(synthetic_episodes(rng, 40), cfg)
    learner = make_learner(cfg)
    history = [learner.update(buffer.sample(B, rng)) for _ in range(400)]

    def mean(key: str, part: slice) -> float:
        return float(np.mean([m[key] for m in history[part]]))

    first, last = slice(0, 10), slice(-20, None)
    assert mean("reward_loss", last) < mean("reward_loss", first) / 5
    assert mean("consistency_loss", last) < mean("consistency_loss", first)
    assert mean("q_loss", last) < mean("q_loss", first)
