"""Transfers and heartbeats between the robot PC and the learner's host (docs/two_hosts.md).

``BlobSender`` publishes one payload at a time as frames of fowm_core.runtime.transfer on a
std_msgs/UInt8MultiArray topic from its own thread (never the executor's, never a control loop's);
a payload queued while another is on the wire replaces any older queued one (newest wins). It
keeps at most ``window`` frames ahead of what the receiver reports on /fowm/transfer_progress:
with Fast DDS's non-blocking TCP sends (docs/two_hosts.md) a burst larger than the socket's buffer
is dropped, not queued, and DDS's repair of a 22 MB burst took minutes; a transfer whose receiver
reports nothing for ``stall_s`` is abandoned (the callers send it again later).
``BlobReceiver`` rebuilds frames in the executor thread (a copy into one bounded buffer) and hands
each complete, hash-checked payload to its own worker thread, which does the slow part (writing
files). ``LinkHeartbeat`` publishes this side's /fowm/link heartbeat once a second (steady clock)
and watches the peer's (fowm_core.runtime.remote.LinkWatch). Every callback goes through the
node's ``InputGuard`` (fowm.ros.guard): no payload ends the executor's spin.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String, UInt8MultiArray

from fowm.ros.guard import InputGuard, SupervisedThread
from fowm_core.contract import topics
from fowm_core.errors import FowmError
from fowm_core.runtime.remote import LinkWatch, checkpoint_files, link_message, parse_link
from fowm_core.runtime.transfer import Completed, Reassembler, TransferError, frames

# Reliable, volatile: a transfer that misses its reader is re-sent by the application (acks for
# bags, the robot's heartbeat step for weights), not kept by DDS across a partition. Depth 100
# frames of 512 KiB hold a whole 15 MB checkpoint in the writer's history.
BLOB_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                      reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
CONTROL_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
Payload = tuple[str, Mapping[str, Any], bytes]        # (transfer id, meta, payload)


def guard_of(node: Node) -> InputGuard:
    """The node's InputGuard (``node.inputs``), made and attached if it has none yet."""
    inputs = getattr(node, "inputs", None)
    if not isinstance(inputs, InputGuard):
        inputs = InputGuard(node)
        node.inputs = inputs           # type: ignore[attr-defined]
    return inputs


@dataclass(frozen=True)
class SentRecord:
    id: str
    bytes: int
    frames: int
    seconds: float          # first frame published → last frame published
    wall_s: float           # time.time() at the end


class BlobSender:
    """Publishes payloads on ``topic`` from its own thread; ``send`` never blocks."""

    def __init__(self, node: Node, topic: str, kind: str, chunk_bytes: int = 512 << 10,
                 window: int = 4, stall_s: float = 10.0) -> None:
        self.node, self.kind, self.chunk_bytes = node, kind, chunk_bytes
        self.window, self.stall_s = window, stall_s
        self.pub = node.create_publisher(UInt8MultiArray, topic, BLOB_QOS)
        self._progress: dict[str, int] = {}          # transfer id → frames the receiver has
        inputs = guard_of(node)
        node.create_subscription(String, topics.TRANSFER_PROGRESS,
                                 inputs.guard(topics.TRANSFER_PROGRESS, self._on_progress),
                                 CONTROL_QOS)
        self._next: Callable[[], Payload | None] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.busy = False
        self.sent: deque[SentRecord] = deque(maxlen=200)
        self.errors: deque[str] = deque(maxlen=20)
        self._thread = SupervisedThread(f"{node.get_name()}_{kind}_sender", self._loop,
                                        lambda text: node.get_logger().error(text))
        self._thread.start()

    def send(self, make: Callable[[], Payload | None]) -> None:
        """Queue ``make`` (called on the sender thread: file reads stay off the executor)."""
        with self._lock:
            self._next = make
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            with self._lock:
                make, self._next = self._next, None
            if make is None:
                continue
            self.busy = True
            try:
                item = make()
                if item is not None:
                    self._publish(*item)
            except (FowmError, OSError) as err:
                self.errors.append(str(err))
                self.node.get_logger().warning(f"{self.kind} transfer not sent: {err}")
            finally:
                self.busy = False

    def _on_progress(self, msg: String) -> None:
        try:
            body = json.loads(msg.data)
            transfer_id, count = str(body["id"]), int(body["frames"])
        except (ValueError, KeyError, TypeError, OverflowError) as err:
            # Raised so the node's guard refuses and counts it (issue 11: nothing silently).
            text = f"transfer progress {msg.data[:80]!r} is not {{id, frames}} ({err})"
            raise FowmError(text) from err
        if transfer_id in self._progress:
            self._progress[transfer_id] = max(self._progress[transfer_id], count)

    def _wait_window(self, transfer_id: str, count: int) -> bool:
        """Wait until the receiver has all but ``window`` of the ``count`` frames sent."""
        last, seen = time.monotonic(), self._progress.get(transfer_id, 0)
        while count - self._progress.get(transfer_id, 0) >= self.window:
            if self._stop.is_set() or not self.node.context.ok():
                return False
            if self._progress.get(transfer_id, 0) != seen:
                last, seen = time.monotonic(), self._progress[transfer_id]
            elif time.monotonic() - last > self.stall_s:
                return False
            time.sleep(0.002)
        return True

    def _publish(self, transfer_id: str, meta: Mapping[str, Any], payload: bytes) -> None:
        start, count = time.monotonic(), 0
        self._progress = {transfer_id: 0}
        for frame in frames(self.kind, transfer_id, payload, meta, self.chunk_bytes):
            if not self._wait_window(transfer_id, count):
                self.errors.append(f"transfer {transfer_id}: no progress from the receiver for "
                                   f"{self.stall_s:g} s after {count} frames; abandoned")
                return
            msg = UInt8MultiArray()
            msg.data = frame
            self.pub.publish(msg)
            count += 1
        self.sent.append(SentRecord(transfer_id, len(payload), count,
                                    time.monotonic() - start, time.time()))

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.stop(10.0)


