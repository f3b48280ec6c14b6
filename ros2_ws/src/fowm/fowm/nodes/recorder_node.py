"""fowm_recorder: one rosbag2 (MCAP, metadata version 9) per episode, from the wire bytes.

For machines without ROS's ``ros2 bag`` (PyPI rclpy has no rosbag2): the same bag layout that
``fowm collect`` writes and ``fowm_core.data.bags.read_episode_bag`` reads (see its docstring), so
offline datasets and logged online episodes are one format and go through one reader.

- Raw subscriptions (``raw=True``) hand over the serialized CDR exactly as it came off the wire;
  it is written as is. Re-serializing is not byte-stable and can produce CDR that rosbags refuses
  (docs/platform.md §3.2).
- Episodes are cut at /fowm/episode events: a bag opens at "start" and closes at the next "start"
  or ``grace_s`` after "end", and keeps the header-stamped messages inside the end event's
  [first_stamp_ns, final_stamp_ns] (actions: < final_stamp_ns, the last observation has no answer
  in the episode). Unstamped messages (rewards) between the start and the close all belong to the
  episode: the episode manager publishes rewards only while an episode runs. So observations
  published before the reset, or an answer to the final observation, never enter the episode.
  The grace period exists because one executor cycle may serve the "end" event before the final
  observation and reward (subscriptions are served in creation order).
- A recorder that starts after an episode's "start" event keeps the last ``prebuffer_s`` seconds
  of messages and rebuilds that episode when its "end" event comes (the cut is by stamps).
- The latest /fowm/weights messages (the planner's {"live": true} one and the learner's
  announcement; transient-local) open every bag, so each bag says which weights acted. With the
  lab key (``key_file``) a live message the planner did not sign is refused and never recorded;
  ``fowm_core.runtime.provenance`` checks bags recorded otherwise (docs/trust.md).
- Written under a hidden temp directory by a writer thread, then renamed into ``bag_dir``: a
  watcher (the learner) never sees a half-written bag. Metadata version 9 is what rosbags writes
  and what rosbag2 reads on Jazzy and Kilted (Humble's rosbag2 reads v5 only: delete
  metadata.yaml and run ``ros2 bag reindex`` there, docs/platform.md §3.4).
- Memory: an episode is buffered until it ends (25 steps of 84×84 images ≈ 1 MB; VGA at 30 Hz
  ≈ 30 MB/s): record long or unsegmented runs with ``ros2 bag record`` instead.
"""

from __future__ import annotations

import dataclasses
import importlib
import queue
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from std_msgs.msg import String

from fowm.ros.diagnostics import ERROR, OK, WARN, DiagnosticsReporter, Health, with_guard
from fowm.ros.guard import InputGuard, SupervisedThread
from fowm.ros.params import declare_from_dataclass
from fowm.ros.spin import run_nodes
from fowm_core.contract import topics
from fowm_core.contract.messages import EpisodeEvent, WeightsAnnouncement
from fowm_core.data import bags, convert
from fowm_core.errors import ConfigError, FowmError
from fowm_core.runtime.control import param_meta as _p
from fowm_core.runtime.trust import authentic_live, load_key

# Messages whose CDR starts with a std_msgs/Header: their stamp is read from the bytes.
STAMPED = frozenset({topics.COLOR_IMAGE, topics.COLOR_INFO, topics.JOINT_STATES, topics.EE_POSE,
                     topics.OBJECT_POSE, topics.GOAL_POSE, topics.ACTION})
# Served first in an executor cycle (creation order): events, then weights, then rewards before
# the actions, as they were published.
_ORDER = (topics.EPISODE, topics.WEIGHTS, topics.REWARD)


@dataclass(frozen=True)
class RecorderParams:
    bag_dir: str = field(default="", metadata=_p("directory that receives one bag per episode"))
    topics: tuple[str, ...] = field(default=topics.RECORDED, metadata=_p(
        "topics to record (fowm_core.contract.topics names; stock types only)"))
    grace_s: float = field(default=0.5, metadata=_p(
        "seconds after an end event in which late messages of the episode are still taken",
        0.0, 60.0))
    prebuffer_s: float = field(default=10.0, metadata=_p(
        "seconds of messages kept while no episode is open, for an episode whose start event "
        "was missed (recorder started late)", 0.0, 3600.0))
    depth: int = field(default=200, metadata=_p(
        "reliable subscription depth per topic (messages queued while the executor is busy)",
        1, 100000))
    key_file: str = field(default="", metadata=_p(
        "lab key (the planner's trust.key_file): only the planner's signed live message is "
        "recorded as the weights that acted; empty: every live message is kept (unverified)"))


