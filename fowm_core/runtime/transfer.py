"""Files between two hosts over a topic of bytes (docs/two_hosts.md): framing, bounded reassembly.

A transfer is one payload (a checkpoint, a bag) cut into frames; each frame carries a small JSON
header (kind, transfer id, index, count, offset, total size, SHA-256 of the whole payload, the
sender's ``meta``) and a slice of the payload:

    b"FWX1" | uint32 big-endian header length | header JSON (UTF-8) | payload slice

``Reassembler`` rebuilds one transfer at a time in a buffer of the announced size, refused above
``max_bytes`` (memory stays bounded whatever a peer sends); a transfer with no frame for
``timeout_s`` is dropped, and so is one a newer transfer id supersedes (the sender gave it up or
restarted). A payload is handed on only complete and with the announced SHA-256; a half-received
one never leaves this module. ``pack_files``/``unpack_files`` put several named files (a bag's
metadata.yaml and .mcap, a checkpoint and its sidecar) into one payload. Pure Python: no ROS.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from fowm_core.errors import FowmError

MAGIC = b"FWX1"
_HEAD = struct.Struct(">4sI")
MAX_HEADER_BYTES = 64 << 10
MAX_FILES = 64
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"[A-Za-z0-9_.:#/@+-]{1,200}")


class TransferError(FowmError):
    """A frame or payload that does not follow the transfer format; the transfer is dropped."""


@dataclass(frozen=True)
class Header:
    kind: str
    id: str
    index: int
    count: int
    offset: int
    total: int
    sha256: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    def same_transfer(self, other: Header) -> bool:
        return (self.kind, self.id, self.count, self.total, self.sha256, dict(self.meta)) == (
            other.kind, other.id, other.count, other.total, other.sha256, dict(other.meta))


@dataclass(frozen=True)
class Completed:
    """A whole payload whose SHA-256 matched the announced one."""

    kind: str
    id: str
    meta: Mapping[str, Any]
    payload: bytes
    seconds: float = 0.0          # first frame received → last frame received


def frames(kind: str, transfer_id: str, payload: bytes, meta: Mapping[str, Any] | None = None,
           chunk_bytes: int = 512 << 10) -> Iterator[bytes]:
    """The frames of one transfer, in order (an empty payload is one empty frame)."""
    if chunk_bytes < 1:
        msg = f"chunk_bytes is {chunk_bytes}; expected at least 1"
        raise TransferError(msg)
    digest = hashlib.sha256(payload).hexdigest()
    count = max(1, -(-len(payload) // chunk_bytes))
    view = memoryview(payload)
    for index in range(count):
        offset = index * chunk_bytes
        head = json.dumps({"kind": kind, "id": transfer_id, "index": index, "count": count,
                           "offset": offset, "total": len(payload), "sha256": digest,
                           "meta": dict(meta or {})}, sort_keys=True).encode()
        yield _HEAD.pack(MAGIC, len(head)) + head + view[offset:offset + chunk_bytes].tobytes()


def parse_frame(data: bytes | memoryview) -> tuple[Header, memoryview]:
    """Header and payload slice of one frame; TransferError for anything malformed."""
    view = memoryview(data)
    if len(view) < _HEAD.size:
        msg = f"frame of {len(view)} bytes is shorter than its {_HEAD.size}-byte prefix"
        raise TransferError(msg)
    magic, size = _HEAD.unpack_from(view)
    if magic != MAGIC:
        msg = f"frame starts with {bytes(magic)!r}, expected {MAGIC!r} (not a fowm transfer)"
        raise TransferError(msg)
    if size > MAX_HEADER_BYTES or _HEAD.size + size > len(view):
        msg = f"frame header of {size} bytes does not fit (frame {len(view)} bytes)"
        raise TransferError(msg)
    try:
        raw = json.loads(bytes(view[_HEAD.size:_HEAD.size + size]))
        header = Header(**{k: raw[k] for k in ("kind", "id", "index", "count", "offset", "total",
                                               "sha256", "meta")})
    except (ValueError, KeyError, TypeError) as err:
        msg = f"frame header is not the expected JSON object ({err})"
        raise TransferError(msg) from err
    body = view[_HEAD.size + size:]
    ints = (header.index, header.count, header.offset, header.total)
    if (not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints)
            or not isinstance(header.kind, str) or not isinstance(header.id, str)
            or not _ID.fullmatch(header.id) or not isinstance(header.meta, dict)
            or not isinstance(header.sha256, str) or not _SHA256.fullmatch(header.sha256)):
        msg = (f"frame header has bad fields (id {str(header.id)[:60]!r}, index {header.index!r}, "
               f"count {header.count!r}, offset {header.offset!r}, total {header.total!r})")
        raise TransferError(msg)
    if header.index >= header.count or header.offset + len(body) > header.total:
        msg = (f"frame {header.index}/{header.count} of transfer {header.id} covers bytes "
               f"{header.offset}..{header.offset + len(body)} of {header.total}")
        raise TransferError(msg)
    return header, body


@dataclass
class _Partial:
    header: Header
    buffer: bytearray
    seen: set[int]
    received: int
    last_s: float
    first_s: float


class Reassembler:
    """One transfer at a time, in at most ``max_bytes`` of memory (module docstring).

    ``feed`` returns a ``Completed`` when a frame completes a transfer, else None; it raises
    TransferError when a frame or the finished payload is refused (the transfer is dropped and
    its later frames are ignored). ``expire`` drops a transfer that went quiet."""

    def __init__(self, kind: str, max_bytes: int, timeout_s: float) -> None:
        self.kind, self.max_bytes, self.timeout_s = kind, max_bytes, timeout_s
        self._partial: _Partial | None = None
        self._closed: deque[str] = deque(maxlen=16)     # ids finished or refused: ignore
        self.completed = 0
        self.dropped: list[str] = []                      # why transfers were given up

    @property
    def frames_seen(self) -> tuple[str, int] | None:
        """(id, frames received) of the transfer being rebuilt, for the sender's window."""
        p = self._partial
        return None if p is None else (p.header.id, len(p.seen))

    @property
    def in_progress(self) -> tuple[str, int, int] | None:
        """(id, bytes received, total) of the transfer being rebuilt."""
        p = self._partial
        return None if p is None else (p.header.id, p.received, p.header.total)

    def _drop(self, why: str) -> None:
        if self._partial is not None:
            self._closed.append(self._partial.header.id)
        self._partial = None
        self.dropped.append(why)
        del self.dropped[:-50]

    def expire(self, now_s: float) -> str | None:
        p = self._partial
        if p is not None and now_s - p.last_s > self.timeout_s:
            why = (f"transfer {p.header.id} incomplete ({p.received} of {p.header.total} bytes) "
                   f"and silent for {now_s - p.last_s:.1f} s (timeout {self.timeout_s:g} s)")
            self._drop(why)
            return why
        return None

    def feed(self, data: bytes | memoryview, now_s: float) -> Completed | None:
        header, body = parse_frame(data)
        if header.kind != self.kind:
            msg = f"frame of kind {header.kind!r} on a {self.kind!r} transfer topic"
            raise TransferError(msg)
        if header.id in self._closed:
            return None
        p = self._partial
        if p is not None and p.header.id != header.id:
            self._drop(f"transfer {p.header.id} superseded by {header.id} after {p.received} of "
                       f"{p.header.total} bytes")
            p = None
        if p is None:
            if header.total > self.max_bytes:
                self._closed.append(header.id)
                msg = (f"transfer {header.id} announces {header.total} bytes; the limit is "
                       f"{self.max_bytes} (raise max_transfer_bytes if that is a real checkpoint)")
                self.dropped.append(msg)
                raise TransferError(msg)
            p = self._partial = _Partial(header, bytearray(header.total), set(), 0, now_s, now_s)
        elif not p.header.same_transfer(header):
            msg = f"frame {header.index} of transfer {header.id} disagrees with its first frame"
            self._drop(msg)
            raise TransferError(msg)
        p.last_s = now_s
        if header.index not in p.seen:
            p.buffer[header.offset:header.offset + len(body)] = body
            p.seen.add(header.index)
            p.received += len(body)
        if len(p.seen) < header.count:
            return None
        self._partial = None
        self._closed.append(header.id)
        payload = bytes(p.buffer)
        if p.received != header.total or hashlib.sha256(payload).hexdigest() != header.sha256:
            msg = (f"transfer {header.id}: {p.received} of {header.total} bytes received, SHA-256 "
                   "does not match the announced one; dropped")
            self.dropped.append(msg)
            raise TransferError(msg)
        self.completed += 1
        return Completed(header.kind, header.id, header.meta, payload, now_s - p.first_s)


