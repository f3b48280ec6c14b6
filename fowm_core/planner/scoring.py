"""How MPPI values its candidates (docs/algorithm.md §4, Eq. 4): one interface, two scorers.

The value of a candidate, with u = std_k Q_k (all K online heads, unbiased) taken before each
dynamics step and a_H = π(z_H; σ = min_std):

    Ĝ = Σ_t γ^t [R(z_t, a_t) − λ·u(z_t, a_t)] + γ^H [Q_min2(z_H, a_H) − λ·u(z_H, a_H)]

``ReferenceScorer`` computes it with the model's own methods, exactly as the reference's
``estimate_value`` (``reference_value``): it is the oracle the tests hold ``FusedScorer`` to.
``FusedScorer`` computes the same numbers through ``FusedModel`` (stacked weights, C kernels).

Both take their random draws from the generator the planner passes in, in the reference order: π
rollout noise per step; then per ``values`` call the terminal π noise, then the head pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from fowm_core.config import FowmConfig
from fowm_core.model.world_model import WorldModel, random_head_pair
from fowm_core.planner.fused import FusedModel


@dataclass
class PiRollout:
    """The Nπ policy candidates of one decision (docs/algorithm.md §4 step 2): drawn once and
    reused in every iteration."""

    actions: torch.Tensor           # (H, Nπ, A)


@dataclass
class CachedPiRollout(PiRollout):
    """The fused scorer's rollout: the states and per-step returns of the π candidates do not
    depend on the iteration, so they are kept; only the terminal term is redone."""

    partial: torch.Tensor           # (Nπ, 1) Σ_t γ^t [R − λ·u]
    z_last: torch.Tensor            # (Nπ, L) z_H


class Scorer(Protocol):
    """What the MPPI loop asks of a model. z is the decision's latent (1, L)."""

    def prepare(self, z: torch.Tensor) -> torch.Tensor | None:
        """Once per decision, before anything else: whatever every candidate shares (None if
        nothing), handed back to ``values``."""
        ...

    def pi_rollout(self, z: torch.Tensor, generator: torch.Generator | None) -> PiRollout:
        """The Nπ rollouts of π(·; min_std) from z, H steps (draws π noise at every step)."""
        ...

    def values(self, z: torch.Tensor, gauss: torch.Tensor, rollout: PiRollout,
               shared: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        """Ĝ of the N Gaussian candidates gauss (H, N, A), then of the π candidates: (N + Nπ, 1)."""
        ...

    def q(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """All K Q heads at (z, a): (K, N, 1)."""
        ...


def head_std(q: torch.Tensor) -> torch.Tensor:
    """u(z, a): std over the K heads, unbiased (torch's default, as in the reference).
    (K, N, 1) → (N, 1)."""
    return q.std(dim=0)


def min_of_pair(q: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """min(Q_i, Q_j) of the two drawn heads (K, N, 1) → (N, 1); index_select rather than
    q[heads[0]], which would copy the index to the host (no sync inside a CUDA graph)."""
    pair = q.index_select(0, heads.to(q.device))
    return torch.minimum(pair[0], pair[1])


def reference_value(model: WorldModel, z: torch.Tensor, actions: torch.Tensor, cfg: FowmConfig,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Ĝ for candidates (N, 1) from z (N, L) and actions (H, N, A), written with the model's methods
    exactly as the reference's ``estimate_value`` (docs/algorithm.md §4)."""
    lam, gamma = cfg.planner.uncertainty_cost, cfg.discount
    value, discount = torch.zeros(z.shape[0], 1, device=z.device), 1.0
    for a in actions:
        if lam > 0:
            value = value - discount * lam * head_std(model.q(z, a))
        z, r = model.next(z, a), model.reward(z, a)
        value = value + discount * r
        discount *= gamma
    a_last = model.pi(z, cfg.planner.min_std, generator=generator)
    q = model.q(z, a_last)
    heads = random_head_pair(cfg.model.num_q, generator)
    value = value + discount * min_of_pair(q, heads)
    if lam > 0:
        value = value - discount * lam * head_std(q)
    return value


class ReferenceScorer:
    """The model's own methods: every iteration rolls all N + Nπ candidates out again."""

    def __init__(self, model: WorldModel, cfg: FowmConfig) -> None:
        self.model, self.cfg = model, cfg

    def prepare(self, z: torch.Tensor) -> None:
        return None

    def pi_rollout(self, z: torch.Tensor, generator: torch.Generator | None) -> PiRollout:
        p, H, A = self.cfg.planner, self.cfg.horizon, self.cfg.model.action_dim
        actions = torch.empty(H, p.num_pi_trajs, A, device=z.device)
        zt = z.expand(p.num_pi_trajs, z.shape[-1])
        for t in range(H if p.num_pi_trajs > 0 else 0):
            actions[t] = self.model.pi(zt, p.min_std, generator=generator)
            zt = self.model.next(zt, actions[t])
        return PiRollout(actions)

    def values(self, z: torch.Tensor, gauss: torch.Tensor, rollout: PiRollout,
               shared: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        actions = torch.cat([gauss, rollout.actions], dim=1)
        zs = z.expand(actions.shape[1], z.shape[-1])
        return reference_value(self.model, zs, actions, self.cfg, generator)

    def q(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.model.q(z, a)


class FusedScorer:
    """``FusedModel``'s stacked steps: the π candidates' steps are computed once per decision and
    the first layer's z-part once for all candidates at t = 0."""

    def __init__(self, fused: FusedModel, cfg: FowmConfig) -> None:
        self.fused, self.cfg = fused, cfg

    def prepare(self, z: torch.Tensor) -> torch.Tensor:
        """Rebuild stale weight stacks (after a learner step or a load), then z @ W1z + b1 for
        the blocks the steps run (the Q heads only with λ > 0)."""
        self.fused.refresh()
        return self.fused.z_part(z, None if self.cfg.planner.uncertainty_cost > 0 else 2)

    def pi_rollout(self, z: torch.Tensor, generator: torch.Generator | None) -> CachedPiRollout:
        p, H, A = self.cfg.planner, self.cfg.horizon, self.cfg.model.action_dim
        n_pi, lam = p.num_pi_trajs, p.uncertainty_cost
        actions = torch.empty(H, n_pi, A)
        zt = z.expand(n_pi, z.shape[-1])
        partial, discount = torch.zeros(n_pi, 1), 1.0
        for t in range(H if n_pi > 0 else 0):
            actions[t] = self.fused.pi(zt, p.min_std, generator=generator)
            out = self.fused.step(zt, actions[t], with_q=lam > 0)
            partial += discount * out.r
            if out.q is not None:
                partial -= discount * lam * head_std(out.q)
            zt, discount = out.z, discount * self.cfg.discount
        return CachedPiRollout(actions, partial, zt)

    def values(self, z: torch.Tensor, gauss: torch.Tensor, rollout: PiRollout,
               shared: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
        if not isinstance(rollout, CachedPiRollout):
            msg = (f"FusedScorer.values got a {type(rollout).__name__}; it needs the "
                   "CachedPiRollout of its own pi_rollout")
            raise TypeError(msg)
        lam, gamma = self.cfg.planner.uncertainty_cost, self.cfg.discount
        value, zt, discount = torch.zeros(gauss.shape[1], 1), z, 1.0
        for t, a in enumerate(gauss):
            out = self.fused.step(zt, a, with_q=lam > 0, z_part=shared if t == 0 else None)
            value += discount * out.r
            if out.q is not None:
                value -= discount * lam * head_std(out.q)
            zt, discount = out.z, discount * gamma
        value = torch.cat([value, rollout.partial])
        return value + discount * self._terminal(torch.cat([zt, rollout.z_last]), generator)

    def _terminal(self, z: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Q_min2(z_H, a_H) − λ·u(z_H, a_H) with a_H = π(z_H; min_std); with λ = 0 only the two
        drawn heads are evaluated (the reference's Q(..., 'min') does the same)."""
        p = self.cfg.planner
        a = self.fused.pi(z, p.min_std, generator=generator)
        heads = random_head_pair(self.cfg.model.num_q, generator)
        if p.uncertainty_cost == 0:
            q = self.fused.q(z, a, heads)
            return torch.minimum(q[0], q[1])
        q = self.fused.q(z, a)
        return min_of_pair(q, heads) - p.uncertainty_cost * head_std(q)

    def q(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.fused.q(z, a)
