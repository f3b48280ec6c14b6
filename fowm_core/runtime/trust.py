"""Which weights may drive the arm: authenticity, origin and labels (docs/trust.md).

This module: the lab key, announcement signatures and the config of every layer. The layers,
checked by the planner before a checkpoint reaches the behavioural gate (gate.py):
  1. signature: HMAC-SHA256 with a lab key that only the learner's and the planner's user can read,
     over a canonical JSON of every announcement field (path, tensor SHA-256, step, task, obs mode,
     role, sender). The planner's own "live" message is signed with role "planner-live", so a bag
     can tell it from a forgery (``authentic_live``).
  2. origin (origin.py): ``TrustPolicy.read_checkpoint`` takes only regular files whose real
     path lies in the trusted directory, reads at most ``max_bytes`` without ever blocking (FIFO,
     device), checks the SHA-256 of the bytes actually read, and builds the model from them;
  3. anti-rollback (step above the highest step ever live) and labels (task, obs mode).
Pure Python: no ROS. ``generate_key`` backs ``fowm keygen``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fowm_core.config import FowmConfig
from fowm_core.errors import CheckpointError, ConfigError
from fowm_core.runtime.control import param_meta as _p
from fowm_core.runtime.gate import GateConfig, MonitorConfig

KEY_BYTES = 32
SIGNATURE = "signature"
ROLE_LEARNER = "learner"
ROLE_PLANNER_LIVE = "planner-live"
ROLES = (ROLE_LEARNER, ROLE_PLANNER_LIVE)
SIGNED_FIELDS = ("path", "sha256", "step", "task", "obs_mode", "role", "sender")
# Domain separation: a MAC made for this message kind can never verify as another kind's.
_CONTEXT = b"fowm/weights/v1\n"


class TrustError(CheckpointError):
    """Weights or a message that must not be trusted (the live weights stay)."""


@dataclass(frozen=True)
class TrustConfig:
    """Everything the planner needs to decide which weights may act (docs/trust.md).

    ``require_signature=False`` is the documented insecure opt-out for local experiments on a
    private machine: every other layer (directory, bounded files, SHA-256, rollback, labels,
    gate, post-swap rollback) still applies, but anyone on the DDS domain can then pick which of
    the trusted directory's checkpoints acts.
    """

    key_file: str = field(default="", metadata=_p(
        "HMAC key shared by learner and planner (mode 0600; create it with `fowm keygen PATH`)"))
    require_signature: bool = field(default=True, metadata=_p(
        "refuse unsigned or badly signed announcements; false is insecure (local experiments)"))
    trusted_dir: str = field(default="", metadata=_p(
        "checkpoints are accepted only from inside this directory (symlinks resolved)"))
    max_checkpoint_bytes: int = field(default=512 << 20, metadata=_p(
        "largest tensor file accepted, in bytes", 1, 2**40))
    gate: GateConfig = field(default_factory=GateConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    def __post_init__(self) -> None:
        if self.max_checkpoint_bytes < 1:
            msg = (f"trust.max_checkpoint_bytes={self.max_checkpoint_bytes} is invalid: expected "
                   ">= 1 (a checkpoint of the paper preset is ~20 MB; 512 MiB is the default)")
            raise ConfigError(msg)
        if not isinstance(self.gate, GateConfig) or not isinstance(self.monitor, MonitorConfig):
            msg = (f"trust.gate / trust.monitor must be GateConfig / MonitorConfig, got "
                   f"{type(self.gate).__name__} / {type(self.monitor).__name__}")
            raise ConfigError(msg)


# -- the key -------------------------------------------------------------------------------------
def generate_key(path: str | Path) -> Path:
    """Write KEY_BYTES random bytes, hex-encoded, with mode 0600, atomically; never overwrites
    (a changed key would silently stop every swap until both sides restart)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)               # mkstemp's 0600 already; explicit, whatever the umask
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(KEY_BYTES) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)                         # atomic, and fails if path exists
    except FileExistsError:
        msg = (f"key file {path} exists already; remove it first to make a new key (then "
               "restart learner and planner)")
        raise TrustError(msg) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def load_key(path: str | Path) -> bytes:
    """The key in ``path``; refuses what others could read or replace, or a short key."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as err:
        msg = (f"cannot open key file {path} ({err.strerror}); create one with `fowm keygen "
               f"{path}` (a symlink is refused: point key_file at the file itself)")
        raise TrustError(msg) from err
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            msg = f"key file {path} is not a regular file; create one with `fowm keygen {path}`"
            raise TrustError(msg)
        if st.st_mode & 0o077:
            msg = (f"key file {path} has mode {stat.S_IMODE(st.st_mode):o}: group or others may "
                   f"read it; run `chmod 600 {path}`")
            raise TrustError(msg)
        if st.st_uid != os.geteuid():
            msg = (f"key file {path} belongs to uid {st.st_uid}, not to this process's uid "
                   f"{os.geteuid()}; run learner and planner as its owner or `chown` it")
            raise TrustError(msg)
        raw = os.read(fd, 4096).strip()
    finally:
        os.close(fd)
    try:
        key = bytes.fromhex(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = raw                                   # a raw (non-hex) key is fine if long enough
    if len(key) < KEY_BYTES:
        msg = (f"key file {path} holds a {len(key)}-byte key; at least {KEY_BYTES} are needed: "
               f"remove it and run `fowm keygen {path}`")
        raise TrustError(msg)
    return key


# -- signatures ----------------------------------------------------------------------------------
def canonical(fields: Mapping[str, Any]) -> bytes:
    """The signed bytes: every field but the signature, sorted, compact, ASCII, no NaN."""
    missing = [k for k in SIGNED_FIELDS if k not in fields]
    if missing:
        msg = f"announcement lacks {', '.join(missing)}; a signed announcement has {SIGNED_FIELDS}"
        raise TrustError(msg)
    body = {k: v for k, v in fields.items() if k != SIGNATURE}
    try:
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False)
    except (TypeError, ValueError) as err:
        msg = f"announcement fields are not plain JSON ({err})"
        raise TrustError(msg) from err
    return _CONTEXT + text.encode("ascii")


def sign(key: bytes, fields: Mapping[str, Any]) -> str:
    """HMAC-SHA256 (hex) over ``canonical(fields)``."""
    return hmac.new(key, canonical(fields), hashlib.sha256).hexdigest()


def verify(key: bytes, fields: Mapping[str, Any], signature: object) -> bool:
    """True only for the exact fields ``sign`` signed with this key (constant-time compare)."""
    if not isinstance(signature, str) or not isinstance(fields, Mapping):
        return False
    try:
        expected = sign(key, fields)
    except TrustError:
        return False
    return hmac.compare_digest(expected, signature)


def signed(key: bytes | None, **fields: Any) -> dict[str, Any]:
    """The announcement body: ``fields`` plus their signature (none without a key)."""
    body = dict(fields)
    if key is not None:
        body[SIGNATURE] = sign(key, body)
    return body


def announcement(key: bytes | None, *, path: str | Path, sha256: str, step: int | None,
                 cfg: FowmConfig, sender: str, role: str = ROLE_LEARNER,
                 **extra: Any) -> dict[str, Any]:
    """The signed /fowm/weights body: the learner's announcement of a checkpoint (role
    "learner"), or with role ROLE_PLANNER_LIVE and live=True the planner's own live message."""
    if role not in ROLES:
        msg = f"role {role!r} is not one of {ROLES}"
        raise TrustError(msg)
    return signed(key, path=str(path), sha256=sha256, step=step, task=cfg.task,
                  obs_mode=cfg.model.modality.value, role=role, sender=sender, **extra)


def authentic_live(key: bytes, body: Mapping[str, Any]) -> bool:
    """For the bag side: is this /fowm/weights message the planner's own "live" message?"""
    return (isinstance(body, Mapping) and body.get("role") == ROLE_PLANNER_LIVE
            and verify(key, body, body.get(SIGNATURE)))
