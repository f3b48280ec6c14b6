"""The checkpoint file format: safetensors tensors + a JSON sidecar, atomic, never unpickled
(docs/design.md). What an agent's tensors are named is checkpoints.py's business.

A checkpoint ``step_100.safetensors`` has a sidecar ``step_100.json`` holding the format version,
the tensor file's size and SHA-256, the name/shape/dtype of every tensor, and ``meta`` (config,
preset, task, step, metrics, observation/action spec, data hashes, optimizer hyperparameters).

Write order: tensor file first, sidecar last, each through a temp file in the same directory,
fsync and ``os.replace``. The sidecar carries the hash of the tensor file it describes, so a crash
between the two writes, or a reader racing a writer, sees a hash mismatch and is refused: a new
sidecar is never paired with an old or half-written tensor file.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from fowm_core.errors import CheckpointError

FORMAT = "fowm-checkpoint"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"

Shape = Sequence[int]
Expected = Mapping[str, tuple[Shape, "torch.dtype | str"]]


@dataclass(frozen=True)
class CheckpointInfo:
    """What a written or validated checkpoint holds, without its tensors."""

    path: Path
    sidecar: Path
    sha256: str
    num_bytes: int
    num_tensors: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> int | None:
        return self.meta.get("step")


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


# -- writing -------------------------------------------------------------------------------------
def save_checkpoint(path: str | Path, tensors: Mapping[str, torch.Tensor],
                    meta: Mapping[str, Any]) -> CheckpointInfo:
    """Write ``tensors`` and the sidecar atomically; refuses non-finite values and non-JSON meta."""
    path = Path(path)
    if path.suffix != SUFFIX:
        msg = f"checkpoint path {path} must end in {SUFFIX}"
        raise CheckpointError(msg)
    plain = {name: _plain_tensor(name, t) for name, t in tensors.items()}
    _check_finite(path, plain)
    data = st_save(plain, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    digest = hashlib.sha256(data).hexdigest()
    sidecar = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tensor_file": path.name,
        "tensor_sha256": digest,
        "tensor_bytes": len(data),
        "tensors": {n: {"shape": list(t.shape), "dtype": _dtype_name(t.dtype)}
                    for n, t in plain.items()},
        "meta": dict(meta),
    }
    try:
        text = json.dumps(sidecar, indent=1, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        msg = f"checkpoint meta for {path} is not plain JSON ({err}); pass numbers, strings, lists"
        raise CheckpointError(msg) from err
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
    atomic_write(sidecar_path(path), text.encode())      # last: it vouches for the tensor file
    return CheckpointInfo(path, sidecar_path(path), digest, len(data), len(plain), dict(meta))


def _plain_tensor(name: str, value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        msg = f"checkpoint entry {name!r} is a {type(value).__name__}, expected a torch.Tensor"
        raise CheckpointError(msg)
    # A private contiguous CPU copy: safetensors refuses tensors that share storage.
    return value.detach().to("cpu", copy=True).contiguous()


def atomic_write(path: Path, data: bytes) -> None:
    """temp file in the same directory → fsync → rename → fsync the directory."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)      # make the rename itself durable
    finally:
        os.close(dir_fd)


# -- reading -------------------------------------------------------------------------------------
MAX_CHECKPOINT_BYTES = 2**31          # far above any fowm model; a bigger file is not ours
MAX_SIDECAR_BYTES = 2**24


