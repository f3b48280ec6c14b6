"""Random-shift image augmentation (docs/algorithm.md §3.1), batched, pure torch.

The reference pads each image by ``pad`` pixels with edge replication and resamples it through
bilinear ``grid_sample`` on a pixel grid moved by a random integer number of pixels in [0, 2·pad]
per axis. Those grid points land on pixel centres, so the result is an integer shift of the
padded image: a random crop. ``random_crop`` computes that crop directly as an index gather
(exact, any dtype, so uint8 images stay uint8), instead of padding and interpolating float
copies. The reference's bilinear path differs from the exact crop only by float rounding of the
grid coordinates (≤ 4e-3 on the 0..255 scale); ``random_shift_bilinear`` keeps it for tests.

Every image draws its own shift, from the same ``randint`` call as the reference, so augmenting a
flattened (H·B) batch equals augmenting each time step on its own, and a seeded generator gives the
same shifts either way.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def shift_pad(img_size: int) -> int:
    """The reference's padding: img_size / 21, i.e. 4 px for 84x84 images."""
    return int(img_size / 21)


def _check_square(images: torch.Tensor) -> None:
    height, width = images.shape[-2:]
    if height != width:
        msg = f"random_shift needs square images, got {height}x{width}; resize or crop to square"
        raise ValueError(msg)


def draw_shifts(n: int, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, 1, 1, 2) integer shifts in [0, 2·pad], (x, y) last: the reference's exact draw."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(0, 2 * pad + 1, (n, 1, 1, 2), generator=generator, device=device)


def random_crop(images: torch.Tensor, pad: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """images: (N, C, S, S), any dtype → same dtype, (N, C, S, S) in channels_last memory format.

    out[n, :, i, j] = images[n, :, clamp(i + y_n − pad), clamp(j + x_n − pad)]: the crop at
    (y_n, x_n) of the replicate-padded image. channels_last is what the conv encoder runs fastest
    on (oneDNN's NHWC kernels), and the crop's copy produces it for free.
    """
    _check_square(images)
    n = images.shape[0]
    if pad <= 0 or n == 0:
        return images
    shift = draw_shifts(n, pad, generator).view(n, 2)
    if images.device.type == "cpu":
        return _crop_copies(images, pad, shift.tolist())
    return _crop_gather(images, pad, shift.to(images.device))


def _crop_copies(images: torch.Tensor, pad: int, shifts: list[list[int]]) -> torch.Tensor:
    """CPU: one strided copy per image out of the padded batch.

    Faster on CPU than the index gather (docs/platform.md §15)."""
    n, channels, size, _ = images.shape
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate").permute(0, 2, 3, 1)
    out = torch.empty((n, size, size, channels), dtype=images.dtype)
    for k, (x, y) in enumerate(shifts):
        out[k].copy_(padded[k, y:y + size, x:x + size])
    return out.permute(0, 3, 1, 2)


def _crop_gather(images: torch.Tensor, pad: int, shift: torch.Tensor) -> torch.Tensor:
    """Any device: one index gather of clamped rows and columns (no host sync)."""
    n, _, size, _ = images.shape
    offsets = torch.arange(size, device=images.device) - pad
    cols = (offsets + shift[:, :1]).clamp_(0, size - 1)                # (N, S) from x
    rows = (offsets + shift[:, 1:]).clamp_(0, size - 1)                # (N, S) from y
    index = torch.arange(n, device=images.device).view(n, 1, 1)
    # Advanced indices around a slice put the indexed dims first: (N, S, S, C) = NHWC.
    nhwc = images[index, :, rows.view(n, size, 1), cols.view(n, 1, size)]
    return nhwc.permute(0, 3, 1, 2)


def random_shift(images: torch.Tensor, pad: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """images: (N, C, S, S), any dtype → float (N, C, S, S), same value scale (0..255 stays)."""
    return random_crop(images, pad, generator).float()


def random_shift_bilinear(images: torch.Tensor, pad: int,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """The reference's formulation (replicate pad + bilinear grid_sample), same draws as
    ``random_crop``; kept to test that the crop is the same operation."""
    _check_square(images)
    n, _, size, _ = images.shape
    x = images.float()
    if pad <= 0 or n == 0:
        return x
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    full = size + 2 * pad
    # Normalised centre coordinates of the first `size` pixels of the padded image
    # (align_corners=False: pixel k sits at -1 + (2k + 1)/full).
    centres = (torch.arange(size, device=x.device, dtype=x.dtype) * 2 + 1) / full - 1
    grid_x = centres.view(1, size).expand(size, size)
    base = torch.stack([grid_x, grid_x.T], dim=-1)                       # (S, S, 2): (x, y)
    shift = draw_shifts(n, pad, generator)
    grid = base + shift.to(x.device, x.dtype) * (2.0 / full)
    return F.grid_sample(padded, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_obs(obs: dict[str, torch.Tensor], pad: int, generator: torch.Generator | None = None,
                *, bilinear: bool = False) -> dict[str, torch.Tensor]:
    """Crop the 'rgb' entry (any leading dims, e.g. (H, B, C, S, S)), keeping its dtype; other keys
    pass through. The result is channels_last per image, so flattening the leading dims is a view.
    ``bilinear`` uses the reference's formulation instead (float output)."""
    if "rgb" not in obs or pad <= 0:
        return obs
    rgb = obs["rgb"]
    flat = rgb.reshape(-1, *rgb.shape[-3:])
    shift = random_shift_bilinear if bilinear else random_crop
    return {**obs, "rgb": shift(flat, pad, generator).view(rgb.shape)}
