"""MPPI planning with FOWM's uncertainty penalty (docs/algorithm.md §4, §13.5), the reference code's semantics.

Symbols: z latent, a action, H horizon, N = num_samples Gaussian candidates, Nπ = ⌊mixture_coef·N⌋
policy candidates, K Q heads, λ = uncertainty_cost, γ = discount. The value of a candidate is

    Ĝ = Σ_t γ^t [R(z_t, a_t) − λ·u(z_t, a_t)] + γ^H [Q_min2(z_H, a_H) − λ·u(z_H, a_H)],
    u = std_k Q_k

with a_H = π(z_H; σ = min_std), all K *online* heads, unbiased std, the penalty taken before each
dynamics step (docs/algorithm.md §4, Eq. 4). ``reference_value`` is that formula written with the model's own
methods; the planner scores through ``FusedModel`` (same math, stacked layout) unless
``fast=False``.

Random draws follow the reference order, all from one generator: π rollout noise per step, then per
iteration the Gaussian samples, the terminal π noise and the head pair; then the elite pick and the
exploration noise.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from fowm_core.config import FowmConfig
from fowm_core.errors import ConfigError
from fowm_core.model.world_model import WorldModel, random_head_pair
from fowm_core.planner.fused import FusedModel

ObsIn = dict[str, "torch.Tensor | np.ndarray"]


@dataclass(frozen=True)
class PlanResult:
    """One decision. action (A,) float32 in [-1, 1]; mean/std (H, A) the final Gaussian; value the
    chosen elite's Ĝ; uncertainty the std over the K heads at (z_0, action) for the safety chain."""

    action: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    value: float
    uncertainty: float
    elapsed_s: float


@dataclass
class PiRollout:
    """The Nπ policy candidates of one decision (docs/algorithm.md §4 step 2): drawn once and reused in every
    iteration. Their states and per-step returns do not depend on the iteration, so the fast path
    computes them here once; only the terminal term (fresh π noise, fresh head pair) is redone."""

    actions: torch.Tensor           # (H, Nπ, A)
    partial: torch.Tensor | None    # (Nπ, 1) Σ_t γ^t [R − λ·u], fast path only
    z_last: torch.Tensor | None     # (Nπ, L) z_H, fast path only


def head_std(q: torch.Tensor) -> torch.Tensor:
    """u(z, a): std over the K heads, unbiased (torch's default, as in the reference).
    (K, N, 1) → (N, 1)."""
    return q.std(dim=0)


