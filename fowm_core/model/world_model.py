"""The FOWM world model (docs/algorithm.md §2), one module holding every network by role.

Symbols: z latent (N, L), a action (N, A), K = num_q heads, M = mlp_dim.
    encode(obs) -> z            h_θ: state MLP and/or conv encoder, latents averaged (§2.1)
    next(z, a)  -> z'           d_θ, bounded by LN+Sigmoid (§2.2)
    reward(z, a) -> r           R_θ (§2.2)
    pi(z, std)  -> a            tanh-squashed mean plus truncated noise (§2.3)
    q(z, a)     -> (K, N, 1)    the Q ensemble, all heads in one pass (§2.4)
    v(z)        -> (N, 1)       the expectile value head (§2.4)
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fowm_core.config import ModelConfig
from fowm_core.model import layers
from fowm_core.model.math import truncated_noise_sample

Obs = dict[str, torch.Tensor]


class WorldModel(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        latent, act, mlp_dim = cfg.latent_dim, cfg.action_dim, cfg.mlp_dim
        encoders: dict[str, nn.Module] = {}
        if cfg.uses_state:
            encoders["state"] = layers.state_encoder(cfg.state_dim, cfg.enc_dim, latent)
        if cfg.uses_rgb:
            encoders["rgb"] = layers.rgb_encoder(3 * cfg.frame_stack, cfg.num_channels,
                                                 cfg.img_size, latent, cfg.conv_kernels,
                                                 cfg.conv_strides)
        self._encoder = nn.ModuleDict(encoders)
        if cfg.state_norm and cfg.uses_state:
            # Identity until set_state_stats: buffers, so checkpoints carry them and the EMA
            # (parameters only) leaves them alone.
            self.register_buffer("state_mean", torch.zeros(cfg.state_dim))
            self.register_buffer("state_std", torch.ones(cfg.state_dim))
        self._dynamics = nn.Sequential(layers.mlp(latent + act, mlp_dim, latent),
                                       layers.BoundedLatent(latent))
        self._reward = layers.mlp(latent + act, mlp_dim, 1)
        self._pi = layers.mlp(latent, mlp_dim, act)
        self._qs = layers.QEnsemble(cfg.num_q, latent + act, mlp_dim)
        self._v = layers.value_mlp(latent, mlp_dim)
        # Bumped by whoever changes the weights in place (the learner after each optimiser step):
        # fused optimisers do not advance tensors' autograd version counters, so caches of the
        # weights (the planner's stacked copy) cannot rely on those alone.
        self.weights_version = 0
        self.apply(layers.orthogonal_init)
        self._qs.reset_parameters()
        # Spec §2.5: reward's last layer starts at zero (the Q heads' are zeroed in QEnsemble).
        nn.init.zeros_(self._reward[-1].weight)
        nn.init.zeros_(self._reward[-1].bias)

    # -- the paper's verbs --------------------------------------------------------------------
    @staticmethod
    def scale_obs(obs: Obs) -> Obs:
        """rgb uint8 → float in [0, 1] (dividing the float copy in place: torch.div straight from
        uint8 takes a slow casting loop, docs/platform.md §15); other keys pass through.
        Scale once and ``encode(..., scaled=True)`` to feed one batch to several encoders."""
        if "rgb" not in obs:
            return obs
        rgb = obs["rgb"]
        # In place only on the fresh copy .float() makes of a uint8 image; a float image (the
        # reference's bilinear shift) is the caller's tensor and must not change.
        scaled = rgb / 255.0 if rgb.dtype == torch.float32 else rgb.float().div_(255.0)
        return {**obs, "rgb": scaled}

    def encode(self, obs: Obs, *, scaled: bool = False) -> torch.Tensor:
        """Average the per-modality latents (docs/algorithm.md §2.1: no concatenation, no
        projection). ``scaled``: obs already went through ``scale_obs``."""
        obs = obs if scaled else self.scale_obs(obs)
        if self.cfg.state_norm and "state" in obs:
            obs = {**obs, "state": (obs["state"] - self.state_mean) / self.state_std}
        latents = [encoder(obs[key]) for key, encoder in self._encoder.items()]
        if len(latents) == 1:
            return latents[0]
        return torch.stack(latents).mean(0)

    @torch.no_grad()
    def set_state_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """The state standardisation (``cfg.state_norm``): x → (x − mean) / std, per dimension."""
        if not self.cfg.state_norm:
            msg = "set_state_stats needs a model built with model.state_norm true"
            raise ValueError(msg)
        self.state_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.state_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def next(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self._dynamics(torch.cat([z, a], dim=-1))

    def reward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self._reward(torch.cat([z, a], dim=-1))

    def pi(self, z: torch.Tensor, std: float = 0.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
        """The policy prior: tanh mean, plus truncated noise when std > 0
        (docs/algorithm.md §2.3)."""
        mean = torch.tanh(self._pi(z))
        return truncated_noise_sample(mean, std, generator=generator)

    def pi_mean(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self._pi(z))

    def q(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """All K heads: (K, N, 1)."""
        return self._qs(torch.cat([z, a], dim=-1))

    def v(self, z: torch.Tensor) -> torch.Tensor:
        return self._v(z)

    # -- helpers ---------------------------------------------------------------------------
    def q_min2(self, z: torch.Tensor, a: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Min of 2 *distinct* random heads, one pair for the whole batch
        (docs/algorithm.md §2.4)."""
        heads = random_head_pair(self.cfg.num_q, generator)
        q = self._qs.forward_heads(torch.cat([z, a], dim=-1), heads)
        return torch.minimum(q[0], q[1])

    def track_q_grad(self, enabled: bool) -> None:
        for p in [*self._qs.parameters(), *self._v.parameters()]:
            p.requires_grad_(enabled)

    def target_copy(self) -> WorldModel:
        """A frozen deep copy; the learner EMA-updates its encoder and Q heads only
        (docs/algorithm.md §2.6)."""
        target = copy.deepcopy(self)
        target.requires_grad_(False)
        return target

    def pi_parameters(self) -> list[nn.Parameter]:
        """π's parameters: the AWR step has its own optimiser over exactly these
        (docs/algorithm.md §3.4)."""
        return list(self._pi.parameters())

    def ema_parameters(self) -> list[nn.Parameter]:
        """The parameters the target tracks: encoder and Q ensemble, nothing else
        (docs/algorithm.md §2.6)."""
        return [*self._encoder.parameters(), *self._qs.parameters()]


def random_head_pair(num_heads: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Two distinct head indices drawn uniformly without replacement, on the generator's device."""
    device = generator.device if generator is not None else None
    return torch.randperm(num_heads, generator=generator, device=device)[:2]
