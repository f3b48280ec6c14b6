"""Building blocks of the world model (docs/algorithm.md §2): the Mish+LN MLP, the bounded-latent
head and the stacked Q ensemble. Pure torch; the model file only wires these together."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def mlp(in_dim: int, mlp_dim: int, out_dim: int) -> nn.Sequential:
    """Linear → LN → Mish → Linear → LN → Mish → Linear (docs/algorithm.md §2.2 'mlp(in, out)')."""
    return nn.Sequential(
        nn.Linear(in_dim, mlp_dim), nn.LayerNorm(mlp_dim), nn.Mish(),
        nn.Linear(mlp_dim, mlp_dim), nn.LayerNorm(mlp_dim), nn.Mish(),
        nn.Linear(mlp_dim, out_dim),
    )


def value_mlp(in_dim: int, mlp_dim: int) -> nn.Sequential:
    """Linear → LN → Tanh → Linear → ELU → Linear(→1): the V head's shape
    (docs/algorithm.md §2.4)."""
    return nn.Sequential(
        nn.Linear(in_dim, mlp_dim), nn.LayerNorm(mlp_dim), nn.Tanh(),
        nn.Linear(mlp_dim, mlp_dim), nn.ELU(),
        nn.Linear(mlp_dim, 1),
    )


class BoundedLatent(nn.Module):
    """LayerNorm followed by Sigmoid: every latent lies in (0, 1)^L
    (docs/algorithm.md §2.1, §2.2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.norm(x))


