"""One FOWM update: model losses, the AWR policy step and the target EMA (docs/algorithm.md §3).

Symbols (module-local): z latent, a dataset action, r reward, m mask (1 - terminal), d done,
w loss mask, ρ temporal decay, γ discount, τ expectile / EMA rate, β AWR scaling, H horizon,
B batch, K Q heads, y TD target, q̄ the V target (min of 2 distinct target-Q heads).

Optimisers, matching the reference's parameter groups: the model Adam holds *all* model parameters
(π included, as in the reference's ``Adam(model.parameters())``; π never gets a gradient from the
model loss, so Adam skips it), and the π Adam holds π's parameters only. Both use lr and clip 10.

One update routine (``Learner.update``); how its numbers are computed is an ``UpdateVariant``,
chosen once at construction. ``FAST`` (``fast=True``, the default; docs/algorithm.md §9) changes
only how the same numbers are computed:
- the random shift is an integer crop of the uint8 images (augment.py), in channels_last layout,
  which the oneDNN convolutions run faster than NCHW (docs/platform.md §15);
- the H·B next observations are scaled to float once and fed to both the online and the target
  encoder (the consistency and TD targets encode the same augmented images);
- the reward head runs once on all H rolled-out latents instead of once per step;
- the min-2 target Q evaluates only the 2 drawn heads (the same draws, in the same order);
- Adam runs fused (one kernel over all tensors) instead of the per-tensor loop.
``REFERENCE`` (``fast=False``) keeps the straightforward formulation (bilinear shift, per-step
reward, all K target heads, per-tensor Adam): the oracle tests/core/test_learner_fast.py and
``benchmarks/update_profile.py`` compare to.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.profiler import record_function

from fowm_core.config import FowmConfig
from fowm_core.errors import FowmError
from fowm_core.learning.augment import augment_obs, shift_pad
from fowm_core.learning.replay import Batch
from fowm_core.model import WorldModel
from fowm_core.model.math import expectile_loss, gaussian_log_likelihood
from fowm_core.model.world_model import random_head_pair

PRIORITY_MAX = 1e4


@dataclass
class Losses:
    """Per-row losses (B,) of one forward pass, plus what the update needs next."""

    consistency: torch.Tensor
    reward: torch.Tensor
    q: torch.Tensor
    v: torch.Tensor
    total: torch.Tensor          # 20·cons + 0.5·rew + 0.1·Q + 0.1·V per row
    weighted: torch.Tensor       # scalar: mean_B(total · IS weight)
    priority: torch.Tensor       # (B,) Σ_t ρ^t w_t Σ_k |Q_k − y_t|, no grad
    latents: torch.Tensor        # (H, B, L) rolled-out z_0..z_{H-1}, detached
    q_mean: torch.Tensor
    v_mean: torch.Tensor
    v_target_mean: torch.Tensor


def loss_mask(done: torch.Tensor) -> torch.Tensor:
    """w_0 = 1, w_t = w_{t-1}·(1 − d_{t-1}): zero every step after an episode boundary (§3.1)."""
    keep = torch.cumprod(1.0 - done[:-1], dim=0)
    return torch.cat([torch.ones_like(done[:1]), keep], dim=0)


def keep_freed_heap() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the OS.

    An update allocates and frees ~1 GB of activation tensors (84x84 rgb preset). glibc serves
    blocks over 32 MB with fresh mmap pages and unmaps them on free, so every update page-faults
    that memory in again (docs/platform.md §15). Raising the mmap and trim thresholds keeps
    those pages in the heap. Process-wide and idempotent; the
    price is that the process keeps its peak footprint. Returns False without glibc (no change).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3            # <malloc.h>
    return bool(mallopt(m_mmap_threshold, 1 << 30) and mallopt(m_trim_threshold, 2**31 - 1))


# -- the two ways to compute an update -------------------------------------------------------------
# A forward returns what the losses need: z_all (H+1, B, L) the rolled-out latents (with gradient),
# z_hat (H, B, L) the target encoder's next latents, y (H, B) the TD targets, r_hat (H, B) rewards.
Forward = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _forward_fast(learner: Learner, batch: Batch) -> Forward:
    """Both targets encode the same augmented next observations: scale them once; the reward
    head runs once on all H rolled-out latents."""
    H, B, a, model = batch.horizon, batch.batch_size, batch.action, learner.model
    with torch.no_grad(), record_function("fowm.targets"):
        scaled = WorldModel.scale_obs({k: v.flatten(0, 1) for k, v in batch.next_obs.items()})
        next_z = model.encode(scaled, scaled=True).view(H, B, -1)
        z_hat = learner.target.encode(scaled, scaled=True).view(H, B, -1)
        y = learner.td_target(next_z, batch.reward, batch.mask)          # (H, B)
    z = model.encode(batch.obs)
    zs = [z]
    for t in range(H):
        z = model.next(z, a[t])
        zs.append(z)
    z_all = torch.stack(zs)                                               # (H+1, B, L)
    return z_all, z_hat, y, model.reward(z_all[:-1], a).squeeze(-1)      # (H, B), one pass


def _forward_reference(learner: Learner, batch: Batch) -> Forward:
    """The straightforward formulation: separate encodes, the reward head step by step."""
    H, B, a, model = batch.horizon, batch.batch_size, batch.action, learner.model
    with torch.no_grad():
        flat = {k: v.flatten(0, 1) for k, v in batch.next_obs.items()}
        next_z = model.encode(flat).view(H, B, -1)
        z_hat = learner.target.encode(flat).view(H, B, -1)
        y = learner.td_target(next_z, batch.reward, batch.mask)
    z = model.encode(batch.obs)
    zs, r_hat = [z], []
    for t in range(H):
        r_hat.append(model.reward(z, a[t]))
        z = model.next(z, a[t])
        zs.append(z)
    return torch.stack(zs), z_hat, y, torch.cat(r_hat, -1).T


def _min2_fast(target: WorldModel, z: torch.Tensor, a: torch.Tensor,
               generator: torch.Generator | None) -> torch.Tensor:
    """Only the 2 drawn heads are evaluated (the same draw as ``q_min2``)."""
    heads = random_head_pair(target.cfg.num_q, generator)
    q = target._qs.forward_heads(torch.cat([z, a], dim=-1), heads)
    return torch.minimum(q[0], q[1]).squeeze(-1)


def _min2_reference(target: WorldModel, z: torch.Tensor, a: torch.Tensor,
                    generator: torch.Generator | None) -> torch.Tensor:
    return target.q_min2(z, a, generator=generator).squeeze(-1)


@dataclass(frozen=True)
class UpdateVariant:
    """How ``Learner.update`` computes its numbers; both variants compute the same ones."""

    name: str
    forward: Callable[[Learner, Batch], Forward]
    min2_target: Callable[[WorldModel, torch.Tensor, torch.Tensor, torch.Generator | None],
                          torch.Tensor]
    bilinear_shift: bool          # the reference's grid_sample shift, or the integer crop
    adam: Mapping[str, bool]      # fused Adam is the same rule in one kernel; CPU's default loops
    keep_freed_heap: bool         # see keep_freed_heap (CPU only)


FAST = UpdateVariant("fast", _forward_fast, _min2_fast, bilinear_shift=False,
                     adam={"fused": True}, keep_freed_heap=True)
REFERENCE = UpdateVariant("reference", _forward_reference, _min2_reference, bilinear_shift=True,
                          adam={"foreach": False}, keep_freed_heap=False)


class Learner:
    """Owns the target network, both optimisers and the update counter.

    ``generator`` (a CPU torch.Generator, also for a CUDA model) drives the random shifts and the
    random Q-head pairs, so a seeded learner is reproducible; None uses torch's global RNG.
    ``fast`` picks the ``UpdateVariant``: ``FAST`` or ``REFERENCE``.
    """

    def __init__(self, model: WorldModel, cfg: FowmConfig,
                 generator: torch.Generator | None = None, *, fast: bool = True) -> None:
        self.model, self.cfg, self.generator = model, cfg, generator
        self.variant = FAST if fast else REFERENCE
        if self.variant.keep_freed_heap and next(model.parameters()).device.type == "cpu":
            keep_freed_heap()
        self.target = model.target_copy()
        lc = cfg.learner
        self.optim = torch.optim.Adam(model.parameters(), lr=lc.lr, **self.variant.adam)
        self.pi_optim = torch.optim.Adam(model.pi_parameters(), lr=lc.lr, **self.variant.adam)
        self.step = 0
        device = next(model.parameters()).device
        self._rho = lc.rho ** torch.arange(cfg.horizon, device=device, dtype=torch.float32)
        self._pad = shift_pad(cfg.model.img_size) if cfg.model.uses_rgb else 0

    @property
    def device(self) -> torch.device:
        return self._rho.device

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Both Adams by the names checkpoints store them under."""
        return {"model": self.optim, "pi": self.pi_optim}

    # -- targets (no gradient) ------------------------------------------------------------------
    @torch.no_grad()
    def td_target(self, next_z: torch.Tensor, reward: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
        """y = r + γ·m·V_θ(h_θ(o')): online V of the next observation, no π
        (docs/algorithm.md §3.2)."""
        return reward + self.cfg.discount * mask * self.model.v(next_z).squeeze(-1)

    @torch.no_grad()
    def value_target(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """q̄ = min of 2 distinct random *target* Q heads at (sg(z), a), one pair per call (§3.2)."""
        return self.variant.min2_target(self.target, z, a, self.generator)

    @torch.no_grad()
    def awr_weights(self, z: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ω = min(exp(β·A), 100) with A = Q_min2^φ(z, a) − V_θ(z) (docs/algorithm.md §3.4).
        Returns (ω, A)."""
        adv = self.value_target(z, a) - self.model.v(z).squeeze(-1)
        lc = self.cfg.learner
        return torch.exp(lc.a_scaling * adv).clamp(max=lc.max_awr_weight), adv

    # -- the forward pass -------------------------------------------------------------------------
    def prepare(self, batch: Batch) -> Batch:
        """Move to the model's device and random-shift rgb in obs and every next obs (§3.1)."""
        if batch.horizon != self.cfg.horizon:
            msg = (f"batch horizon {batch.horizon} != config horizon {self.cfg.horizon}; "
                   "build the replay buffer with cfg.horizon")
            raise FowmError(msg)
        batch = batch.to(self.device)
        bilinear = self.variant.bilinear_shift
        batch.obs = augment_obs(batch.obs, self._pad, self.generator, bilinear=bilinear)
        batch.next_obs = augment_obs(batch.next_obs, self._pad, self.generator, bilinear=bilinear)
        return batch

    def losses(self, batch: Batch) -> Losses:
        """Spec §3.2-3.3 on a prepared batch; gradients flow into the encoder and the rollout."""
        return self._assemble(batch, *self.variant.forward(self, batch))

    def _assemble(self, batch: Batch, z_all: torch.Tensor, z_hat: torch.Tensor, y: torch.Tensor,
                  r_hat: torch.Tensor) -> Losses:
        """Targets on the rollout, the four masked ρ-weighted losses and the priorities (§3.3)."""
        H, a, lc = batch.horizon, batch.action, self.cfg.learner
        z_roll = z_all[:-1]
        v_target = self.value_target(z_roll.detach(), a)                  # (H, B)
        qs = self.model.q(z_roll, a).squeeze(-1)                          # (K, H, B)
        v = self.model.v(z_roll).squeeze(-1)                              # (H, B)
        w = self._rho.view(H, 1) * loss_mask(batch.done)                  # (H, B)
        cons = (w * (z_all[1:] - z_hat).square().mean(-1)).sum(0)
        rew = (w * (r_hat - batch.reward).square()).sum(0)
        q_loss = (w * (qs - y).square().sum(0)).sum(0)
        v_loss = (w * expectile_loss(v_target - v, lc.expectile)).sum(0)
        total = (lc.consistency_coef * cons + lc.reward_coef * rew
                 + lc.value_coef * q_loss + lc.value_coef * v_loss)
        with torch.no_grad():
            priority = (w * (qs - y).abs().sum(0)).sum(0)
        return Losses(
            consistency=cons, reward=rew, q=q_loss, v=v_loss, total=total,
            weighted=(total * batch.weights).mean(), priority=priority,
            latents=z_roll.detach(), q_mean=qs.detach().mean(), v_mean=v.detach().mean(),
            v_target_mean=v_target.mean(),
        )

    def pi_loss(self, z: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """L_π = −(1/H)·Σ_t ρ^t·mean_B[ω_t·log N(a_t; tanh π(z_t), I)], no loss mask (§3.4)."""
        weights, adv = self.awr_weights(z, a)                            # (H, B), Q/V frozen
        log_prob = gaussian_log_likelihood(a, self.model.pi_mean(z))      # (H, B)
        loss = -(self._rho * (weights * log_prob).mean(1)).mean()
        return loss, {"advantage": adv.mean(), "awr_weight": weights.mean()}

    # -- one update ------------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, float]:
        """One model step, priority write-back, one π step, and the EMA every update_freq steps."""
        lc = self.cfg.learner
        # record_function scopes name the phases in a torch.profiler trace (benchmarks/); they
        # are nearly free when no profiler runs.
        with record_function("fowm.prepare"):
            batch = self.prepare(batch)
        with record_function("fowm.forward"):
            terms = self.losses(batch)
        with record_function("fowm.backward"):
            self.optim.zero_grad(set_to_none=True)
            # The reference scales the gradient by 1/H with a loss hook; dividing is the same.
            (terms.weighted / batch.horizon).backward()
        with record_function("fowm.model_step"):
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), lc.grad_clip_norm)
            self.optim.step()
            if self.cfg.replay.per:
                batch.write_priorities(terms.priority.clamp(max=PRIORITY_MAX))
        with record_function("fowm.pi_step"):
            # As in the reference, π is fitted after the model step: A uses the updated V.
            pi_loss, pi_info = self.pi_loss(terms.latents, batch.action)
            self.pi_optim.zero_grad(set_to_none=True)
            pi_loss.backward()
            pi_grad_norm = torch.nn.utils.clip_grad_norm_(self.model.pi_parameters(),
                                                          lc.grad_clip_norm)
            self.pi_optim.step()
        self.model.weights_version += 1      # tells weight caches (the planner's) to rebuild
        with record_function("fowm.ema"):
            if self.step % lc.update_freq == 0:
                self.ema()
        self.step += 1
        named = {
            "consistency_loss": terms.consistency.mean(), "reward_loss": terms.reward.mean(),
            "q_loss": terms.q.mean(), "v_loss": terms.v.mean(), "total_loss": terms.total.mean(),
            "weighted_loss": terms.weighted, "grad_norm": grad_norm, "pi_loss": pi_loss,
            "pi_grad_norm": pi_grad_norm, "q": terms.q_mean, "v": terms.v_mean,
            "v_target": terms.v_target_mean, "priority": terms.priority.mean(), **pi_info,
        }
        values = torch.stack([x.detach().float().reshape(()) for x in named.values()]).tolist()
        return {**dict(zip(named, values, strict=True)), "step": float(self.step)}

    @torch.no_grad()
    def ema(self) -> None:
        """φ ← (1 − τ)φ + τθ on the target's encoder and Q ensemble only
        (docs/algorithm.md §2.6)."""
        torch._foreach_lerp_(self.target.ema_parameters(), self.model.ema_parameters(),
                             self.cfg.learner.tau)
