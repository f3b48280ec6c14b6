"""The learner's memory of the bag directory: which bags it consumed, and which entries are bags.

``BagLedger`` is a JSON file, rewritten atomically (temp file + fsync + rename) after every change,
keyed by bag name + content SHA-256; one failed entry per bag name at most, so a bag that fails
again and again cannot fill it. ``BagScanner`` finds the complete bags the ledger has not seen
and reports once, then skips, what is not an episode bag (issue 11: a stray metadata.yaml at the
top of the bag directory once stopped all learning).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fowm_core.data import bag_cache
from fowm_core.errors import FowmError
from fowm_core.learning import checkpoints

log = logging.getLogger(__name__)

LEDGER_FORMAT = "fowm-bag-ledger/1"


# -- the ledger ----------------------------------------------------------------------------------
@dataclass
class LedgerEntry:
    name: str                  # bag directory name (relative to the watched directory)
    sha256: str                # bag_cache.bag_hash of its files
    status: str                # "ingested" or "failed"
    steps: int = 0             # transitions it added (ingested)
    success: bool = False
    detail: str = ""           # why it failed
    time_s: float = 0.0        # wall time of ingestion
    attempts: int = 1          # failed: contents of this name that failed (one entry per name)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.sha256}"


class BagLedger:
    """Which bags were ingested or refused; survives crashes (atomic rewrite on every change)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.entries: list[LedgerEntry] = []
        if self.path.exists():
            self.entries = self._load()
        self._keys = {e.key for e in self.entries}

    def _load(self) -> list[LedgerEntry]:
        try:
            data = json.loads(self.path.read_text())
            if data.get("format") != LEDGER_FORMAT:
                msg = f"format {data.get('format')!r}, expected {LEDGER_FORMAT!r}"
                raise ValueError(msg)
            return [LedgerEntry(**e) for e in data["entries"]]
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
            # Never start from an empty ledger silently: that would train on every bag twice.
            msg = (f"bag ledger {self.path} cannot be read ({err}); it is only ever replaced "
                   "atomically, so this file was edited or damaged by hand: restore it, or "
                   "delete it together with the learner's checkpoints to start over")
            raise FowmError(msg) from err

    def has(self, name: str, sha256: str) -> bool:
        return f"{name}@{sha256}" in self._keys

    def add(self, entry: LedgerEntry) -> None:
        """Append ``entry``; a failure of a name that failed before replaces that entry (same
        index, ``attempts`` + 1), so a bag rewritten again and again cannot fill the ledger."""
        if entry.key in self._keys:
            msg = f"bag {entry.name} ({entry.sha256[:12]}…) is in the ledger already"
            raise FowmError(msg)
        previous = self.failed_entry(entry.name) if entry.status == "failed" else None
        if previous is None:
            self.entries.append(entry)
        else:
            entry.attempts = previous.attempts + 1
            self._keys.discard(previous.key)
            self.entries[self.entries.index(previous)] = entry
        self._keys.add(entry.key)
        self.save()

    def failed_entry(self, name: str) -> LedgerEntry | None:
        return next((e for e in self.entries if e.name == name and e.status == "failed"), None)

    @property
    def ingested(self) -> list[LedgerEntry]:
        return [e for e in self.entries if e.status == "ingested"]

    @property
    def failed(self) -> list[LedgerEntry]:
        return [e for e in self.entries if e.status == "failed"]

    def save(self) -> None:
        text = json.dumps({"format": LEDGER_FORMAT,
                           "entries": [asdict(e) for e in self.entries]}, indent=1)
        atomic_write_text(self.path, text)


def atomic_write_text(path: Path, text: str) -> None:
    """temp file in the same directory → fsync → rename → fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoints.atomic_write(path, text.encode())


MAX_FAILED_ATTEMPTS = 3      # contents of one bag name that may fail before it is ignored


@dataclass
class BagScanner:
    """Finds complete bags under ``root`` that the ledger has not seen; hashes each bag once per
    change of its files (size, mtime), not on every poll.

    What is not an episode bag (a stray metadata.yaml at the top, other files, a directory
    without metadata.yaml) is reported once and skipped without hashing (``ignored``); so is a
    bag name whose contents failed ``MAX_FAILED_ATTEMPTS`` times. Nothing of this stops the
    bags beside it from being learned."""

    root: Path
    _hashes: dict[str, tuple[tuple[Any, ...], str]] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)      # name → why (reported once)

    def new_bags(self, ledger: BagLedger) -> list[tuple[Path, str, str]]:
        """[(path, name, sha256)] of bags not in the ledger, in name order."""
        if not self.root.is_dir():
            return []
        try:
            found, others = bag_cache.scan_bag_dir(self.root)
        except OSError as err:                 # an entry vanished mid-scan: the next poll sees
            log.warning("cannot scan bag directory %s: %s", self.root, err)
            return []
        for name, why in others.items():
            self._ignore(name, why)
        out = []
        for path in found:
            name = path.relative_to(self.root).as_posix()
            failed = ledger.failed_entry(name)
            if failed is not None and failed.attempts >= MAX_FAILED_ATTEMPTS:
                self._ignore(name, f"failed {failed.attempts} times, last: {failed.detail}")
                continue
            try:
                digest = self._hash(path, name)
            except OSError as err:          # removed while we looked: the next poll decides
                log.warning("cannot hash bag %s: %s", path, err)
                continue
            if not ledger.has(name, digest):
                out.append((path, name, digest))
        return out

    def _ignore(self, name: str, why: str) -> None:
        if name not in self.ignored:
            self.ignored[name] = why
            log.warning("ignoring %s in %s: %s", name, self.root, why)

    def _hash(self, path: Path, name: str) -> str:
        signature = tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                 for p in path.rglob("*") if p.is_file()))
        cached = self._hashes.get(name)
        if cached is not None and cached[0] == signature:
            return cached[1]
        digest = bag_cache.bag_hash(path)
        self._hashes[name] = (signature, digest)
        return digest
