"""How wrong the world model is along action sequences, and where the error comes from.

For N sequences of H actions, each with the H+1 true observations it led to and its H true rewards,
``score_sequences`` compares what the planner believes (the latent rollout ẑ_t from h(o_0)) with
what happened:

    pred_return  Σ_t γ^t R(ẑ_t, a_t)       the model's H-step discounted reward (as the planner's Ĝ)
    head_return  Σ_t γ^t R(h(o_t), a_t)    the reward head on the true states
    true_return  Σ_t γ^t r_t               what the twin (or the data) paid

so optimism = pred − true splits exactly into a dynamics part (pred − head: the rollout drifted)
and a reward-head part (head − true: the head is wrong on true states). The terminal value gets the
same split: V(ẑ_H) against V(h(o_H)). ``q_std`` is the penalty's u (std over the Q heads) along the
imagined sequence, so its correlation with the optimism says whether λ·u can catch the error.
``summarise`` turns the per-sequence numbers into one JSON-able dict (``fowm diagnose``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fowm_core.config import FowmConfig
from fowm_core.data.episode import Episode
from fowm_core.model import WorldModel


@dataclass
class Windows:
    """N sequences: obs key → (H+1, N, ...), actions (H, N, A), true rewards (H, N)."""

    obs: dict[str, np.ndarray]
    action: np.ndarray
    reward: np.ndarray

    def __len__(self) -> int:
        return int(self.action.shape[1])

    @classmethod
    def stack(cls, items: Sequence[tuple[Mapping[str, np.ndarray], np.ndarray, np.ndarray]]
              ) -> Windows:
        """From (obs key → (H+1, ...), actions (H, A), rewards (H,)) per sequence."""
        keys = items[0][0].keys()
        return cls({k: np.stack([np.asarray(o[k]) for o, _, _ in items], axis=1) for k in keys},
                   np.stack([np.asarray(a, np.float32) for _, a, _ in items], axis=1),
                   np.stack([np.asarray(r, np.float32) for _, _, r in items], axis=1))


def episode_windows(episodes: Sequence[Episode], horizon: int, stride: int = 1) -> Windows:
    """Every H-step window of the data's own action sequences (start t = 0, stride, … T−H)."""
    items = []
    for ep in episodes:
        for t in range(0, len(ep) - horizon + 1, stride):
            obs = {k: v[t:t + horizon + 1] for k, v in ep.obs.items()}
            items.append((obs, ep.action[t:t + horizon], ep.reward[t:t + horizon]))
    if not items:
        msg = f"no episode is at least {horizon} steps long: nothing to score"
        raise ValueError(msg)
    return Windows.stack(items)


def _discounted(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """Σ_t γ^t x_t over the first axis: (H, N) → (N,)."""
    weights = gamma ** torch.arange(x.shape[0], dtype=x.dtype, device=x.device)
    return (weights[:, None] * x).sum(0)


@torch.no_grad()
def score_sequences(model: WorldModel, cfg: FowmConfig, windows: Windows
                    ) -> dict[str, np.ndarray]:
    """Per-sequence predictions and truths (see the module doc), each (N,)."""
    device = next(model.parameters()).device
    H = windows.action.shape[0]
    obs = {k: torch.as_tensor(v).to(device) for k, v in windows.obs.items()}
    obs = {k: v.float() if k == "state" else v for k, v in obs.items()}
    a = torch.as_tensor(windows.action, device=device)
    r = torch.as_tensor(windows.reward, device=device)
    z_true = model.encode({k: v.flatten(0, 1) for k, v in obs.items()})
    z_true = z_true.view(H + 1, len(windows), -1)                     # h(o_t), t = 0..H
    zs, z = [z_true[0]], z_true[0]
    for t in range(H):
        z = model.next(z, a[t])
        zs.append(z)
    z_pred = torch.stack(zs)                                          # ẑ_t, t = 0..H
    r_pred = model.reward(z_pred[:-1], a).squeeze(-1)                 # (H, N)
    r_head = model.reward(z_true[:-1], a).squeeze(-1)
    std_pred = model.q(z_pred[:-1], a).std(dim=0).squeeze(-1)         # u along ẑ: (H, N)
    std_true = model.q(z_true[:-1], a).std(dim=0).squeeze(-1)
    gamma = cfg.discount
    out = {
        "pred_return": _discounted(r_pred, gamma), "head_return": _discounted(r_head, gamma),
        "true_return": _discounted(r, gamma),
        "v_pred": model.v(z_pred[-1]).squeeze(-1), "v_true_state": model.v(z_true[-1]).squeeze(-1),
        "q_std": std_pred.mean(0), "q_std_true_states": std_true.mean(0),
        "latent_error": (z_pred[1:] - z_true[1:]).square().mean(-1).mean(0),
    }
    return {k: v.float().cpu().numpy() for k, v in out.items()}


def _corr(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def summarise(scores: Mapping[str, np.ndarray], discount: float, horizon: int) -> dict:
    """Means over the sequences, the optimism and its split, and how the penalty tracks it."""
    s = {k: np.asarray(v, np.float64) for k, v in scores.items()}
    optimism = s["pred_return"] - s["true_return"]
    g_h = discount ** horizon
    total_pred = s["pred_return"] + g_h * s["v_pred"]
    total_ref = s["true_return"] + g_h * s["v_true_state"]
    out = {k: float(v.mean()) for k, v in s.items()}
    out.update({
        "sequences": len(optimism),
        "optimism": float(optimism.mean()),
        "optimism_reward_head": float((s["head_return"] - s["true_return"]).mean()),
        "optimism_dynamics": float((s["pred_return"] - s["head_return"]).mean()),
        "reward_abs_error": float(np.abs(optimism).mean()),
        "v_dynamics_error": float((s["v_pred"] - s["v_true_state"]).mean()),
        # The planner's objective without the penalty and with V for the tail, against the same
        # with the twin's rewards and V on the state the sequence really reached.
        "objective_optimism": float((total_pred - total_ref).mean()),
        "corr_q_std_vs_optimism": _corr(s["q_std"], optimism),
        "corr_q_std_vs_abs_error": _corr(s["q_std"], np.abs(optimism)),
    })
    return out


def returns_to_go(rewards: np.ndarray, discount: float) -> np.ndarray:
    """G_t = Σ_{k≥t} γ^{k−t} r_k within the episode (truncated at its end), (T,)."""
    out, g = np.zeros(len(rewards)), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = float(rewards[t]) + discount * g
        out[t] = g
    return out


@torch.no_grad()
def value_vs_return(model: WorldModel, episodes: Sequence[Episode], discount: float) -> dict:
    """V(h(o_0)) against the episode's own discounted return from its start (the tail past the
    time limit, γ^T of it, is missing from the return, and V is an upper expectile: a calibrated
    V sits a little above)."""
    device = next(model.parameters()).device
    v0, g0 = [], []
    for ep in episodes:
        obs = {k: torch.as_tensor(v[:1]).to(device) for k, v in ep.obs.items()}
        obs = {k: v.float() if k == "state" else v for k, v in obs.items()}
        v0.append(float(model.v(model.encode(obs))[0, 0]))
        g0.append(float(returns_to_go(ep.reward, discount)[0]))
    return {"v0": float(np.mean(v0)), "return0": float(np.mean(g0)),
            "v0_minus_return0": float(np.mean(np.subtract(v0, g0)))}
