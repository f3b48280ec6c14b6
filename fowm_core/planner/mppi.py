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
from fowm_core.planner.cuda_graph import GraphedDecision, graph_supported
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


@dataclass
class Decision:
    """One decision as tensors on the model's device, before anything is copied to the host (what
    a CUDA graph replays): the action (A,), the final mean/std (H, A), the chosen elite's value
    (1, 1), the uncertainty at (z_0, action) (1, 1), the last elites (H, E, A) and scores (E, 1)."""

    action: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    value: torch.Tensor
    uncertainty: torch.Tensor
    elites: torch.Tensor
    score: torch.Tensor


class Planner:
    """``plan(obs, t0=, eval_mode=)`` → PlanResult; ``reset()`` between episodes.

    fast: score through ``FusedScorer`` (default) or ``ReferenceScorer`` (scoring.py).
    compile_elementwise: torch.compile the fused LayerNorm/activation blocks (eager fallback).

    The planner runs where the model's weights are. The fused scorer's C row kernels are the CPU
    fast path; on CUDA it scores with ``ReferenceScorer`` (plain torch) and, with
    ``cuda_graph``, replays each decision as one captured CUDA graph (cuda_graph.py), falling
    back to eager if the capture fails. ``generator`` must live on the model's device.
    """

    scorer: Scorer

    def __init__(self, model: WorldModel, cfg: FowmConfig, generator: torch.Generator | None = None,
                 *, fast: bool = True, compile_elementwise: bool = False,
                 native_kernels: bool = True, cuda_graph: bool = True) -> None:
        if model.cfg != cfg.model:
            msg = (f"planner config model section {cfg.model} differs from the model's "
                   f"{model.cfg}; build the WorldModel from the same FowmConfig")
            raise ConfigError(msg)
        self.device = next(model.parameters()).device
        if generator is not None and generator.device != self.device:
            msg = (f"planner generator is on {generator.device} but the model is on "
                   f"{self.device}; seed a torch.Generator(device={str(self.device)!r}) "
                   "(fowm_core.model.device.generator_for)")
            raise ConfigError(msg)
        self.model, self.cfg, self.generator = model, cfg, generator
        # CUDA only: one captured graph per eval_mode, built at the first decision of each.
        self.graphs: GraphedDecision | None = None
        self.graph_error = ""
        self._prev_mean: torch.Tensor | None = None
        self.compile_s, self.compile_error = 0.0, ""
        # The last iteration's elites (H, E, A) and scores (E, 1), kept for inspection and tests.
        self.last_elites: torch.Tensor | None = None
        self.last_score: torch.Tensor | None = None
        if not fast or self.device.type != "cpu":      # the C kernels are CPU code
            self.scorer = ReferenceScorer(model, cfg)
            if cuda_graph and graph_supported(self.device):
                self.graphs = GraphedDecision(self.decide, cfg.model.latent_dim, cfg.horizon,
                                              cfg.model.action_dim, self.device, generator)
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
        mean = torch.zeros(self.cfg.horizon, self.cfg.model.action_dim, device=self.device)
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
        mean0 = self.initial_mean(t0)
        decision = None
        if self.graphs is not None:
            decision = self.graphs.run(z, mean0, eval_mode)
            if decision is None:                   # the capture failed: eager from now on
                self.graph_error, self.graphs = self.graphs.error, None
        if decision is None:
            decision = self.decide(z, mean0, eval_mode)
        return self._result(decision, start)

    def decide(self, z: torch.Tensor, mean0: torch.Tensor, eval_mode: bool) -> Decision:
        """One MPPI decision from the latent z (1, L) and the initial mean (H, A), without a host
        synchronisation: the body a CUDA graph captures, and the eager path everywhere else."""
        p, H, A = self.cfg.planner, self.cfg.horizon, self.cfg.model.action_dim
        shared = self.scorer.prepare(z)
        rollout = self.scorer.pi_rollout(z, self.generator)
        mean, std = mean0, torch.full((H, A), p.max_std, device=self.device)
        for _ in range(p.iterations):
            noise = torch.randn(H, p.num_samples, A, generator=self.generator,
                                device=self.device)
            gauss = (mean.unsqueeze(1) + std.unsqueeze(1) * noise).clamp_(-1.0, 1.0)
            value = self.scorer.values(z, gauss, rollout, shared, self.generator).nan_to_num_(0.0)
            actions = torch.cat([gauss, rollout.actions], dim=1)
            elite_value, elites, score = self._elites(value, actions)
            new_mean, new_std = weighted_moments(elites, score, p.min_std, p.max_std)
            mean = p.momentum * mean + (1.0 - p.momentum) * new_mean   # momentum on the mean only
            std = new_std
        return self._output(z, mean, std, elite_value, elites, score, eval_mode)

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
                eval_mode: bool) -> Decision:
        # The pick stays a tensor (index_select, not int()): no host sync inside a CUDA graph.
        pick = torch.multinomial(score.squeeze(1), 1, generator=self.generator)
        action = elites[0].index_select(0, pick)[0]
        if not eval_mode:   # exploration noise N(0, sd[0]²) while collecting; none at evaluation
            action += std[0] * torch.randn(action.shape, generator=self.generator,
                                           device=self.device)
        action = action.clamp_(-1.0, 1.0)
        return Decision(action=action, mean=mean, std=std,
                        value=elite_value.index_select(0, pick),
                        uncertainty=head_std(self.scorer.q(z, action[None])),
                        elites=elites, score=score)

    def _result(self, d: Decision, start: float) -> PlanResult:
        """Copy a decision to the host; keep its mean for the next warm start. (A graph's outputs
        are overwritten by its next replay, so what is kept is a copy.)"""
        graphed = self.graphs is not None
        keep = (lambda t: t.clone()) if graphed else (lambda t: t)
        self.last_elites, self.last_score = keep(d.elites), keep(d.score)
        self._prev_mean = keep(d.mean)
        return PlanResult(
            action=d.action.cpu().numpy().astype(np.float32),
            mean=d.mean.cpu().numpy().copy(), std=d.std.cpu().numpy().copy(),
            value=float(d.value), uncertainty=float(d.uncertainty),
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
            action=action.cpu().numpy().astype(np.float32),
            mean=mean.cpu().numpy().copy(), std=np.full(mean.shape, sigma, dtype=np.float32),
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
            x = torch.as_tensor(obs[key]).to(self.device)
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