class BlobReceiver:
    """Rebuilds transfers of ``kind`` from ``topic``; ``on_complete(Completed)`` runs on a worker
    thread and returns nothing or raises FowmError (counted as a refusal)."""

    def __init__(self, node: Node, topic: str, kind: str, max_bytes: int, timeout_s: float,
                 on_complete: Callable[[Completed], None]) -> None:
        self.node, self.on_complete = node, on_complete
        self.assembler = Reassembler(kind, max_bytes, timeout_s)
        self.refused: deque[str] = deque(maxlen=50)
        self.handled = 0
        self.progress_pub = node.create_publisher(String, topics.TRANSFER_PROGRESS, CONTROL_QOS)
        self.last_complete_wall_s = 0.0
        self._jobs: queue.Queue[Completed | None] = queue.Queue(maxsize=2)
        self._lock = threading.Lock()
        self._worker = SupervisedThread(f"{node.get_name()}_{kind}_receiver", self._work,
                                        lambda text: node.get_logger().error(text))
        self._worker.start()
        inputs = guard_of(node)
        node.create_subscription(UInt8MultiArray, topic, inputs.guard(topic, self._on_frame),
                                 BLOB_QOS)
        node.create_timer(1.0, inputs.guard(f"{kind} transfer timeout", self._expire),
                          clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _refuse(self, why: str) -> None:
        self.refused.append(why)
        self.node.get_logger().warning(why[:400])

    def _on_frame(self, msg: UInt8MultiArray) -> None:
        try:
            with self._lock:
                done = self.assembler.feed(memoryview(msg.data), time.monotonic())
                seen = self.assembler.frames_seen
        except TransferError as err:
            self._refuse(str(err))
            return
        if done is not None or seen is not None:      # the sender's window moves on
            transfer_id, count = (done.id, 1 << 30) if done is not None else seen
            self.progress_pub.publish(String(data=json.dumps(
                {"id": transfer_id, "frames": count})))
        if done is not None:
            self.last_complete_wall_s = time.time()
            try:
                self._jobs.put_nowait(done)
            except queue.Full:               # the worker is behind: the sender re-sends later
                self._refuse(f"transfer {done.id} complete but the writer is busy; dropped")

    def _expire(self) -> None:
        with self._lock:
            why = self.assembler.expire(time.monotonic())
        if why:
            self._refuse(why)

    def _work(self) -> None:
        while (done := self._jobs.get()) is not None:
            try:
                self.on_complete(done)
                self.handled += 1
            except (FowmError, OSError) as err:
                self._refuse(f"transfer {done.id} refused: {err}")

    @property
    def in_progress(self) -> tuple[str, int, int] | None:
        with self._lock:
            return self.assembler.in_progress

    def close(self) -> None:
        self._jobs.put(None)
        self._worker.stop(10.0)


class LinkHeartbeat:
    """This side's heartbeat on /fowm/link (1 Hz, steady clock) and the peer's, watched."""

    def __init__(self, node: Node, role: str, peer: str, timeout_s: float,
                 values: Callable[[], Mapping[str, Any]]) -> None:
        self.node, self.role, self.values = node, role, values
        self.sender = f"{node.get_name()}@{id(node):x}"
        self.watch = LinkWatch(peer, timeout_s, time.monotonic())
        self._lock = threading.Lock()
        self.pub = node.create_publisher(String, topics.LINK, CONTROL_QOS)
        inputs = guard_of(node)
        node.create_subscription(String, topics.LINK, inputs.guard(topics.LINK, self._on_link),
                                 CONTROL_QOS)
        node.create_timer(1.0, inputs.guard("link heartbeat", self.beat),
                          clock=Clock(clock_type=ClockType.STEADY_TIME))

    def beat(self) -> None:
        if self.node.context.ok():
            self.pub.publish(String(data=link_message(self.role, self.sender, **self.values())))

    def _on_link(self, msg: String) -> None:
        body = parse_link(msg.data)        # FowmError: refused and counted by the guard
        if body["role"] != self.watch.role:
            return
        now = time.monotonic()
        with self._lock:
            last, alive = self.watch.last_s, self.watch.alive(now)
            self.watch.heard(body, now)
        if not alive:                      # the link came up: say so once, in the log
            when = "for the first time" if last is None else f"again after {now - last:.1f} s"
            self.node.get_logger().info(f"{self.watch.role} heard {when}")

    def state(self) -> tuple[bool, str]:
        with self._lock:
            return self.watch.state(time.monotonic())

    @property
    def peer(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.watch.peer)


class WeightsShipper:
    """The learner's side of weights over the link: sends each new checkpoint (bytes, sidecar,
    signed announcement) and re-sends the newest while the robot's heartbeat reports an older
    step (it was partitioned, restarted, or a frame was lost), at most every ``resend_s``."""

    def __init__(self, node: Node, chunk_bytes: int = 512 << 10, resend_s: float = 10.0,
                 peer_timeout_s: float = 3.0) -> None:
        self.node, self.resend_s = node, resend_s
        self.sender = BlobSender(node, topics.WEIGHTS_BLOB, "weights", chunk_bytes)
        self.robot = LinkWatch("robot", peer_timeout_s, time.monotonic())
        self._lock = threading.Lock()
        self.latest: tuple[dict[str, Any], Path] | None = None
        self._sent_s = -1e9
        self._attempt = 0
        inputs = guard_of(node)
        node.create_subscription(String, topics.LINK, inputs.guard(topics.LINK, self._on_link),
                                 CONTROL_QOS)
        node.create_timer(1.0, inputs.guard("weights re-send", self._maybe_resend),
                          clock=Clock(clock_type=ClockType.STEADY_TIME))

    def offer(self, note: Mapping[str, Any], path: Path) -> None:
        with self._lock:
            self.latest = (dict(note), Path(path))
        self._send()

    def _send(self) -> None:
        with self._lock:
            if self.latest is None:
                return
            note, path = self.latest
            self._attempt += 1
            self._sent_s = time.monotonic()
            transfer_id = f"{path.name}#{self._attempt}"
        self.sender.send(lambda: (transfer_id, *checkpoint_files(path, note)))

    def _on_link(self, msg: String) -> None:
        body = parse_link(msg.data)        # FowmError: refused and counted by the guard
        if body["role"] == "robot":
            with self._lock:
                self.robot.heard(body, time.monotonic())

    def _maybe_resend(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self.latest is None or not self.robot.alive(now) or self.sender.busy:
                return
            step, have = self.latest[0].get("step"), self.robot.peer.get("weights_step")
            stale = not isinstance(have, int) or (isinstance(step, int) and have < step)
            due = now - self._sent_s >= self.resend_s
        if stale and due:
            self._send()
