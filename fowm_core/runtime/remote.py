"""The two ends of a robot ↔ learner link without a shared disk (docs/two_hosts.md). Pure Python.

Episodes: the robot PC records locally (fowm_recorder, unchanged) and ``BagOutbox`` ships each
complete bag, one at a time, until the learner's host acknowledges it; the acknowledged bags are a
``BagLedger`` of their own (status "shipped", keyed by name + content SHA-256), so a restart on
either side re-sends only what was never acknowledged. ``BagInbox`` on the learner's host writes a
bag under a hidden temp directory, checks its content hash against the sender's and renames it
into the learner's bag directory: the learner (whose ledger is keyed the same way) never sees a
half-received bag, and a bag received twice is acknowledged again without a second copy.

Weights: ``checkpoint_files`` packs a checkpoint and its sidecar with the learner's signed
announcement (path = the bare file name: the planner resolves it in its own trusted store,
runtime.origin); ``WeightsInbox`` checks the signature and the tensor SHA-256, writes sidecar then
tensor atomically into the robot's store and prunes old ones. The planner then validates and swaps
exactly as on one host.

``LinkWatch``: when the peer was last heard, for "no learner heard for N s" on /diagnostics.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fowm_core.data import bag_cache
from fowm_core.errors import FowmError
from fowm_core.learning import checkpoints
from fowm_core.runtime import trust
from fowm_core.runtime.ledger import BagLedger, BagScanner, LedgerEntry
from fowm_core.runtime.transfer import TransferError, check_name, pack_files, unpack_files

SHIPPED = "shipped"
INCOMING_PREFIX = ".incoming-"


def bag_files(path: Path) -> dict[str, bytes]:
    """A bag directory's files by relative name (metadata.yaml, the .mcap)."""
    return {p.relative_to(path).as_posix(): p.read_bytes()
            for p in sorted(path.rglob("*")) if p.is_file()}


@dataclass
class Sending:
    name: str
    sha256: str
    attempt: int
    sent_s: float


class BagOutbox:
    """Robot side: the complete bags of ``bag_dir`` not yet acknowledged, one in flight at a time.

    ``ledger_path`` (default ``bag_dir/.link/shipped.json``) survives restarts. A bag is re-sent
    ``ack_timeout_s`` after its last send (a lost frame, a partition, a restarted receiver)."""

    def __init__(self, bag_dir: Path, ledger_path: Path | None = None,
                 ack_timeout_s: float = 15.0) -> None:
        self.bag_dir = Path(bag_dir)
        self.ledger = BagLedger(ledger_path or self.bag_dir / ".link" / "shipped.json")
        self.scanner = BagScanner(self.bag_dir)
        self.ack_timeout_s = ack_timeout_s
        self.sending: Sending | None = None
        self.sends = 0
        self._pending: list[tuple[Path, str, str]] = []

    def pending(self) -> list[tuple[Path, str, str]]:
        """[(path, name, sha256)] of complete bags not acknowledged yet (rescans the directory)."""
        self._pending = self.scanner.new_bags(self.ledger)
        return self._pending

    def next_send(self, now_s: float) -> tuple[str, dict[str, Any], bytes] | None:
        """(transfer id, meta, payload) of the bag to send now, or None (one in flight)."""
        s = self.sending
        if s is not None and now_s - s.sent_s < self.ack_timeout_s:
            return None
        todo = self.pending()
        if not todo:
            self.sending = None
            return None
        path, name, digest = todo[0]
        attempt = s.attempt + 1 if s is not None and s.name == name else 1
        try:
            payload = pack_files(bag_files(path))
        except OSError as err:                  # vanished: the next scan decides
            raise TransferError(f"bag {name} cannot be read for shipping: {err}") from err
        self.sending = Sending(name, digest, attempt, now_s)
        self.sends += 1
        return f"{name}#{attempt}", {"name": name, "sha256": digest}, payload

    def acked(self, name: str, sha256: str) -> bool:
        """Record an acknowledgement; True if it was new (an old or foreign ack changes nothing)."""
        digest = sha256
        if self.ledger.has(name, digest):
            return False
        if not any(n == name and d == digest for _, n, d in self.pending()):
            return False
        self.ledger.add(LedgerEntry(name, digest, SHIPPED, time_s=time.time()))
        if self.sending is not None and self.sending.name == name:
            self.sending = None
        return True

    @property
    def pending_count(self) -> int:
        """Bags not acknowledged at the last scan."""
        return len(self._pending)

    @property
    def shipped(self) -> int:
        return len([e for e in self.ledger.entries if e.status == SHIPPED])


