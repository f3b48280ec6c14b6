"""Checkpoints: safetensors tensors + a JSON sidecar, atomic, never unpickled (docs/design.md).

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
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from fowm_core.config import FowmConfig, ModelConfig
from fowm_core.contract.topics import ACTION_NAMES
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
def load_checkpoint(path: str | Path, expected: Expected | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and check a checkpoint; returns (tensors, meta). Never unpickles."""
    tensors, info = _load(Path(path), expected)
    return tensors, info.meta


def read_meta(path: str | Path) -> dict[str, Any]:
    """The sidecar's meta (config, step, specs, ...) without reading the tensor file; the sidecar's
    format is checked as by ``load_checkpoint``."""
    return _read_sidecar(Path(path)).get("meta", {})


def _load(path: Path, expected: Expected | None) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    try:
        data = path.read_bytes()
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
        sidecar = json.loads(side.read_text())
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


# -- agent helpers -------------------------------------------------------------------------------
def agent_tensors(model: nn.Module, target: nn.Module | None = None,
                  optimizers: Mapping[str, torch.optim.Optimizer] | None = None
                  ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten model, target and optimizer states into (name → tensor, JSON-able rest)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if target is not None:
        tensors.update({f"target.{k}": v for k, v in target.state_dict().items()})
    opt_meta: dict[str, Any] = {}
    for name, opt in (optimizers or {}).items():
        state = opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, entry in state["state"].items():
            for key, value in entry.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{name}.{index}.{key}"] = value
                else:
                    scalars.setdefault(str(index), {})[key] = value
        opt_meta[name] = {"param_groups": state["param_groups"], "scalars": scalars}
    return tensors, {"optimizers": opt_meta}


def restore_agent(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], model: nn.Module,
                  target: nn.Module | None = None,
                  optimizers: Mapping[str, torch.optim.Optimizer] | None = None) -> None:
    """The inverse of ``agent_tensors``: exact, so a restored Adam continues bit-identically."""
    _load_module(model, tensors, "model.")
    if target is not None:
        _load_module(target, tensors, "target.")
    saved = meta.get("optimizers", {})
    for name, opt in (optimizers or {}).items():
        if name not in saved:
            msg = (f"checkpoint has no optimizer {name!r} (it has {sorted(saved) or 'none'}); "
                   "load it without optimizers to finetune from fresh optimizer state")
            raise CheckpointError(msg)
        try:
            opt.load_state_dict(_optimizer_state(name, saved[name], tensors))
        except (ValueError, KeyError) as err:
            msg = (f"checkpoint optimizer {name!r} does not fit the running one ({err}); build "
                   "the optimizers over the same parameter groups as when it was saved")
            raise CheckpointError(msg) from err


def _load_module(module: nn.Module, tensors: Mapping[str, torch.Tensor], prefix: str) -> None:
    state = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        msg = f"checkpoint '{prefix}*' tensors do not fit the module: {err}"
        raise CheckpointError(msg) from err