def reference_value(model: WorldModel, z: torch.Tensor, actions: torch.Tensor, cfg: FowmConfig,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Ĝ for candidates (N, 1) from z (N, L) and actions (H, N, A), written with the model's methods
    exactly as the reference's ``estimate_value`` (docs/algorithm.md §4): the fast path is tested against it."""
    lam, gamma = cfg.planner.uncertainty_cost, cfg.discount
    value, discount = torch.zeros(z.shape[0], 1), 1.0
    for a in actions:
        if lam > 0:
            value = value - discount * lam * head_std(model.q(z, a))
        z, r = model.next(z, a), model.reward(z, a)
        value = value + discount * r
        discount *= gamma
    a_last = model.pi(z, cfg.planner.min_std, generator=generator)
    q = model.q(z, a_last)
    heads = random_head_pair(cfg.model.num_q, generator)
    value = value + discount * torch.minimum(q[heads[0]], q[heads[1]])
    if lam > 0:
        value = value - discount * lam * head_std(q)
    return value


class Planner:
    """``plan(obs, t0=, eval_mode=)`` → PlanResult; ``reset()`` between episodes.

    fast: score through FusedModel (default) or through the model's own methods.
    compile_elementwise: torch.compile the fused LayerNorm/activation blocks (eager fallback).
    """

    def __init__(self, model: WorldModel, cfg: FowmConfig, generator: torch.Generator | None = None,
                 *, fast: bool = True, compile_elementwise: bool = False,
                 native_kernels: bool = True) -> None:
        if model.cfg != cfg.model:
            msg = (f"planner config model section {cfg.model} differs from the model's "
                   f"{model.cfg}; build the WorldModel from the same FowmConfig")
            raise ConfigError(msg)
        self.model, self.cfg, self.generator = model, cfg, generator
        self.fast = fast
        self.fused = (FusedModel(model, compile_elementwise, native_kernels=native_kernels,
                                 per_block=not cfg.planner.stacked_blocks)
                      if fast else None)
        self._prev_mean: torch.Tensor | None = None
        self.compile_s, self.compile_error = 0.0, ""
        # The last iteration's elites (H, E, A) and scores (E, 1), kept for inspection and tests.
        self.last_elites: torch.Tensor | None = None
        self.last_score: torch.Tensor | None = None
        if self.fused is not None and self.fused.compiled:
            self._warm_up()

    def _warm_up(self) -> None:
        """Compile every kernel shape with one throwaway decision (timed as compile_s); if the
        compiler is unusable, fall back to eager and say why (the result is the same math)."""
        assert self.fused is not None
        start, generator = time.perf_counter(), self.generator
        self.generator = torch.Generator().manual_seed(0)
        try:
            self.plan_latent(torch.zeros(1, self.cfg.model.latent_dim), t0=True, eval_mode=True)
        except (RuntimeError, OSError) as err:   # dynamo/inductor errors derive from RuntimeError
            self.compile_error = f"{type(err).__name__}: {err}"[:500]
            warnings.warn(f"torch.compile failed, planning in eager mode: {self.compile_error}",
                          RuntimeWarning, stacklevel=3)
            self.fused.use_eager()
        finally:
            self.generator = generator
            self.reset()
            self.last_elites = self.last_score = None
        self.compile_s = time.perf_counter() - start

    def reset(self) -> None:
        """Forget the warm start (call at every episode start)."""
        self._prev_mean = None

    def initial_mean(self, t0: bool) -> torch.Tensor:
        """μ before the first iteration (H, A): zeros, or with a warm start (not t0) the previous
        decision's smoothed mean shifted one step earlier, its last slot 0 (docs/algorithm.md §4 step 3)."""
        mean = torch.zeros(self.cfg.horizon, self.cfg.model.action_dim)
        if not t0 and self._prev_mean is not None:
            mean[:-1] = self._prev_mean[1:]
        return mean

    @torch.inference_mode()
    def plan(self, obs: ObsIn, *, t0: bool, eval_mode: bool) -> PlanResult:
        start = time.perf_counter()
        z = self.model.encode(self._batch_obs(obs))
        if not self.cfg.planner.mpc:
            return self._policy_action(z, eval_mode, start)
        return self.plan_latent(z, t0=t0, eval_mode=eval_mode, start=start)

    # -- MPPI (docs/algorithm.md §4 steps 2-5) -------------------------------------------------------------
    @torch.inference_mode()
    def plan_latent(self, z: torch.Tensor, *, t0: bool, eval_mode: bool,
                    start: float | None = None) -> PlanResult:
        start = time.perf_counter() if start is None else start
        p, H, A = self.cfg.planner, self.cfg.horizon, self.cfg.model.action_dim
        if self.fused is not None:
            self.fused.refresh()
        rollout = self.pi_rollout(z)
        mean, std = self.initial_mean(t0), torch.full((H, A), p.max_std)
        z_part = self._z_part(z)
        for _ in range(p.iterations):
            noise = torch.randn(H, p.num_samples, A, generator=self.generator)
            gauss = (mean.unsqueeze(1) + std.unsqueeze(1) * noise).clamp_(-1.0, 1.0)
            value = self.iteration_values(z, gauss, rollout, z_part).nan_to_num_(0.0)
            actions = torch.cat([gauss, rollout.actions], dim=1)
            elite_value, elites, score = self._elites(value, actions)
            new_mean, new_std = weighted_moments(elites, score, p.min_std, p.max_std)
            mean = p.momentum * mean + (1.0 - p.momentum) * new_mean   # momentum on the mean only
            std = new_std
        return self._output(z, mean, std, elite_value, elites, score, eval_mode, start)

    def pi_rollout(self, z: torch.Tensor) -> PiRollout:
        """Nπ rollouts of π(·; min_std) from z (1, L), drawn once per decision (docs/algorithm.md §4 step 2)."""
        p, H, A = self.cfg.planner, self.cfg.horizon, self.cfg.model.action_dim
        n_pi = p.num_pi_trajs
        actions = torch.empty(H, n_pi, A)
        zt = z.expand(n_pi, z.shape[-1])
        partial = torch.zeros(n_pi, 1) if self.fused is not None else None
        lam, discount = p.uncertainty_cost, 1.0
        for t in range(H if n_pi > 0 else 0):
            if self.fused is None:
                actions[t] = self.model.pi(zt, p.min_std, generator=self.generator)
                zt = self.model.next(zt, actions[t])
                continue
            actions[t] = self.fused.pi(zt, p.min_std, generator=self.generator)
            out = self.fused.step(zt, actions[t], with_q=lam > 0)
            partial += discount * out.r
            if out.q is not None:
                partial -= discount * lam * head_std(out.q)
            zt, discount = out.z, discount * self.cfg.discount
        return PiRollout(actions, partial, zt if self.fused is not None else None)

    def iteration_values(self, z: torch.Tensor, gauss: torch.Tensor, rollout: PiRollout,
                         z_part: torch.Tensor | None = None) -> torch.Tensor:
        """Ĝ of the N Gaussian candidates followed by the Nπ policy candidates: (N + Nπ, 1)."""
        if self.fused is None:
            actions = torch.cat([gauss, rollout.actions], dim=1)
            zs = z.expand(actions.shape[1], z.shape[-1])
            return reference_value(self.model, zs, actions, self.cfg, self.generator)
        assert rollout.partial is not None and rollout.z_last is not None
        lam, gamma = self.cfg.planner.uncertainty_cost, self.cfg.discount
        value, zt, discount = torch.zeros(gauss.shape[1], 1), z, 1.0
        for t, a in enumerate(gauss):
            out = self.fused.step(zt, a, with_q=lam > 0, z_part=z_part if t == 0 else None)
            value += discount * out.r
            if out.q is not None:
                value -= discount * lam * head_std(out.q)
            zt, discount = out.z, discount * gamma
        value = torch.cat([value, rollout.partial])
        return value + discount * self._terminal(torch.cat([zt, rollout.z_last]))

    def _terminal(self, z: torch.Tensor) -> torch.Tensor:
        """Q_min2(z_H, a_H) − λ·u(z_H, a_H) with a_H = π(z_H; min_std); with λ = 0 only the two
        drawn heads are evaluated (the reference's Q(..., 'min') does the same)."""
        assert self.fused is not None
        p = self.cfg.planner
        a = self.fused.pi(z, p.min_std, generator=self.generator)
        heads = random_head_pair(self.cfg.model.num_q, self.generator)
        if p.uncertainty_cost == 0:
            q = self.fused.q(z, a, heads)
            return torch.minimum(q[0], q[1])
        q = self.fused.q(z, a)
        return torch.minimum(q[heads[0]], q[heads[1]]) - p.uncertainty_cost * head_std(q)

    def _z_part(self, z: torch.Tensor) -> torch.Tensor | None:
        if self.fused is None:
            return None
        return self.fused.z_part(z, None if self.cfg.planner.uncertainty_cost > 0 else 2)

    def _elites(self, value: torch.Tensor, actions: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top num_elites by Ĝ and normalised scores exp(temperature·(Ĝ − max)) (docs/algorithm.md §4.3-4)."""
        p = self.cfg.planner
        idx = torch.topk(value.squeeze(1), p.num_elites, dim=0).indices
        elite_value, elites = value[idx], actions[:, idx]
        score = torch.exp(p.temperature * (elite_value - elite_value.max(0).values))
        return elite_value, elites, score / score.sum(0)

    # -- output (docs/algorithm.md §4 step 5) --------------------------------------------------------------
    def _output(self, z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                elite_value: torch.Tensor, elites: torch.Tensor, score: torch.Tensor,
                eval_mode: bool, start: float) -> PlanResult:
        self.last_elites, self.last_score = elites, score
        pick = int(torch.multinomial(score.squeeze(1), 1, generator=self.generator))
        action = elites[0, pick].clone()
        self._prev_mean = mean
        if not eval_mode:   # exploration noise N(0, sd[0]²) while collecting; none at evaluation
            action += std[0] * torch.randn(action.shape, generator=self.generator)
        action = action.clamp_(-1.0, 1.0)
        return PlanResult(
            action=action.numpy().astype(np.float32),
            mean=mean.numpy().copy(), std=std.numpy().copy(),
            value=float(elite_value[pick]),
            uncertainty=self._uncertainty(z, action),
            elapsed_s=time.perf_counter() - start,
        )

    def _uncertainty(self, z: torch.Tensor, action: torch.Tensor) -> float:
        model = self.fused if self.fused is not None else self.model
        q = model.q(z, action[None])
        return float(head_std(q))

    def _policy_action(self, z: torch.Tensor, eval_mode: bool, start: float) -> PlanResult:
        """mpc False: a = π(z) with σ = min_std while collecting, 0 at eval (docs/algorithm.md §4)."""
        p, H = self.cfg.planner, self.cfg.horizon
        sigma = 0.0 if eval_mode else p.min_std
        action = self.model.pi(z, sigma, generator=self.generator)[0].clamp(-1.0, 1.0)
        q = self.model.q(z, action[None])
        mean = self.model.pi_mean(z).expand(H, -1)
        return PlanResult(
            action=action.numpy().astype(np.float32),
            mean=mean.numpy().copy(), std=np.full(mean.shape, sigma, dtype=np.float32),
            value=float(q.mean()), uncertainty=float(head_std(q)),
            elapsed_s=time.perf_counter() - start,
        )

    def _batch_obs(self, obs: ObsIn) -> dict[str, torch.Tensor]:
        """One observation (no batch dim) → a batch of one, keeping uint8 images as uint8."""
        out = {}
        for key, ndim in (("state", 1), ("rgb", 3)):
            if key not in self.model._encoder:
                continue
            if key not in obs:
                msg = (f"observation lacks '{key}' (has {sorted(obs)}); the model's modality "
                       f"{self.cfg.model.modality.value} needs it")
                raise ConfigError(msg)
            x = torch.as_tensor(obs[key])
            x = x.float() if key == "state" else x
            if key == "state" and x.shape[-1] != self.cfg.model.state_dim:
                msg = (f"observation 'state' has {x.shape[-1]} values but the model takes "
                       f"{self.cfg.model.state_dim}: the checkpoint was trained on another state "
                       f"layout (task, obs mode, or a fowm before the state vector gained its "
                       f"relative parts); pretrain again on this layout")
                raise ConfigError(msg)
            out[key] = x.unsqueeze(0) if x.ndim == ndim else x
        return out


def weighted_moments(elites: torch.Tensor, score: torch.Tensor, min_std: float,
                     max_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Score-weighted mean and std of the elites (H, E, A), std clamped to [min_std, max_std]
    (docs/algorithm.md §4.5; the reference's +1e-9 in the denominators is kept)."""
    w = score.unsqueeze(0)                                          # (1, E, 1)
    denom = score.sum(0) + 1e-9
    mean = (w * elites).sum(1) / denom
    std = torch.sqrt((w * (elites - mean.unsqueeze(1)) ** 2).sum(1) / denom)
    return mean, std.clamp_(min_std, max_std)