class BagInbox:
    """Learner side: received bags into ``bag_dir`` atomically, content hash checked."""

    def __init__(self, bag_dir: Path) -> None:
        self.bag_dir = Path(bag_dir)
        self.bag_dir.mkdir(parents=True, exist_ok=True)
        self.received: list[str] = []            # bags written (not re-acknowledged ones)
        for stale in self.bag_dir.glob(f"{INCOMING_PREFIX}*"):     # a killed receiver's leftovers
            shutil.rmtree(stale, ignore_errors=True)

    def accept(self, meta: Mapping[str, Any], payload: bytes) -> dict[str, str]:
        """Write the bag (or find it already there, identical); returns the acknowledgement."""
        name, digest = meta.get("name"), meta.get("sha256")
        if not isinstance(name, str) or "/" in name or not isinstance(digest, str):
            msg = f"episode transfer names bag {str(name)[:80]!r} / {str(digest)[:80]!r}"
            raise TransferError(msg)
        check_name(name)
        final = self.bag_dir / name
        ack = {"name": name, "sha256": digest}
        if final.exists():
            have = bag_cache.bag_hash(final)
            if have != digest:
                msg = (f"bag {name} exists on this host with another content ({have[:12]}… vs "
                       f"{digest[:12]}…); not overwritten, not acknowledged")
                raise TransferError(msg)
            return ack                                # a re-send after a lost ack
        files = unpack_files(payload)
        tmp = Path(tempfile.mkdtemp(prefix=INCOMING_PREFIX, dir=self.bag_dir))
        try:
            for rel, data in files.items():
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                checkpoints.atomic_write(target, data)
            if bag_cache.bag_hash(tmp) != digest:
                msg = f"bag {name}: the received files do not hash to the sender's {digest[:12]}…"
                raise TransferError(msg)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.received.append(name)
        return ack