@dataclass(frozen=True)
class RecorderStats:
    """What a recorder has done: the bags it wrote and why any episode was not written."""

    written: list[Path]
    dropped: list[str]


@dataclass
class _Episode:
    start: EpisodeEvent
    messages: list[tuple[str, int, bytes]] = field(default_factory=list)   # (topic, log ns, raw)
    end: EpisodeEvent | None = None
    end_wall_s: float = 0.0


def header_stamp_ns(raw: bytes) -> int:
    """The header stamp of a serialized stamped message (CDR: 4-byte encapsulation, then the
    Header's int32 sec, uint32 nanosec)."""
    if len(raw) < 12:
        msg = f"serialized message of {len(raw)} bytes is too short to hold a header"
        raise FowmError(msg)
    order = "<" if raw[1] & 1 else ">"
    sec, nanosec = struct.unpack_from(f"{order}iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


def cut_episode(ep: _Episode) -> list[tuple[str, int, bytes]]:
    """The messages that belong to the episode (module docstring)."""
    assert ep.end is not None
    first, final = ep.end.get("first_stamp_ns"), ep.end.get("final_stamp_ns")
    out = []
    for topic, log_ns, raw in ep.messages:
        if topic in STAMPED and first is not None and final is not None:
            stamp = header_stamp_ns(raw)
            if stamp < first or stamp > final or (topic == topics.ACTION and stamp >= final):
                continue
        out.append((topic, log_ns, raw))
    return out


def write_bag(path: Path, messages: list[tuple[str, int, bytes]], custom: dict[str, str]) -> Path:
    """Write raw CDR messages as a rosbag2 MCAP bag via a hidden temp dir + rename."""
    with bags.atomic_bag_writer(path) as writer:
        for key, value in custom.items():
            writer.set_custom_data(key, value)
        conns: dict[str, Any] = {}
        for topic, log_ns, raw in messages:
            if topic not in conns:
                conns[topic] = writer.add_connection(
                    topic, topics.MSG_TYPES[topic], typestore=convert.TYPESTORE,
                    offered_qos_profiles=bags.OFFERED_QOS.get(topic, []))
            writer.write(conns[topic], log_ns, raw)
    return path


class RecorderNode(Node):
    """Node ``fowm_recorder``: raw subscriptions → per-episode MCAP bags in ``bag_dir``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("fowm_recorder", **kwargs)
        self.params = p = declare_from_dataclass(self, "", RecorderParams)
        if not p.bag_dir:
            msg = "parameter bag_dir is empty: set it to the directory for the episode bags"
            raise ConfigError(msg)
        unknown = [t for t in p.topics if t not in topics.MSG_TYPES]
        if unknown:
            msg = (f"topics {unknown} are not in the topic contract (contract.topics.MSG_TYPES); "
                   "the recorder needs each topic's message type")
            raise ConfigError(msg)
        self.key = load_key(p.key_file) if p.key_file else None
        self.bag_dir = Path(p.bag_dir)
        self.bag_dir.mkdir(parents=True, exist_ok=True)
        self.written: list[Path] = []
        self.dropped: list[str] = []          # why an episode was not written
        self._episode: _Episode | None = None
        self._prebuffer: deque[tuple[str, int, bytes]] = deque()
        self._latched: dict[bool, bytes] = {}  # newest weights message per kind (live or not)
        self._last_log_ns = 0
        self._pending = 0                      # episodes handed to the writer, not yet on disk
        self._lock = threading.Lock()
        self._jobs: queue.Queue[_Episode | None] = queue.Queue()
        self.inputs = InputGuard(self)
        self.diag = DiagnosticsReporter(self, "fowm_recorder: bags", str(self.bag_dir))
        self._writer = SupervisedThread("fowm_recorder_writer", self._write_loop,
                                        lambda text: self.get_logger().error(text))
        self._writer.start()
        ordered = [t for t in _ORDER if t in p.topics] + [t for t in p.topics if t not in _ORDER]
        for topic in ordered:
            self.create_subscription(_msg_class(topic), topic,
                                     self.inputs.guard(topic, self._callback(topic)),
                                     self._qos(topic), raw=True)
        self.create_timer(0.1, self.inputs.guard("grace timer", self._check_grace))
        self.create_timer(1.0, self.inputs.guard("watchdog", self._watchdog))
        self.diag.publish_every(health=lambda: with_guard(
            self._health(), self.inputs, writer_restarts=self._writer.restarts))
        self.get_logger().info(f"recording {len(ordered)} topics into {self.bag_dir}, "
                               "one bag per episode")

    def _health(self) -> Health:
        values = {"bags_written": len(self.written), "episodes_dropped": len(self.dropped),
                  "pending": self._pending, "recording": self._episode is not None}
        if not self._writer.is_alive():
            return ERROR, "the bag writer thread stopped; bags are not written", values
        if self.dropped:
            return WARN, self.dropped[-1], values
        return OK, f"{len(self.written)} bags written to {self.bag_dir}", values

    def _qos(self, topic: str) -> QoSProfile:
        durability = (DurabilityPolicy.TRANSIENT_LOCAL if topic == topics.WEIGHTS
                      else DurabilityPolicy.VOLATILE)
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.params.depth,
                          reliability=ReliabilityPolicy.RELIABLE, durability=durability)

    # -- executor side -------------------------------------------------------------------------
    def _callback(self, topic: str) -> Any:
        def callback(raw: bytes) -> None:
            self._on_message(topic, bytes(raw))
        callback.__name__ = f"record_{topic.strip('/').replace('/', '_')}"
        return callback

    def _log_ns(self) -> int:
        """Receive time (system clock, as rosbag2), strictly increasing so log order is kept."""
        self._last_log_ns = max(time.time_ns(), self._last_log_ns + 1)
        return self._last_log_ns

    def _on_message(self, topic: str, raw: bytes) -> None:
        log_ns = self._log_ns()
        with self._lock:
            if topic == topics.EPISODE:
                self._on_event(raw, log_ns)
                return
            if topic == topics.WEIGHTS:
                note = self._parse_weights(raw)
                if note is None:
                    return                     # refused: never enters a bag
                self._latched[note.is_live] = raw
            if self._episode is not None:
                self._episode.messages.append((topic, log_ns, raw))
            else:
                self._prebuffer.append((topic, log_ns, raw))
                horizon = log_ns - int(self.params.prebuffer_s * 1e9)
                while self._prebuffer and self._prebuffer[0][1] < horizon:
                    self._prebuffer.popleft()

    def _on_event(self, raw: bytes, log_ns: int) -> None:
        try:
            event = convert.parse_event(deserialize_message(raw, String))
        except FowmError as err:
            self.inputs.refuse(topics.EPISODE, str(err))
            return
        current = self._episode
        if event.is_start:
            # Stamped messages that beat the start event may be its first observation (real
            # mode: the scene is reset, then confirmed): in the pre-buffer, or in the grace of
            # the previous episode; each cut by stamps keeps only its own.
            early = [m for m in self._prebuffer if m[0] in STAMPED]
            if current is not None:
                if current.end is not None:
                    ended = max(i for i, m in enumerate(current.messages)
                                if m[0] == topics.EPISODE)
                    early = [m for m in current.messages[ended:] if m[0] in STAMPED] + early
                self._close(current)
            self._open(event, raw, log_ns, early)
            return
        if current is not None and current.end is None and event.episode != current.start.episode:
            # Another stack's (or a forged) end must not cut the open episode short.
            self.inputs.refuse(topics.EPISODE, f"end event of episode {event.episode!r} while "
                                               f"episode {current.start.episode!r} is open")
            return
        final = event.get("final_stamp_ns")
        if isinstance(final, int) and self.inputs.future(topics.EPISODE, final):
            return
        if current is None or current.end is not None:
            # Its start was missed (we started late): rebuild the episode from the pre-buffer;
            # the end event's stamps cut it exactly all the same.
            start = dataclasses.replace(event, event="start", synthesized_by=self.get_name())
            start_raw = bytes(convert.TYPESTORE.serialize_cdr(
                convert.event_msg(start), topics.MSG_TYPES[topics.EPISODE]))
            early = list(self._prebuffer)
            self._open(start, start_raw, early[0][1] - 1 if early else log_ns, early)
            current = self._episode
            self.get_logger().warning(
                f"episode {event.episode}: its start event was not received; rebuilt "
                f"from the last {self.params.prebuffer_s:g} s of messages")
        assert current is not None
        current.messages.append((topics.EPISODE, log_ns, raw))
        current.end, current.end_wall_s = event, time.monotonic()

    def _open(self, start: EpisodeEvent, raw: bytes, log_ns: int,
              early: list[tuple[str, int, bytes]]) -> None:
        self._prebuffer.clear()
        self._episode = _Episode(start, [(topics.EPISODE, log_ns, raw)])
        for live in sorted(self._latched):            # which weights act in this episode
            self._episode.messages.append((topics.WEIGHTS, log_ns, self._latched[live]))
        self._episode.messages += early

    def _parse_weights(self, raw: bytes) -> WeightsAnnouncement | None:
        """The typed message behind raw /fowm/weights bytes; None (reported) when invalid."""
        try:
            note = WeightsAnnouncement.from_json(deserialize_message(raw, String).data)
        except FowmError as err:
            self.inputs.refuse(topics.WEIGHTS, str(err))
            return None
        if note.is_live and self.key is not None and not authentic_live(self.key, note.as_dict()):
            # Forged provenance: a live report the planner did not sign (docs/trust.md layer 7).
            self.inputs.refuse(topics.WEIGHTS, f"live weights message for {note.path[:120]!r} "
                                               "is not signed by the planner: not recorded")
            return None
        return note

    def _watchdog(self) -> None:
        """Executor timer: restart a writer that died (reported by ``_health``)."""
        if self.context.ok():
            self._writer.check()

    def _check_grace(self) -> None:
        with self._lock:
            ep = self._episode
            if ep is not None and ep.end is not None and (
                    time.monotonic() - ep.end_wall_s >= self.params.grace_s):
                self._close(ep)

    def _close(self, ep: _Episode) -> None:
        """Hand a finished episode to the writer (lock held)."""
        self._episode = None
        if ep.end is None:
            why = (f"episode {ep.start.episode} has no end event (a new start came "
                   "first); not written")
            self.get_logger().warning(why)
            self.dropped.append(why)
            return
        self._pending += 1
        self._jobs.put(ep)

    # -- writer thread ----------------------------------------------------------------------------
    def _write_loop(self) -> None:
        while (ep := self._jobs.get()) is not None:
            try:
                path = self._write(ep)
            except Exception as err:  # one bad episode is dropped; the writer goes on
                known = isinstance(err, OSError | FowmError | ValueError)
                why = (f"episode {ep.start.episode} could not be written: "
                       f"{err if known else f'{type(err).__name__}: {err}'}")
                self.get_logger().error(why)
                self.dropped.append(why)
            else:
                self.written.append(path)
                self.get_logger().info(f"wrote {path.name}")
            finally:
                with self._lock:
                    self._pending -= 1

    def _write(self, ep: _Episode) -> Path:
        assert ep.end is not None
        task, episode = ep.start.task, ep.start.episode
        label = f"{episode:05d}" if isinstance(episode, int) else episode
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime())
        path = self.bag_dir / f"{task}_{stamp}_ep{label}"
        suffix = 1
        while path.exists():
            path = self.bag_dir / f"{task}_{stamp}_ep{label}_{suffix}"
            suffix += 1
        custom = {"fowm.codec": bags.CODEC, "fowm.task": task, "fowm.episode": str(episode),
                  "fowm.recorder": "fowm_recorder (raw wire bytes)"}
        return write_bag(path, cut_episode(ep), custom)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Close an ended episode now and wait until every queued bag is written."""
        with self._lock:
            if self._episode is not None and self._episode.end is not None:
                self._close(self._episode)
        deadline = time.monotonic() + timeout_s
        while self._pending:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def stats(self) -> RecorderStats:
        """The bags written so far and the episodes dropped (for fowm.bringup.run_stack)."""
        return RecorderStats(written=list(self.written), dropped=list(self.dropped))

    def destroy_node(self) -> None:
        """Write the episode that has ended, drop an unfinished one, stop the writer."""
        with self._lock:
            if self._episode is not None and self._episode.end is not None:
                self._close(self._episode)
            elif self._episode is not None:
                self.dropped.append(f"episode {self._episode.start.episode} was still "
                                    "running at shutdown; not written")
                self._episode = None
        self._jobs.put(None)
        self._writer.stop(60.0)
        super().destroy_node()


def _msg_class(topic: str) -> type:
    package, _, name = topics.MSG_TYPES[topic].split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def main(args: list[str] | None = None) -> None:
    """Console script `ros2 run fowm recorder_node`: this node until SIGINT/SIGTERM."""
    run_nodes([RecorderNode], args)


if __name__ == "__main__":
    main()
