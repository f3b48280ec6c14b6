"""One owner for the task and the observation mode: the checkpoint the planner runs.

The planner plans the task, in the observation mode, that its checkpoint was trained on. The
other nodes that need them (the twin: ``task``, ``obs_mode``; the episode manager: ``task``) take
the same ``checkpoint`` parameter and leave those empty: the values are read from the checkpoint's
JSON sidecar (fowm_core.learning.checkpoints.read_meta; no tensors are loaded). A value set anyway
must equal the checkpoint's, or the node refuses to start and names both. Without a checkpoint the
values must be set (e.g. a twin alone, for data collection or tests).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from fowm_core.errors import CheckpointError, ConfigError
from fowm_core.learning.checkpoints import read_meta

P = TypeVar("P")

# Node parameter → where the checkpoint's sidecar meta holds its value.
_FIELDS = {"task": ("task",), "obs_mode": ("observation_spec", "modality")}


def checkpoint_values(checkpoint: str) -> dict[str, str]:
    """{"task": ..., "obs_mode": ...} from the checkpoint's sidecar."""
    try:
        meta = read_meta(checkpoint)
    except (OSError, CheckpointError) as err:
        msg = f"cannot read the task and observation mode of checkpoint {checkpoint}: {err}"
        raise ConfigError(msg) from err
    values: dict[str, str] = {}
    for name, keys in _FIELDS.items():
        value: Any = meta
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, str) or not value:
            msg = (f"checkpoint {checkpoint}: its sidecar has no {'.'.join(keys)} (meta keys "
                   f"{sorted(meta)}); write it with fowm_core.learning.checkpoints.save_agent")
            raise ConfigError(msg)
        values[name] = value
    return values


def resolve(node: str, params: P) -> P:
    """``params`` (a node's parameter dataclass with ``checkpoint`` and ``task``, maybe
    ``obs_mode``) with the empty ones taken from the checkpoint.

    Raises:
        ConfigError: a set value contradicts the checkpoint (both values named), or a value is
            empty and there is no checkpoint to take it from.
    """
    names = [n for n in _FIELDS if hasattr(params, n)]
    checkpoint = params.checkpoint                                   # type: ignore[attr-defined]
    if not checkpoint:
        empty = [n for n in names if not getattr(params, n)]
        if empty:
            msg = (f"{node}: parameter {' and '.join(empty)} is empty and no checkpoint is set: "
                   f"set checkpoint:=<file.safetensors> (its sidecar gives {', '.join(names)}) "
                   f"or set {' and '.join(empty)}")
            raise ConfigError(msg)
        return params
    saved = checkpoint_values(checkpoint)
    for name in names:
        value = getattr(params, name)
        if value and value != saved[name]:
            msg = (f"{node}: parameter {name}={value!r} contradicts checkpoint {checkpoint}, "
                   f"which was trained with {name} {saved[name]!r}: leave {name} empty to take "
                   f"the checkpoint's, or use a checkpoint trained for {value!r}")
            raise ConfigError(msg)
    return dataclasses.replace(params, **{n: saved[n] for n in names})  # type: ignore[type-var]