def _optimizer_state(name: str, saved: Mapping[str, Any],
                     tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim.{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, field_name = key.removeprefix(prefix).split(".", 1)
            state.setdefault(int(index), {})[field_name] = value.clone()
    for index, scalars in saved.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(scalars)
    # JSON turned tuples (Adam's betas) into lists; give them back their shape.
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
              for g in saved["param_groups"]]
    return {"state": state, "param_groups": groups}


# -- the world-model agent -----------------------------------------------------------------------
@dataclass
class LoadedAgent:
    model: nn.Module
    cfg: FowmConfig
    meta: dict[str, Any]
    info: CheckpointInfo


def save_agent(path: str | Path, model: nn.Module, cfg: FowmConfig, step: int,
               metrics: Mapping[str, float], target: nn.Module | None = None,
               optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
               extra_meta: Mapping[str, Any] | None = None) -> CheckpointInfo:
    """Save model (+target, optimizers) with the config and specs the loader checks against."""
    tensors, parts = agent_tensors(model, target, optimizers)
    m = cfg.model
    meta = {
        "config": cfg.to_dict(),
        "preset": cfg.preset,
        "task": cfg.task,
        "step": int(step),
        # JSON has no NaN: a non-finite metric (an empty eval, a diverged loss) is stored as null.
        "metrics": {k: float(v) if math.isfinite(float(v)) else None for k, v in metrics.items()},
        "observation_spec": {"modality": str(m.modality), "state_dim": m.state_dim,
                             "rgb_shape": [3 * m.frame_stack, m.img_size, m.img_size]},
        "action_spec": {"dim": m.action_dim, "names": list(ACTION_NAMES[:m.action_dim]),
                        "low": -1.0, "high": 1.0},
        "has_target": target is not None,
        **parts,
        **(extra_meta or {}),
    }
    return save_checkpoint(path, tensors, meta)


def load_agent(path: str | Path, model: nn.Module | None = None, cfg: FowmConfig | None = None,
               target: nn.Module | None = None,
               optimizers: Mapping[str, torch.optim.Optimizer] | None = None) -> LoadedAgent:
    """Load an agent checkpoint. With ``cfg``, its model config must equal the checkpoint's; with no
    ``model``, a WorldModel is built from ``cfg`` or, failing that, from the checkpoint's config."""
    path = Path(path)
    tensors, info = _load(path, None)
    meta = info.meta
    saved_cfg = _saved_config(path, meta)
    if cfg is not None:
        check_model_config(path, saved_cfg.model, cfg.model)
    cfg = cfg or saved_cfg
    if model is None:
        from fowm_core.model import WorldModel
        model = WorldModel(cfg.model)
    expected = {f"model.{k}": (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    model_tensors = {k: v for k, v in tensors.items() if k.startswith("model.")}
    check_expected(path, model_tensors, expected)
    restore_agent(tensors, meta, model, target, optimizers)
    return LoadedAgent(model, cfg, meta, info)


def _saved_config(path: Path, meta: Mapping[str, Any]) -> FowmConfig:
    if "config" not in meta:
        msg = f"checkpoint {path} has no 'config' in its sidecar meta: not written by save_agent"
        raise CheckpointError(msg)
    try:
        return FowmConfig.from_dict(meta["config"])
    except ValueError as err:
        msg = f"checkpoint {path} holds a config this fowm cannot build: {err}"
        raise CheckpointError(msg) from err


def check_model_config(path: Path, saved: ModelConfig, running: ModelConfig) -> None:
    """Name every model field that differs between the checkpoint and the running config."""
    a, b = FowmConfig(model=saved).to_dict()["model"], FowmConfig(model=running).to_dict()["model"]
    diffs = [k for k in a if a[k] != b.get(k)]
    if diffs:
        first = ", ".join(f"model.{k}={a[k]!r} but the running config has {b[k]!r}" for k in diffs)
        fix = "; ".join(f"model.{k}: {a[k]!r}" for k in diffs)
        msg = (f"checkpoint {path.name} has {first}; load a checkpoint trained with the running "
               f"config or set {fix} in your config")
        raise CheckpointError(msg)


def validate_checkpoint(path: str | Path, model_cfg: ModelConfig) -> CheckpointInfo:
    """Load, build a WorldModel and check finite outputs on a canned observation (hot-swap gate)."""
    return load_validated_model(path, model_cfg)[1]


def load_validated_model(path: str | Path, model_cfg: ModelConfig
                         ) -> tuple[nn.Module, CheckpointInfo]:
    """``validate_checkpoint`` that also hands back the loaded model, so the planner loads once."""
    agent = load_agent(path, cfg=FowmConfig(model=model_cfg))
    model = agent.model.eval()
    obs = canned_observation(model_cfg)
    with torch.no_grad():
        z = model.encode(obs)
        a = model.pi(z)
        outputs = {"encode": z, "pi": a, "next": model.next(z, a), "reward": model.reward(z, a),
                   "q": model.q(z, a), "v": model.v(z)}
    bad = [name for name, out in outputs.items() if not bool(torch.isfinite(out).all())]
    if bad:
        msg = (f"checkpoint {path} loads but gives non-finite {', '.join(bad)} on a canned "
               "observation; keep the running weights and use an earlier checkpoint")
        raise CheckpointError(msg)
    return model, agent.info


def canned_observation(cfg: ModelConfig, batch: int = 2) -> dict[str, torch.Tensor]:
    """A fixed, plausible observation: mid-range state and a grey image ramp."""
    obs: dict[str, torch.Tensor] = {}
    if cfg.uses_state:
        obs["state"] = torch.linspace(-0.5, 0.5, batch * cfg.state_dim).reshape(batch, -1)
    if cfg.uses_rgb:
        side = cfg.img_size
        ramp = torch.linspace(0, 255, side * side).reshape(1, 1, side, side)
        obs["rgb"] = ramp.expand(batch, 3 * cfg.frame_stack, side, side).to(torch.uint8)
    return obs