def read_regular_file(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``. A path can come from a message
    (weights announcements): a FIFO would block the reader forever and /dev/zero never ends, so
    anything but a bounded regular file is refused (CheckpointError) before and after opening;
    OSError (e.g. FileNotFoundError) passes through."""
    path = Path(path)
    _check_regular(path, os.stat(path), max_bytes)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        _check_regular(path, os.fstat(fd), max_bytes)     # it may have been swapped meanwhile
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > max_bytes:
                msg = f"{path} grew to more than {max_bytes} bytes while being read; refused"
                raise CheckpointError(msg)
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _check_regular(path: Path, st: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        msg = (f"{path} is not a regular file (mode {stat.filemode(st.st_mode)}): a checkpoint "
               "must be a plain file written by checkpoints.save_agent")
        raise CheckpointError(msg)
    if st.st_size > max_bytes:
        msg = (f"{path} has {st.st_size} bytes, more than {max_bytes} bytes allowed for a "
               "checkpoint file")
        raise CheckpointError(msg)


def load_checkpoint(path: str | Path, expected: Expected | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and check a checkpoint; returns (tensors, meta). Never unpickles."""
    tensors, info = read_checkpoint(path, expected)
    return tensors, info.meta


def read_meta(path: str | Path) -> dict[str, Any]:
    """The sidecar's meta (config, step, specs, ...) without reading the tensor file; the sidecar's
    format is checked as by ``load_checkpoint``."""
    return _read_sidecar(Path(path)).get("meta", {})


def read_checkpoint(path: str | Path, expected: Expected | None = None
                    ) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    """``load_checkpoint`` that hands back the whole CheckpointInfo (hash, size, meta)."""
    path = Path(path)
    try:
        data = read_regular_file(path, MAX_CHECKPOINT_BYTES)
    except OSError as err:
        msg = f"cannot read checkpoint {path}: {err}"
        raise CheckpointError(msg) from err
    _refuse_pickle(path, data)
    sidecar = _read_sidecar(path)
    _check_bytes(path, data, sidecar)
    try:
        tensors = st_load(data)
    except SafetensorError as err:
        msg = f"checkpoint {path} is not a valid safetensors file ({err}); re-save it"
        raise CheckpointError(msg) from err
    if expected is not None:
        check_expected(path, tensors, expected)
    _check_finite(path, tensors)
    info = CheckpointInfo(path, sidecar_path(path), sidecar["tensor_sha256"], len(data),
                          len(tensors), sidecar.get("meta", {}))
    return tensors, info


def _refuse_pickle(path: Path, data: bytes) -> None:
    # A safetensors file opens with its header length (u64, little-endian) and then "{"; that
    # length may itself begin with 0x80, so the structure is checked before any pickle opener.
    if len(data) >= 9 and data[8:9] == b"{" and 8 + int.from_bytes(data[:8], "little") <= len(data):
        return
    # torch.save writes a zip (PK\x03\x04) or, legacy, a raw pickle (0x80 + protocol 2..5).
    if data[:4] == b"PK\x03\x04" or (data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03",
                                                                          b"\x04", b"\x05")):
        msg = (f"checkpoint {path} holds pickled weights (a torch.save file); pickled weights are "
               "refused because unpickling runs arbitrary code. Convert it where you trust it: "
               "safetensors.torch.save_file(torch.load(f, weights_only=True), out)")
        raise CheckpointError(msg)
    if len(data) < 8:
        msg = f"checkpoint {path} has only {len(data)} bytes: truncated; write it again"
        raise CheckpointError(msg)


def _read_sidecar(path: Path) -> dict[str, Any]:
    side = sidecar_path(path)
    try:
        sidecar = json.loads(read_regular_file(side, MAX_SIDECAR_BYTES).decode())
    except FileNotFoundError as err:
        msg = (f"checkpoint {path} has no sidecar {side.name}; a checkpoint without its sidecar "
               "is incomplete (the write was interrupted); use an earlier checkpoint")
        raise CheckpointError(msg) from err
    except (OSError, ValueError) as err:
        msg = f"checkpoint sidecar {side} cannot be parsed ({err}); use an earlier checkpoint"
        raise CheckpointError(msg) from err
    if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT:
        msg = f"{side} is not a fowm checkpoint sidecar (no \"format\": \"{FORMAT}\")"
        raise CheckpointError(msg)
    version = sidecar.get("format_version")
    if version != FORMAT_VERSION:
        msg = (f"checkpoint {path} has format_version {version!r}; this fowm reads "
               f"{FORMAT_VERSION}; load it with the fowm release that wrote it")
        raise CheckpointError(msg)
    return sidecar


def _check_bytes(path: Path, data: bytes, sidecar: dict[str, Any]) -> None:
    if sidecar.get("tensor_bytes") != len(data):
        msg = (f"checkpoint {path} has {len(data)} bytes but its sidecar records "
               f"{sidecar.get('tensor_bytes')}: truncated or replaced without its sidecar "
               "(an interrupted write); use an earlier checkpoint")
        raise CheckpointError(msg)
    digest = hashlib.sha256(data).hexdigest()
    if digest != sidecar.get("tensor_sha256"):
        msg = (f"checkpoint {path} has SHA-256 {digest[:12]}… but its sidecar records "
               f"{str(sidecar.get('tensor_sha256'))[:12]}…: the pair does not belong together "
               "(an interrupted write or a copied file); use an earlier checkpoint")
        raise CheckpointError(msg)


def check_expected(path: Path, tensors: Mapping[str, torch.Tensor], expected: Expected) -> None:
    """Names, shapes and dtypes must match; the error lists every difference."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = []
    for name in sorted(set(expected) & set(tensors)):
        shape, dtype = expected[name]
        have = tensors[name]
        if tuple(have.shape) != tuple(shape) or _dtype_name(have.dtype) != _dtype_name(dtype):
            mismatched.append(f"{name}: checkpoint {tuple(have.shape)} {_dtype_name(have.dtype)},"
                              f" expected {tuple(shape)} {_dtype_name(dtype)}")
    if missing or unexpected or mismatched:
        parts = [f"checkpoint {path} does not match the running model"]
        if missing:
            parts.append(f"missing: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected: {', '.join(unexpected)}")
        if mismatched:
            parts.append(f"mismatched: {'; '.join(mismatched)}")
        parts.append("load a checkpoint trained with this model config")
        msg = ". ".join(parts)
        raise CheckpointError(msg)


def _check_finite(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    bad = [n for n, t in tensors.items()
           if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all())]
    if bad:
        msg = (f"checkpoint {path} has non-finite values (NaN/inf) in {', '.join(sorted(bad))}; "
               "the training run diverged; use an earlier checkpoint")
        raise CheckpointError(msg)


def _dtype_name(dtype: torch.dtype | str) -> str:
    return str(dtype).removeprefix("torch.")
