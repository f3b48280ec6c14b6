"""MPPI planning with FOWM's uncertainty penalty (docs/algorithm.md §4, §13.5), the reference
code's semantics.

Symbols: z latent, a action, H horizon, N = num_samples Gaussian candidates, Nπ = ⌊mixture_coef·N⌋
policy candidates, λ = uncertainty_cost. The loop below is written once; what a candidate is
worth comes from a ``Scorer`` (scoring.py): ``FusedScorer`` (stacked weights and C kernels, the
default) or ``ReferenceScorer`` (the model's own methods, the reference's ``estimate_value``)
with ``fast=False``.

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
from fowm_core.model.world_model import WorldModel
from fowm_core.planner.fused import FusedModel
from fowm_core.planner.scoring import FusedScorer, ReferenceScorer, Scorer, head_std

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


class Planner:
    """``plan(obs, t0=, eval_mode=)`` → PlanResult; ``reset()`` between episodes.

    fast: score through ``FusedScorer`` (default) or ``ReferenceScorer`` (scoring.py).
    compile_elementwise: torch.compile the fused LayerNorm/activation blocks (eager fallback).
    """

    scorer: Scorer

    def __init__(self, model: WorldModel, cfg: FowmConfig, generator: torch.Generator | None = None,
                 *, fast: bool = True, compile_elementwise: bool = False,
                 native_kernels: bool = True) -> None:
        if model.cfg != cfg.model:
            msg = (f"planner config model section {cfg.model} differs from the model's "
                   f"{model.cfg}; build the WorldModel from the same FowmConfig")
            raise ConfigError(msg)
        self.model, self.cfg, self.generator = model, cfg, generator
        self._prev_mean: torch.Tensor | None = None
        self.compile_s, self.compile_error = 0.0, ""
        # The last iteration's elites (H, E, A) and scores (E, 1), kept for inspection and tests.
        self.last_elites: torch.Tensor | None = None
        self.last_score: torch.Tensor | None = None
        if not fast:
            self.scorer = ReferenceScorer(model, cfg)
            return
        fused = FusedModel(model, compile_elementwise, native_kernels=native_kernels,
                           per_block=not cfg.planner.stacked_blocks)
        self.scorer = FusedScorer(fused, cfg)
        if fused.compiled:
            self._warm_up(fused)

    def _warm_up(self, fused: FusedModel) -> None:
        """Compile every kernel shape with one throwaway decision (timed as compile_s); if the
        compiler is unusable, fall back to eager and say why (the result is the same math)."""
        start, generator = time.perf_counter(), self.generator
        self.generator = torch.Generator().manual_seed(0)
        try:
            self.plan_latent(torch.zeros(1, self.cfg.model.latent_dim), t0=True, eval_mode=True)
        except (RuntimeError, OSError) as err:   # dynamo/inductor errors derive from RuntimeError
            self.compile_error = f"{type(err).__name__}: {err}"[:500]
            warnings.warn(f"torch.compile failed, planning in eager mode: {self.compile_error}",
                          RuntimeWarning, stacklevel=3)
            fused.use_eager()
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
        decision's smoothed mean shifted one step earlier, its last slot 0
        (docs/algorithm.md §4 step 3)."""
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

    # -- MPPI (docs/algorithm.md §4 steps 2-5) ----------------------------------------------------
    @torch.inference_mode()
    def plan_latent(self, z: torch.Tensor, *, t0: bool, eval_mode: bool,
                    start: float | None = None) -> PlanResult:
        start = time.perf_counter() if start is None else start
        p, H, A = self.cfg.planner, self.cfg.horizon, self.cfg.model.action_dim
        shared = self.scorer.prepare(z)
        rollout = self.scorer.pi_rollout(z, self.generator)
        mean, std = self.initial_mean(t0), torch.full((H, A), p.max_std)
        for _ in range(p.iterations):
            noise = torch.randn(H, p.num_samples, A, generator=self.generator)
            gauss = (mean.unsqueeze(1) + std.unsqueeze(1) * noise).clamp_(-1.0, 1.0)
            value = self.scorer.values(z, gauss, rollout, shared, self.generator).nan_to_num_(0.0)
            actions = torch.cat([gauss, rollout.actions], dim=1)
            elite_value, elites, score = self._elites(value, actions)
            new_mean, new_std = weighted_moments(elites, score, p.min_std, p.max_std)
            mean = p.momentum * mean + (1.0 - p.momentum) * new_mean   # momentum on the mean only
            std = new_std
        return self._output(z, mean, std, elite_value, elites, score, eval_mode, start)

    def _elites(self, value: torch.Tensor, actions: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top num_elites by Ĝ and normalised scores exp(temperature·(Ĝ − max))
        (docs/algorithm.md §4.3-4)."""
        p = self.cfg.planner
        idx = torch.topk(value.squeeze(1), p.num_elites, dim=0).indices
        elite_value, elites = value[idx], actions[:, idx]
        score = torch.exp(p.temperature * (elite_value - elite_value.max(0).values))
        return elite_value, elites, score / score.sum(0)

    # -- output (docs/algorithm.md §4 step 5) -----------------------------------------------------
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
            uncertainty=float(head_std(self.scorer.q(z, action[None]))),
            elapsed_s=time.perf_counter() - start,
        )

    def _policy_action(self, z: torch.Tensor, eval_mode: bool, start: float) -> PlanResult:
        """mpc False: a = π(z) with σ = min_std while collecting, 0 at eval
        (docs/algorithm.md §4)."""
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
