"""Random-shift image augmentation (spec §3.1), batched, pure torch.

Each image is padded by ``pad`` pixels with edge replication and resampled on a pixel grid
moved by a random integer number of pixels in [0, 2·pad] per axis, through bilinear
``grid_sample``. The grid points land on pixel centres, so the result is an exact integer shift
of the padded image (a random crop). Every image in the batch draws its own shift, so augmenting
a flattened (H·B) batch equals augmenting each time step on its own, as the reference does.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def shift_pad(img_size: int) -> int:
    """The reference's padding: img_size / 21, i.e. 4 px for 84x84 images."""
    return int(img_size / 21)


def random_shift(images: torch.Tensor, pad: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """images: (N, C, S, S), any dtype → float (N, C, S, S), same value scale (0..255 stays)."""
    n, _, height, width = images.shape
    if height != width:
        msg = f"random_shift needs square images, got {height}x{width}"
        raise ValueError(msg)
    x = images.float()
    if pad <= 0 or n == 0:
        return x
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    full = height + 2 * pad
    # Normalised centre coordinates of the first `height` pixels of the padded image
    # (align_corners=False: pixel k sits at -1 + (2k + 1)/full).
    centres = (torch.arange(height, device=x.device, dtype=x.dtype) * 2 + 1) / full - 1
    grid_x = centres.view(1, height).expand(height, height)
    base = torch.stack([grid_x, grid_x.T], dim=-1)                     # (S, S, 2): (x, y)
    device = generator.device if generator is not None else torch.device("cpu")
    shift = torch.randint(0, 2 * pad + 1, (n, 1, 1, 2), generator=generator, device=device)
    grid = base + shift.to(x.device, x.dtype) * (2.0 / full)
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_obs(obs: dict[str, torch.Tensor], pad: int,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Shift the 'rgb' entry (any leading dims, e.g. (H, B, C, S, S)); other keys pass through."""
    if "rgb" not in obs or pad <= 0:
        return obs
    rgb = obs["rgb"]
    flat = rgb.reshape(-1, *rgb.shape[-3:])
    return {**obs, "rgb": random_shift(flat, pad, generator).view(rgb.shape)}
