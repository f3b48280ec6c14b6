"""Where weights may come from (docs/trust.md): the trusted directory, bounded regular files, the
mandatory SHA-256 of the bytes actually read, anti-rollback and the task/obs-mode labels.

``TrustPolicy.check_announcement`` checks a learner's announcement (signature with role "learner",
field types, step above the highest step ever live, labels); ``read_checkpoint`` then reads the
tensor file and its sidecar once, bounded and without blocking, and builds the model from exactly
the bytes whose hash was checked, so a file replaced after the check can never be loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from torch import nn

from fowm_core.config import FowmConfig
from fowm_core.errors import CheckpointError, ConfigError
from fowm_core.learning import checkpoints
from fowm_core.learning.checkpoint_file import read_regular_file
from fowm_core.model import WorldModel
from fowm_core.runtime.trust import (
    ROLE_LEARNER,
    SIGNATURE,
    TrustConfig,
    TrustError,
    load_key,
    verify,
)

_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_SIDECAR_BYTES = 8 << 20


@dataclass(frozen=True)
class Announced:
    """A learner announcement that passed the signature, field and rollback checks."""

    path: Path
    sha256: str
    step: int
    task: str
    obs_mode: str
    sender: str


@dataclass(frozen=True)
class TrustedCheckpoint:
    """Tensor bytes and sidecar read once, checked, and the model built from those very bytes."""

    announced: Announced
    model: nn.Module
    meta: dict[str, Any]


@dataclass(frozen=True)
class TrustPolicy:
    """``key`` None: signatures are not checked (TrustConfig.require_signature false)."""

    trusted_dir: Path
    max_bytes: int
    key: bytes | None

    @classmethod
    def from_config(cls, cfg: TrustConfig) -> TrustPolicy:
        """The policy this config describes: loads (and checks) the key file now."""
        if not cfg.trusted_dir:
            msg = ("trust.trusted_dir is empty: set it to the learner's checkpoint directory "
                   "(weights are accepted only from there)")
            raise ConfigError(msg)
        key = None
        if cfg.require_signature:
            if not cfg.key_file:
                msg = ("trust.require_signature is true but trust.key_file is empty: create a key "
                       "with `fowm keygen PATH` and give the same PATH to the learner and the "
                       "planner, or set trust.require_signature:=false (insecure: anyone on the "
                       "DDS domain may then choose the weights)")
                raise ConfigError(msg)
            key = load_key(cfg.key_file)
        return cls(Path(cfg.trusted_dir), cfg.max_checkpoint_bytes, key)


    def check_announcement(self, body: Mapping[str, Any], *, step_floor: int | None,
                           task: str, obs_mode: str) -> Announced:
        """Signature (role "learner"), field types, SHA-256 present, newer than ``step_floor``
        (the highest step ever live: a rollback is the planner's own decision), labels."""
        if not isinstance(body, Mapping):
            msg = f"weights announcement is a {type(body).__name__}, expected a JSON object"
            raise TrustError(msg)
        if self.key is not None and not verify(self.key, body, body.get(SIGNATURE)):
            why = "unsigned" if SIGNATURE not in body else "its signature does not verify"
            msg = (f"weights announcement for {str(body.get('path'))[:120]!r} is {why}: only the "
                   "learner holding the lab key may announce weights (docs/trust.md)")
            raise TrustError(msg)
        if self.key is not None and body.get("role") != ROLE_LEARNER:
            msg = (f"weights announcement has role {body.get('role')!r}; only {ROLE_LEARNER!r} "
                   "may announce weights")
            raise TrustError(msg)
        sha, step = body.get("sha256"), body.get("step")
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            msg = (f"weights announcement has sha256 {str(sha)[:80]!r}; a 64-hex-digit SHA-256 "
                   "of the tensor file is mandatory")
            raise TrustError(msg)
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            msg = f"weights announcement has step {str(step)[:40]!r}; expected an integer >= 0"
            raise TrustError(msg)
        check_step_floor(step, step_floor)
        path = body.get("path")
        if not isinstance(path, str) or not path:
            msg = f"weights announcement has path {str(path)[:80]!r}; expected a file path"
            raise TrustError(msg)
        ann = Announced(Path(path), sha, step, str(body.get("task", task)),
                        str(body.get("obs_mode", obs_mode)), str(body.get("sender", "")))
        check_labels(ann.task, ann.obs_mode, task, obs_mode, what="announcement")
        return ann

    def checked_path(self, path: str | Path) -> Path:
        """The real path, if it lies inside trusted_dir and is a regular file within max_bytes.
        A relative path is taken inside trusted_dir: a learner on another host announces the bare
        file name, which the planner's host received into its own store (runtime.remote)."""
        path = Path(path)
        return _checked(path if path.is_absolute() else self.trusted_dir / path,
                        self.trusted_dir, self.max_bytes)

    def read_checkpoint(self, ann: Announced, cfg: FowmConfig) -> TrustedCheckpoint:
        """Read the announced tensor file and its sidecar (bounded), require the announced SHA-256
        of the bytes read, the sidecar's agreement and the running planner's labels, and build the
        model from those bytes; the file is never opened again (no swap after the check)."""
        real = self.checked_path(ann.path)
        data = read_bounded(real, self.max_bytes)
        digest = hashlib.sha256(data).hexdigest()
        if digest != ann.sha256:
            msg = (f"checkpoint {real} has SHA-256 {digest[:12]}… but was announced as "
                   f"{ann.sha256[:12]}…: it changed after the announcement; refused")
            raise TrustError(msg)
        side = _checked(checkpoints.sidecar_path(real), self.trusted_dir, MAX_SIDECAR_BYTES)
        sidecar = _sidecar(side, digest, len(data))
        meta = sidecar.get("meta", {})
        if meta.get("step") != ann.step:
            msg = (f"checkpoint {real.name} records step {meta.get('step')!r} but was announced "
                   f"as step {ann.step}; refused")
            raise TrustError(msg)
        spec = meta.get("observation_spec", {})
        check_labels(str(meta.get("task")), str(spec.get("modality")), cfg.task,
                     cfg.model.modality.value, what=f"checkpoint {real.name}")
        return TrustedCheckpoint(ann, model_from_bytes(real, data, meta, cfg), meta)


def check_step_floor(step: int, step_floor: int | None) -> None:
    """Anti-rollback: a candidate's step must exceed the highest step that was ever live."""
    if step_floor is not None and step <= step_floor:
        msg = (f"weights announcement has step {step}, not above {step_floor} (the newest "
               "weights that were live): a rollback is refused; the planner rolls back itself")
        raise TrustError(msg)


def check_labels(task: str, obs_mode: str, running_task: str, running_obs_mode: str, *,
                 what: str) -> None:
    if (task, obs_mode) != (running_task, running_obs_mode):
        msg = (f"{what} is labelled task={task!r}, obs_mode={obs_mode!r} but this planner runs "
               f"task={running_task!r}, obs_mode={running_obs_mode!r}; refused")
        raise TrustError(msg)


def _checked(path: Path, trusted_dir: Path, max_bytes: int) -> Path:
    root = trusted_dir.resolve()
    real = path.resolve()
    if not real.is_relative_to(root):
        msg = (f"weights path {path} (really {real}) lies outside the trusted directory {root}; "
               "only the learner's checkpoint directory is accepted")
        raise TrustError(msg)
    try:
        st = real.stat()
    except OSError as err:
        msg = f"weights path {real} cannot be inspected: {err.strerror}"
        raise TrustError(msg) from err
    if not stat.S_ISREG(st.st_mode):
        msg = f"weights path {real} is not a regular file (a FIFO, device or directory); refused"
        raise TrustError(msg)
    if st.st_size > max_bytes:
        msg = (f"weights file {real} has {st.st_size} bytes; the limit is {max_bytes} "
               "(trust.max_checkpoint_bytes)")
        raise TrustError(msg)
    return real


def read_bounded(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most max_bytes (checkpoint_file.read_regular_file:
    never blocks on a FIFO, never reads past the bound), refusals as TrustError."""
    try:
        return read_regular_file(path, max_bytes)
    except CheckpointError as err:
        raise TrustError(str(err)) from err
    except OSError as err:
        msg = f"cannot open {path}: {err.strerror}"
        raise TrustError(msg) from err


def _sidecar(path: Path, digest: str, size: int) -> dict[str, Any]:
    try:
        sidecar = json.loads(read_bounded(path, MAX_SIDECAR_BYTES))
    except ValueError as err:
        msg = f"checkpoint sidecar {path} is not JSON ({err}); refused"
        raise TrustError(msg) from err
    if not isinstance(sidecar, dict) or sidecar.get("format") != checkpoints.FORMAT:
        msg = f"{path} is not a fowm checkpoint sidecar; refused"
        raise TrustError(msg)
    if sidecar.get("tensor_sha256") != digest or sidecar.get("tensor_bytes") != size:
        msg = f"sidecar {path.name} describes another tensor file (hash or size differ); refused"
        raise TrustError(msg)
    if not isinstance(sidecar.get("meta", {}), dict):
        msg = f"sidecar {path.name} has a non-object meta; refused"
        raise TrustError(msg)
    return sidecar


def model_from_bytes(path: Path, data: bytes, meta: Mapping[str, Any],
                     cfg: FowmConfig) -> nn.Module:
    """A WorldModel for ``cfg`` from safetensors bytes already checked (never unpickled)."""
    try:
        tensors = st_load(data)
    except SafetensorError as err:
        msg = f"checkpoint {path} is not a valid safetensors file ({err})"
        raise TrustError(msg) from err
    if "config" in meta:
        try:
            saved = FowmConfig.from_dict(meta["config"])
        except (ValueError, TypeError, KeyError) as err:
            msg = f"checkpoint {path} holds a config this fowm cannot build: {err}"
            raise TrustError(msg) from err
        checkpoints.check_model_config(path, saved.model, cfg.model)
    model = WorldModel(cfg.model)
    expected = {f"model.{k}": (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    ours = {k: v for k, v in tensors.items() if k.startswith("model.")}
    checkpoints.check_expected(path, ours, expected)
    bad = [k for k, v in ours.items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        msg = f"checkpoint {path} has non-finite values in {', '.join(sorted(bad)[:5])}"
        raise TrustError(msg)
    checkpoints.restore_agent(ours, {}, model)
    return model.eval()
