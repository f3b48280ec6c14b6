"""Transfer frames for the two-host link rows (fowm_core.runtime.transfer): the legitimate
transfers a link rig feeds (a checkpoint signed with the lab key, a bag) and the faults of a
frame topic (/fowm/weights_blob, /fowm/episode_blob), one frame per payload message:
- malformed: undecodable CDR, a frame shorter than its prefix, the wrong magic, a header that is
  not JSON, a slice past the announced size, out-of-order frames of a transfer whose frames
  disagree with each other;
- hostile: a checkpoint signed with another key (forged HMAC) or a bag whose files do not hash to
  the announced SHA-256, a complete transfer whose bytes do not match its SHA-256, a claim of
  2 GiB, a path that leaves the directory;
- flooding: a second publisher at 500 Hz, each frame opening a new 64 KiB transfer;
- stale/future (frames carry no stamps): replays, of a transfer's frames and of an older,
  correctly signed checkpoint (the planner refuses the rollback: its own rows).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from std_msgs.msg import UInt8MultiArray

from benchmarks import fault_inputs as fi
from fowm_core.contract import topics
from fowm_core.data import bag_cache
from fowm_core.runtime import trust
from fowm_core.runtime.transfer import MAGIC, frames, pack_files, unpack_files

__all__ = ["unpack_files"]
KINDS = {topics.WEIGHTS_BLOB: "weights", topics.EPISODE_BLOB: "episode"}
CHUNK, WHOLE = 1024, 1 << 16        # the rigs' transfers: 3 frames; faults: mostly 1


def blob(frame: bytes) -> UInt8MultiArray:
    msg = UInt8MultiArray()
    msg.data = frame
    return msg


def checkpoint(key: bytes, step: int, size: int = 2500) -> tuple[dict[str, Any], bytes]:
    """(meta, payload) of a checkpoint transfer as the learner's shipper sends it."""
    name = f"step_{step:08d}.safetensors"
    tensor = hashlib.sha256(f"{name}{step}".encode()).digest() * (size // 32)
    sidecar = json.dumps({"meta": {"step": step}}).encode()
    note = trust.signed(key, path=name, sha256=hashlib.sha256(tensor).hexdigest(), step=step,
                        task="lift", obs_mode="rgb", role=trust.ROLE_LEARNER, sender="fault_rig")
    files = {name: tensor, name.replace(".safetensors", ".json"): sidecar}
    return {"announcement": note}, pack_files(files)


def bag(name: str, size: int = 2500) -> tuple[dict[str, Any], bytes]:
    """(meta, payload) of a bag transfer: its files and their bag_cache hash."""
    files = {"metadata.yaml": f"name: {name}\n".encode(),
             f"{name}_0.mcap": hashlib.sha256(name.encode()).digest() * (size // 32)}
    with tempfile.TemporaryDirectory() as tmp:
        for rel, data in files.items():
            (Path(tmp) / rel).write_bytes(data)
        digest = bag_cache.bag_hash(tmp)
    return {"name": name, "sha256": digest}, pack_files(files)


def transfer(kind: str, transfer_id: str, meta: dict[str, Any], payload: bytes,
             chunk: int = CHUNK) -> list[bytes]:
    return list(frames(kind, transfer_id, payload, meta, chunk))


def _raw_header(head: dict[str, Any], body: bytes = b"x" * 16) -> bytes:
    text = json.dumps(head).encode()
    return struct.pack(">4sI", MAGIC, len(text)) + text + body


def _header(kind: str, transfer_id: str, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "id": transfer_id, "index": 0, "count": 1, "offset": 0,
            "total": 16, "sha256": "0" * 64, "meta": {}, **fields}


def _payloads(items: list[bytes]) -> list[Callable[[int], Any]]:
    return [lambda ns, f=f: f if f is fi.GARBAGE_CDR else blob(f) for f in items]


def blob_faults(topic: str) -> dict[str, fi.Fault]:
    kind = KINDS[topic]
    other_key = os.urandom(32)                  # not the lab's: a forged HMAC
    if kind == "weights":
        forged = transfer(kind, "forged#1", *checkpoint(other_key, 900), chunk=WHOLE)
        meta, payload = checkpoint(other_key, 901)
        meta["announcement"]["path"] = "../evil.safetensors"
        escape = transfer(kind, "escape#1", meta, payload, WHOLE)
        # (The weights rig replays its own older, lab-signed checkpoint: replays().)
        stale = transfer(kind, "step_00000001.safetensors#9", *checkpoint(other_key, 1), WHOLE)
        forged_label = "a checkpoint signed with another key"
    else:
        meta, payload = bag("ep_forged")
        forged = transfer(kind, "ep_forged#1", {**meta, "sha256": "ab" * 32}, payload, WHOLE)
        escape = transfer(kind, "escape#1", {**bag("x")[0], "name": "../escape"}, bag("x")[1],
                          WHOLE)
        stale = transfer(kind, "ep_legit_00000#1", *bag("ep_legit_00000"), WHOLE)
        forged_label = "a bag whose files do not hash to the announced SHA-256"
    meta, payload = (checkpoint(other_key, 902) if kind == "weights" else bag("ep_badsha"))
    bad_sha = [f.replace(hashlib.sha256(payload).hexdigest().encode(), b"cd" * 32)
               for f in transfer(kind, "badsha#1", meta, payload, WHOLE)]
    ooo = transfer(kind, "ooo#1", *(checkpoint(other_key, 903) if kind == "weights"
                                    else bag("ep_ooo")))
    disagree = _raw_header(_header(kind, "ooo#1", index=0, count=len(ooo) + 1,
                                   total=len(ooo) * CHUNK + 1))
    malformed = [fi.GARBAGE_CDR, b"FW", b"NOPE" + bytes(40),
                 struct.pack(">4sI", MAGIC, 6) + b"{oops}",
                 _raw_header(_header(kind, "past#1", offset=10, total=16)), ooo[-1], disagree]
    hostile = [*forged, *bad_sha, _raw_header(_header(kind, "huge#1", total=2**31)), *escape]
    ids = itertools.count()
    return {
        "malformed": fi.Fault("undecodable CDR, 2-byte frame, wrong magic, header not JSON, a "
                              "slice past the announced size, out-of-order frames that disagree",
                              payloads=_payloads(malformed)),
        "hostile": fi.Fault(f"{forged_label}, a bad SHA-256, a 2 GiB claim, a path out of the "
                            "directory", payloads=_payloads(hostile)),
        "flooding": fi.Fault("a second publisher at 500 Hz, each frame a new 64 KiB transfer",
                             flood=lambda ns: blob(_raw_header(_header(
                                 kind, f"flood#{next(ids)}", count=64, total=64 << 10),
                                 b"f" * 1024)), flood_hz=500.0),
        "stale/future": fi.Fault("(unstamped) replayed frames"
                                 + (" of an older checkpoint, correctly signed"
                                    if kind == "weights" else " of a bag already received"),
                                 payloads=_payloads(stale))}


def replays(kind: str, frames_list: list[bytes], label: str) -> fi.Fault:
    """A link rig's stale class: frames of its own earlier transfers, sent again."""
    return fi.Fault(f"(unstamped) replayed frames: {label}", payloads=_payloads(frames_list))
