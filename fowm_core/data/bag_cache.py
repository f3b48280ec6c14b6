"""Finding episode bags, hashing their content, and the per-episode .npz cache (arrays only).

The cache never pickles: episodes are stored as plain arrays plus a JSON string, and read back
with ``allow_pickle=False``. Writes are atomic (temp file + rename); an unreadable cache entry
is ignored and rebuilt from its bag.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fowm_core.data.episode import Episode
from fowm_core.errors import FowmError

log = logging.getLogger(__name__)


def find_bags(root: str | Path) -> list[Path]:
    """Every rosbag2 directory (one holding metadata.yaml) at or under ``root``, sorted."""
    root = Path(root)
    if (root / "metadata.yaml").is_file():
        return [root]
    return sorted(p.parent for p in root.rglob("metadata.yaml") if not _hidden(p, root))


def scan_bag_dir(root: str | Path) -> tuple[list[Path], dict[str, str]]:
    """A watched bag directory (the recorder's output): its episode bags and what else is there.

    Unlike ``find_bags``, ``root`` itself is never a bag: a stray metadata.yaml at its top must
    not turn the whole directory (the learner's work dir included) into one "bag" whose hash
    changes with every ledger write (issue 11). Returns (bags sorted, {top-level name: why it is
    not a bag}); hidden entries (temp dirs being written, the learner's .learner) are skipped.
    """
    root = Path(root)
    bags = sorted(p.parent for p in _metadata_files(root) if p.parent != root)
    tops = {b.relative_to(root).parts[0] for b in bags}
    others: dict[str, str] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name in tops:
            continue
        if entry.name == "metadata.yaml":
            others[entry.name] = ("a metadata.yaml at the top of the bag directory: episode bags "
                                  "are its subdirectories, the directory itself is not one")
        elif entry.is_dir():
            others[entry.name] = "a directory without metadata.yaml (not a rosbag2 bag, or one " \
                                 "still being written)"
        else:
            others[entry.name] = "a file, not a bag directory"
    return bags, others


def _metadata_files(root: Path) -> Iterator[Path]:
    """metadata.yaml files below ``root``, never entering hidden directories: a temp directory
    renamed or removed while we look (the robot link's .incoming-*) must not fail the scan."""
    for folder, dirs, files in os.walk(root):     # os.walk skips entries that vanish
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if "metadata.yaml" in files:
            yield Path(folder) / "metadata.yaml"


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def bag_hash(path: str | Path) -> str:
    """SHA-256 over a bag's files (names and contents): the cache key of its episode."""
    h = hashlib.sha256()
    path = Path(path)
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def save_npz(file: Path, episode: Episode) -> None:
    info = {k: v for k, v in episode.info.items() if k != "stamps_ns"}
    arrays = {f"obs__{k}": v for k, v in episode.obs.items()}
    arrays.update(action=episode.action, reward=episode.reward,
                  stamps_ns=np.asarray(episode.info.get("stamps_ns", []), dtype=np.int64),
                  flags=np.array([episode.terminal, episode.success]),
                  info_json=np.array(json.dumps(info, default=str)))
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, file)
    except OSError as err:       # a cache that cannot be written only costs speed
        tmp.unlink(missing_ok=True)
        log.warning("cannot write episode cache %s: %s", file, err)


def load_npz(file: Path) -> Episode | None:
    try:
        with np.load(file, allow_pickle=False) as z:
            obs = {k.removeprefix("obs__"): z[k] for k in z.files if k.startswith("obs__")}
            info = json.loads(str(z["info_json"]))
            info["stamps_ns"] = z["stamps_ns"]
            terminal, success = (bool(v) for v in z["flags"])
            return Episode(obs, z["action"], z["reward"], terminal=terminal, success=success,
                           info=info)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, FowmError) as err:
        log.warning("ignoring unreadable episode cache %s (%s); re-reading the bag", file, err)
        return None