class QEnsemble(nn.Module):
    """K independent Q heads Linear → LN → Tanh → Linear → ELU → Linear(→1), stored as stacked
    weights so all heads run as one wide matmul plus two batched matmuls (no loop over heads).

    Weights are laid out input-major (``w1``: (in, K·M)) so the first layer of every head that reads
    the same input is a single (N, in) @ (in, K·M) product.
    """

    def __init__(self, num_heads: int, in_dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.num_heads, self.in_dim, self.mlp_dim = num_heads, in_dim, mlp_dim
        k, m = num_heads, mlp_dim
        self.w1 = nn.Parameter(torch.empty(in_dim, k * m))
        self.b1 = nn.Parameter(torch.zeros(k * m))
        self.ln_weight = nn.Parameter(torch.ones(k, m))
        self.ln_bias = nn.Parameter(torch.zeros(k, m))
        self.w2 = nn.Parameter(torch.empty(k, m, m))
        self.b2 = nn.Parameter(torch.zeros(k, 1, m))
        self.w3 = nn.Parameter(torch.empty(k, m, 1))
        self.b3 = nn.Parameter(torch.zeros(k, 1, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        k, m = self.num_heads, self.mlp_dim
        with torch.no_grad():
            w1 = torch.empty(k, m, self.in_dim)
            for head in range(k):
                nn.init.orthogonal_(w1[head])
                nn.init.orthogonal_(self.w2[head].T)
            # (K, M, in) → (in, K·M): column block k holds head k's transposed weight.
            self.w1.copy_(w1.permute(2, 0, 1).reshape(self.in_dim, k * m))
            # Spec §2.5: the last layer of every Q head starts at zero.
            self.w3.zero_()
            self.b1.zero_(), self.b2.zero_(), self.b3.zero_()
            self.ln_weight.fill_(1.0), self.ln_bias.zero_()

    def hidden(self, h1: torch.Tensor) -> torch.Tensor:
        """From first-layer pre-activations (N, K·M) to the K outputs (K, N, 1)."""
        return _heads_from_h1(h1, self.ln_weight, self.ln_bias, self.w2, self.b2, self.w3, self.b3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in) → (K, ..., 1)."""
        lead = x.shape[:-1]
        h1 = torch.addmm(self.b1, x.reshape(-1, self.in_dim), self.w1)
        return self.hidden(h1).view(self.num_heads, *lead, 1)

    def forward_heads(self, x: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        """Only the heads listed in ``heads`` (J,), in that order: x (..., in) → (J, ..., 1).

        The same per-head math as ``forward`` on a slice of the stacked weights, so a caller that
        needs 2 of K heads (the min-2 targets, docs/algorithm.md §2.4) pays for 2.
        """
        lead, k, m = x.shape[:-1], self.num_heads, self.mlp_dim
        heads = heads.to(self.w1.device)
        w1 = self.w1.view(self.in_dim, k, m).index_select(1, heads).reshape(self.in_dim, -1)
        b1 = self.b1.view(k, m).index_select(0, heads).reshape(-1)
        h1 = torch.addmm(b1, x.reshape(-1, self.in_dim), w1)
        out = _heads_from_h1(h1, *(p.index_select(0, heads) for p in (
            self.ln_weight, self.ln_bias, self.w2, self.b2, self.w3, self.b3)))
        return out.view(len(heads), *lead, 1)


def _heads_from_h1(h1: torch.Tensor, ln_weight: torch.Tensor, ln_bias: torch.Tensor,
                   w2: torch.Tensor, b2: torch.Tensor, w3: torch.Tensor,
                   b3: torch.Tensor) -> torch.Tensor:
    """LN → affine → Tanh → (bmm) ELU → (bmm) for J stacked heads: h1 (N, J·M) → (J, N, 1)."""
    n = h1.shape[0]
    j, m = ln_weight.shape
    h = F.layer_norm(h1.view(n, j, m), (m,)) * ln_weight + ln_bias
    h = torch.tanh(h).transpose(0, 1)                       # (J, N, M)
    h = F.elu(torch.baddbmm(b2, h, w2))                     # (J, N, M)
    return torch.baddbmm(b3, h, w3)                         # (J, N, 1)


def conv_out_size(img_size: int, kernels: tuple[int, ...] = (7, 5, 3, 3),
                  strides: tuple[int, ...] | int = 2) -> int:
    """Spatial size after the valid convs of the pixel encoder: 84 → 39 → 18 → 8 → 3 for the
    reference's k7/5/3/3 stride-2 stack."""
    strides = (strides,) * len(kernels) if isinstance(strides, int) else strides
    size = img_size
    for k, s in zip(kernels, strides, strict=True):
        size = math.floor((size - k) / s) + 1
    return size


def rgb_encoder(in_channels: int, num_channels: int, img_size: int, latent_dim: int,
                kernels: tuple[int, ...] = (7, 5, 3, 3),
                strides: tuple[int, ...] = (2, 2, 2, 2)) -> nn.Sequential:
    """uint8 image → /255 → valid convs (ReLU) → Linear → LN → Sigmoid; by default the
    reference's 4 convs k7/5/3/3, stride 2 (the cpu preset passes a lighter stack).

    The ReLUs work in place on the conv outputs (which nothing else reads; conv backward needs only
    its input): the same values without a second activation-sized buffer, which for the learner's
    H·B next observations is 250 MB per encode at 84x84. Channels_last input stays channels_last.
    """
    c = num_channels
    flat = c * conv_out_size(img_size, kernels, strides) ** 2
    convs: list[nn.Module] = []
    for i, (k, s) in enumerate(zip(kernels, strides, strict=True)):
        convs += [nn.Conv2d(in_channels if i == 0 else c, c, k, stride=s), nn.ReLU(inplace=True)]
    return nn.Sequential(*convs, nn.Flatten(), nn.Linear(flat, latent_dim),
                         BoundedLatent(latent_dim))


def state_encoder(state_dim: int, enc_dim: int, latent_dim: int) -> nn.Sequential:
    """Linear → ELU → Linear → LN → Sigmoid (docs/algorithm.md §2.1)."""
    return nn.Sequential(
        nn.Linear(state_dim, enc_dim), nn.ELU(),
        nn.Linear(enc_dim, latent_dim), BoundedLatent(latent_dim),
    )


def orthogonal_init(module: nn.Module) -> None:
    """Spec §2.5: orthogonal Linear (gain 1) and Conv (ReLU gain √2) weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        nn.init.orthogonal_(module.weight, gain=nn.init.calculate_gain("relu"))
        nn.init.zeros_(module.bias)
