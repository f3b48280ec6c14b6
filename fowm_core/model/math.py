"""Pure tensor functions used by the model and learner (docs/algorithm.md §2.3, §3.3)."""

from __future__ import annotations

import torch


def straight_through_clamp(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Clamp the value but pass the gradient through unchanged (the reference's TruncatedNormal)."""
    return x + (x.clamp(low, high) - x).detach()


def truncated_noise_sample(mean: torch.Tensor, std: float, clip: float = 0.3,
                           eps: float = 1e-6, generator: torch.Generator | None = None
                           ) -> torch.Tensor:
    """a = clamp(μ + clip(σ·ε, ±0.3), ±(1 − 1e-6)) with a straight-through clamp
    (docs/algorithm.md §2.3)."""
    if std <= 0:
        return mean
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    noise = (noise * std).clamp(-clip, clip)
    return straight_through_clamp(mean + noise, -1.0 + eps, 1.0 - eps)


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """ℓ_τ(u) = |τ − 1[u < 0]|·u², u = target − prediction: weight τ when the target is above."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return weight * diff.square()


def gaussian_log_likelihood(actions: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Unit-variance Gaussian log-likelihood summed over the action dims
    (docs/algorithm.md §3.4)."""
    dim = actions.shape[-1]
    return -0.5 * (actions - mean).square().sum(-1) - 0.5 * dim * torch.log(
        torch.tensor(2 * torch.pi, dtype=actions.dtype))
