"""Agent checkpoints: how a model, its target and its optimizers map to checkpoint tensors.

The file format (safetensors + JSON sidecar, atomic writes, checked reads) is checkpoint_file.py;
its names are re-exported here so callers need one module. An agent checkpoint holds tensors
``model.*``, ``target.*`` and ``optim.<name>.<index>.<slot>``, and in its meta the config, step,
metrics, observation/action spec and the optimizers' JSON-able rest.

Saving and restoring a ``Learner`` (``save_learner``, ``restore_learner``) is the one way an
agent's training state goes to and from disk; ``load_agent`` builds a bare model (the planner).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fowm_core.config import FowmConfig, ModelConfig
from fowm_core.contract.topics import ACTION_NAMES
from fowm_core.errors import CheckpointError
from fowm_core.learning.checkpoint_file import (
    FORMAT,
    FORMAT_VERSION,
    SUFFIX,
    CheckpointInfo,
    atomic_write,
    check_expected,
    load_checkpoint,
    read_checkpoint,
    read_meta,
    save_checkpoint,
    sidecar_path,
)
from fowm_core.model import WorldModel

if TYPE_CHECKING:        # only its attributes are used; the planner side need not import it
    from fowm_core.learning.learner import Learner

__all__ = [
    "FORMAT", "FORMAT_VERSION", "SUFFIX", "AgentFile", "CheckpointInfo", "LoadedAgent",
    "agent_tensors", "atomic_write", "canned_observation", "check_expected",
    "check_model_config", "load_agent", "load_checkpoint", "load_validated_model",
    "read_agent", "read_checkpoint", "read_meta", "restore", "restore_agent", "restore_learner",
    "save_agent", "save_checkpoint", "save_learner", "sidecar_path", "validate_checkpoint",
]

# How Adam runs (fused / foreach) is the running optimizer's choice, not the checkpoint's: the
# reference learner may continue from a fast learner's checkpoint and stay per-tensor.
OPTIMIZER_IMPL_KEYS = ("fused", "foreach")


# -- agent ⇄ tensors ----------------------------------------------------------------------------
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
        impl = {k: opt.param_groups[0][k] for k in OPTIMIZER_IMPL_KEYS if k in opt.param_groups[0]}
        try:
            opt.load_state_dict(_optimizer_state(name, saved[name], tensors, impl))
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


def _optimizer_state(name: str, saved: Mapping[str, Any], tensors: Mapping[str, torch.Tensor],
                     impl: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim.{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, field_name = key.removeprefix(prefix).split(".", 1)
            state.setdefault(int(index), {})[field_name] = value.clone()
    for index, scalars in saved.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(scalars)
    # JSON turned tuples (Adam's betas) into lists; give them back their shape.
    groups = [{**{k: tuple(v) if isinstance(v, list) and k != "params" else v
                  for k, v in g.items()}, **impl}
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


@dataclass(frozen=True)
class AgentFile:
    """An agent checkpoint read and checked once (hash, format, finite values), not yet restored
    into modules; ``cfg`` is the config it was saved with."""

    tensors: dict[str, torch.Tensor]
    cfg: FowmConfig
    info: CheckpointInfo

    @property
    def meta(self) -> dict[str, Any]:
        return self.info.meta


def read_agent(path: str | Path) -> AgentFile:
    tensors, info = read_checkpoint(path)
    return AgentFile(tensors, _saved_config(Path(path), info.meta), info)


def restore(ckpt: AgentFile, model: nn.Module, cfg: FowmConfig,
            target: nn.Module | None = None,
            optimizers: Mapping[str, torch.optim.Optimizer] | None = None) -> None:
    """Restore a read checkpoint into modules built from ``cfg``, whose model section must equal
    the checkpoint's (every differing field is named)."""
    path = ckpt.info.path
    check_model_config(path, ckpt.cfg.model, cfg.model)
    expected = {f"model.{k}": (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    check_expected(path, {k: v for k, v in ckpt.tensors.items() if k.startswith("model.")},
                   expected)
    restore_agent(ckpt.tensors, ckpt.meta, model, target, optimizers)


def load_agent(path: str | Path, model: nn.Module | None = None, cfg: FowmConfig | None = None,
               target: nn.Module | None = None,
               optimizers: Mapping[str, torch.optim.Optimizer] | None = None) -> LoadedAgent:
    """Load an agent checkpoint. With ``cfg``, its model config must equal the checkpoint's; with no
    ``model``, a WorldModel is built from ``cfg`` or, failing that, from the checkpoint's config."""
    ckpt = read_agent(path)
    cfg = cfg or ckpt.cfg
    if model is None:
        model = WorldModel(cfg.model)
    restore(ckpt, model, cfg, target, optimizers)
    return LoadedAgent(model, cfg, ckpt.meta, ckpt.info)


# -- a learner's whole training state ----------------------------------------------------------
def save_learner(path: str | Path, learner: Learner, metrics: Mapping[str, Any],
                 extra_meta: Mapping[str, Any] | None = None) -> CheckpointInfo:
    """Model, target, both Adams and the update count; non-numeric metrics are left out. The
    learner's generator is not saved: a resumed run is seeded afresh."""
    numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    return save_agent(path, learner.model, learner.cfg, learner.step, numbers,
                      target=learner.target, optimizers=learner.optimizers,
                      extra_meta=extra_meta)


def restore_learner(ckpt: AgentFile, learner: Learner) -> None:
    """The inverse of ``save_learner`` into a learner built from a config with the same model."""
    restore(ckpt, learner.model, learner.cfg, learner.target, learner.optimizers)
    learner.step = int(ckpt.meta.get("step", 0))


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
