"""Which torch device a job runs on: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.

Every command (``--device``) and the learner and planner nodes (their ``device`` parameter) go
through ``resolve_device``, so the spellings and the messages are the same everywhere. Weights are
device-independent: models are built and initialised on the CPU and then moved, checkpoints are
written from CPU copies and loaded into a model wherever it lives (learning/checkpoints.py).
"""

from __future__ import annotations

import re

import torch

from fowm_core.errors import ConfigError

DEVICE_CHOICES = "auto | cpu | cuda | cuda:N"
_CUDA = re.compile(r"cuda(?::(\d+))?")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The torch.device for a spelling; ``auto`` (or None) is the first CUDA device when torch
    sees one, else the CPU. Asking for CUDA without one is an error that says what torch sees."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda", 0) if cuda_count() > 0 else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA.fullmatch(text)
    if match is None:
        msg = f"device={spec!r} is invalid: expected {DEVICE_CHOICES}"
        raise ConfigError(msg)
    index = int(match.group(1) or 0)
    count = cuda_count()
    if count == 0:
        msg = (f"device={spec!r}: no CUDA device (torch {torch.__version__} sees none: "
               f"{_why_no_cuda()}); use --device cpu, or auto to take a GPU only when present")
        raise ConfigError(msg)
    if index >= count:
        msg = (f"device={spec!r}: torch sees {count} CUDA device(s), indices 0..{count - 1}; "
               "pick one of those (CUDA_VISIBLE_DEVICES renumbers them)")
        raise ConfigError(msg)
    return torch.device("cuda", index)


def cuda_count() -> int:
    """CUDA devices torch can use (0 on a CPU-only build or without a driver)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _why_no_cuda() -> str:
    if torch.version.cuda is None:
        return "this torch build has no CUDA support (a +cpu wheel)"
    return f"built for CUDA {torch.version.cuda} but no driver or device is visible"


def generator_for(device: torch.device, seed: int) -> torch.Generator:
    """A seeded generator on ``device``: random draws happen where the tensors they feed live
    (a CUDA graph can only replay draws from a device-side generator)."""
    return torch.Generator(device=device).manual_seed(seed)