# -- several files in one payload -----------------------------------------------------------------
def pack_files(files: Mapping[str, bytes]) -> bytes:
    """uint32 manifest length | manifest JSON [[name, size], ...] | the files' bytes in order."""
    for name in files:
        check_name(name)
    manifest = json.dumps([[name, len(data)] for name, data in files.items()]).encode()
    return struct.pack(">I", len(manifest)) + manifest + b"".join(files.values())


def unpack_files(payload: bytes) -> dict[str, bytes]:
    """The named files of ``pack_files``; names must be plain relative paths (never hidden,
    absolute or with ``..``) and the sizes must add up exactly."""
    view = memoryview(payload)
    try:
        (size,) = struct.unpack_from(">I", view)
        manifest = json.loads(bytes(view[4:4 + size]))
        entries = [(str(name), int(n)) for name, n in manifest]
    except (struct.error, ValueError, TypeError) as err:
        msg = f"payload holds no valid file manifest ({err})"
        raise TransferError(msg) from err
    if not entries or len(entries) > MAX_FILES:
        msg = f"payload lists {len(entries)} files; expected 1..{MAX_FILES}"
        raise TransferError(msg)
    offset, out = 4 + size, {}
    for name, n in entries:
        check_name(name)
        if n < 0 or name in out:
            msg = f"payload lists {name!r} twice or with size {n}"
            raise TransferError(msg)
        out[name] = bytes(view[offset:offset + n])
        offset += n
    if offset != len(view):
        msg = f"payload manifest covers {offset} bytes but the payload has {len(view)}"
        raise TransferError(msg)
    return out


def check_name(name: str) -> str:
    """A relative file name that stays inside its directory and is not hidden."""
    parts = PurePosixPath(name).parts
    if (not name or name.startswith("/") or "\\" in name or "\0" in name
            or any(p in ("", ".", "..") or p.startswith(".") for p in parts)):
        msg = f"file name {name[:120]!r} is not a plain relative path (no '..', '/', hidden parts)"
        raise TransferError(msg)
    return name