# -- weights ------------------------------------------------------------------------------------
def checkpoint_files(path: Path, announcement: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
    """(meta, payload) of a checkpoint transfer: the announcement in meta, tensor + sidecar."""
    path = Path(path)
    files = {path.name: path.read_bytes(),
             checkpoints.sidecar_path(path).name: checkpoints.sidecar_path(path).read_bytes()}
    return {"announcement": dict(announcement)}, pack_files(files)


class WeightsInbox:
    """Robot side: checkpoints received over the link, into the planner's trusted store."""

    def __init__(self, store: Path, key: bytes | None, keep: int = 3) -> None:
        self.store = Path(store)
        self.store.mkdir(parents=True, exist_ok=True)
        self.key, self.keep = key, keep

    def accept(self, meta: Mapping[str, Any], payload: bytes) -> dict[str, Any]:
        """Check and store; returns the announcement to hand to the planner (unchanged)."""
        note = meta.get("announcement")
        if not isinstance(note, dict):
            msg = "checkpoint transfer carries no announcement object"
            raise TransferError(msg)
        if self.key is not None and not (
                note.get("role") == trust.ROLE_LEARNER
                and trust.verify(self.key, note, note.get(trust.SIGNATURE))):
            msg = (f"checkpoint transfer for {str(note.get('path'))[:80]!r} is not signed by the "
                   "learner with the lab key (docs/trust.md); not stored")
            raise TransferError(msg)
        name = note.get("path")
        if not isinstance(name, str) or "/" in name or not name.endswith(checkpoints.SUFFIX):
            msg = (f"checkpoint transfer announces path {str(name)[:80]!r}; expected a bare "
                   f"file name ending {checkpoints.SUFFIX}")
            raise TransferError(msg)
        check_name(name)
        files = unpack_files(payload)
        side = checkpoints.sidecar_path(name).name
        if set(files) != {name, side}:
            msg = f"checkpoint transfer holds {sorted(files)}; expected {name} and {side}"
            raise TransferError(msg)
        if hashlib.sha256(files[name]).hexdigest() != note.get("sha256"):
            msg = f"checkpoint {name}: tensor bytes do not hash to the announced SHA-256"
            raise TransferError(msg)
        checkpoints.atomic_write(self.store / side, files[side])     # sidecar first, as the
        checkpoints.atomic_write(self.store / name, files[name])     # learner writes them
        # The signed announcement beside it: a restarted robot offers its newest checkpoint again.
        checkpoints.atomic_write(_announcement_path(self.store / name),
                                 json.dumps(note, sort_keys=True).encode())
        self._prune(keep=name)
        return note

    def newest_announcement(self) -> dict[str, Any] | None:
        """The stored announcement of the newest stored checkpoint (None: none), for the planner
        of a restarted robot PC; the planner checks it as any other offer."""
        found = sorted(self.store.glob(f"*{checkpoints.SUFFIX}"),
                       key=lambda p: (self._step(p) or -1, p.name))
        for path in reversed(found):
            try:
                note = json.loads(_announcement_path(path).read_text())
            except (OSError, ValueError):
                continue
            if isinstance(note, dict) and note.get("path") == path.name:
                return note
        return None

    def newest_step(self) -> int | None:
        """The highest step among the stored checkpoints' sidecars (None: none)."""
        steps = [self._step(p) for p in self.store.glob(f"*{checkpoints.SUFFIX}")]
        return max((s for s in steps if s is not None), default=None)

    @staticmethod
    def _step(path: Path) -> int | None:
        try:
            step = json.loads(checkpoints.sidecar_path(path).read_text())["meta"]["step"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return step if isinstance(step, int) else None

    def _prune(self, keep: str) -> None:
        found = sorted(self.store.glob(f"*{checkpoints.SUFFIX}"),
                       key=lambda p: (self._step(p) or -1, p.name))
        for path in found[: max(0, len(found) - self.keep)]:
            if path.name != keep:
                checkpoints.sidecar_path(path).unlink(missing_ok=True)
                _announcement_path(path).unlink(missing_ok=True)
                path.unlink(missing_ok=True)


def _announcement_path(path: Path) -> Path:
    return path.with_suffix(".announcement")


# -- the peer's heartbeat ------------------------------------------------------------------------
class LinkWatch:
    """When the peer (``role``) was last heard; ``state`` says for how long it has not been."""

    def __init__(self, role: str, timeout_s: float = 3.0, now_s: float | None = None) -> None:
        self.role, self.timeout_s = role, timeout_s
        self.started_s = time.monotonic() if now_s is None else now_s
        self.last_s: float | None = None
        self.peer: dict[str, Any] = {}
        self.partitions = 0                   # times the peer went silent after being heard
        self.longest_s = 0.0
        self._silent_since: float | None = None

    def heard(self, body: Mapping[str, Any], now_s: float) -> None:
        self.update(now_s)
        if self._silent_since is not None:
            self.longest_s = max(self.longest_s, now_s - self._silent_since)
        self._silent_since = None
        self.last_s, self.peer = now_s, dict(body)

    def update(self, now_s: float) -> None:
        if (self.last_s is not None and self._silent_since is None
                and now_s - self.last_s > self.timeout_s):
            self._silent_since, self.partitions = self.last_s, self.partitions + 1

    def alive(self, now_s: float) -> bool:
        return self.last_s is not None and now_s - self.last_s <= self.timeout_s

    def state(self, now_s: float) -> tuple[bool, str]:
        """(alive, text): "learner heard 0.4 s ago" or "no learner heard for 31 s"."""
        self.update(now_s)
        if self.alive(now_s):
            assert self.last_s is not None
            return True, f"{self.role} heard {now_s - self.last_s:.1f} s ago"
        since = self.started_s if self.last_s is None else self.last_s
        never = " (never heard since start)" if self.last_s is None else ""
        return False, f"no {self.role} heard for {now_s - since:.0f} s{never}"


def link_message(role: str, sender: str, **values: Any) -> str:
    """The /fowm/link heartbeat body."""
    if role not in ("robot", "learner"):
        msg = f"link role {role!r}; expected 'robot' or 'learner'"
        raise FowmError(msg)
    return json.dumps({"role": role, "sender": sender, **values}, sort_keys=True)


def parse_link(text: str) -> dict[str, Any]:
    try:
        body = json.loads(text)
    except ValueError as err:
        raise FowmError(f"link heartbeat is not JSON: {err}") from err
    if not isinstance(body, dict) or body.get("role") not in ("robot", "learner"):
        msg = f"link heartbeat {text[:80]!r} has no role 'robot' or 'learner'"
        raise FowmError(msg)
    return body
