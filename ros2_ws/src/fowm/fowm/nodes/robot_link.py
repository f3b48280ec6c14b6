"""fowm_robot_link: the robot PC's end of a link to a learner on another host (docs/two_hosts.md).

- Weights: rebuilds checkpoint transfers from /fowm/weights_blob (bounded memory, one transfer at
  a time, a timeout for incomplete ones), checks the learner's signature and the tensor SHA-256,
  writes sidecar and tensor atomically into ``store_dir`` (the planner's ``trust.trusted_dir``)
  and then publishes the learner's announcement, unchanged, on /fowm/weights: the planner
  validates and swaps it as on one host. Frames are copied in the executor thread; hashing the
  files and writing them happen on this node's worker thread, never on the planner's control
  thread.
- Episodes: ships every complete bag of the local recorder's ``bag_dir`` on /fowm/episode_blob,
  one at a time, while the learner is heard, and re-sends it until /fowm/episode_ack confirms it
  (fowm_core.runtime.remote.BagOutbox: a ledger of acknowledged bags survives restarts).
- Health: a 1 Hz heartbeat on /fowm/link, and "fowm_robot_link: learner link" on /diagnostics:
  WARN "no learner heard for N s" during a partition. Control never waits for any of this.
- ``report_file``: what the link did (checkpoints received, bags shipped, partitions) as JSON,
  rewritten atomically once a second and at exit; `fowm run --role robot` runs this node in a
  process of its own (the only one on the robot PC that talks to the other host) and reads it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rclpy.node import Node
from std_msgs.msg import String

from fowm.ros import qos
from fowm.ros.diagnostics import OK, WARN, DiagnosticsReporter, Health
from fowm.ros.params import declare_from_dataclass
from fowm.ros.spin import run_nodes
from fowm.ros.transfer import CONTROL_QOS, BlobReceiver, BlobSender, LinkHeartbeat, guard_of
from fowm_core.contract import topics
from fowm_core.contract.messages import WeightsAnnouncement
from fowm_core.errors import ConfigError, FowmError
from fowm_core.runtime.control import param_meta as _p
from fowm_core.runtime.ledger import atomic_write_text
from fowm_core.runtime.remote import BagOutbox, WeightsInbox
from fowm_core.runtime.transfer import Completed
from fowm_core.runtime.trust import load_key


@dataclass(frozen=True)
class RobotLinkParams:
    bag_dir: str = field(default="", metadata=_p("the local recorder's bag directory (shipped)"))
    store_dir: str = field(default="", metadata=_p(
        "where received checkpoints are written: the planner's trust.trusted_dir"))
    key_file: str = field(default="", metadata=_p(
        "lab key (the planner's trust.key_file): only checkpoints the learner signed are "
        "stored; empty: store unverified (the planner still checks)"))
    max_transfer_bytes: int = field(default=64 << 20, metadata=_p(
        "largest checkpoint accepted (bytes of tensor + sidecar)", 1, 2**31 - 1))
    transfer_timeout_s: float = field(default=20.0, metadata=_p(
        "drop an incomplete transfer after this many silent seconds", 0.5, 3600.0))
    ack_timeout_s: float = field(default=15.0, metadata=_p(
        "re-send a bag not acknowledged within this many seconds", 1.0, 3600.0))
    chunk_bytes: int = field(default=512 << 10, metadata=_p("bytes per frame", 1024, 64 << 20))
    peer_timeout_s: float = field(default=3.0, metadata=_p(
        "the learner counts as gone after this many seconds without its heartbeat", 0.5, 600.0))
    keep_checkpoints: int = field(default=3, metadata=_p("received checkpoints kept", 1, 1000))
    report_file: str = field(default="", metadata=_p(
        "write what the link did here as JSON, once a second and at exit (empty: never)"))


class RobotLinkNode(Node):
    """Node ``fowm_robot_link``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("fowm_robot_link", **kwargs)
        self.params = p = declare_from_dataclass(self, "", RobotLinkParams)
        if not p.bag_dir or not p.store_dir:
            msg = (f"bag_dir={p.bag_dir!r}, store_dir={p.store_dir!r}: both must be set (the "
                   "recorder's bag directory and the planner's trust.trusted_dir)")
            raise ConfigError(msg)
        key = load_key(p.key_file) if p.key_file else None
        Path(p.bag_dir).mkdir(parents=True, exist_ok=True)
        self.inbox = WeightsInbox(Path(p.store_dir), key, p.keep_checkpoints)
        self.outbox = BagOutbox(Path(p.bag_dir), ack_timeout_s=p.ack_timeout_s)
        self._lock = threading.Lock()
        self.weights_received: list[dict[str, Any]] = []
        self.acks = 0
        self.weights_pub = self.create_publisher(String, topics.WEIGHTS, qos.LATCHED)
        self.weights = BlobReceiver(self, topics.WEIGHTS_BLOB, "weights", p.max_transfer_bytes,
                                    p.transfer_timeout_s, self._on_weights)
        self.episodes = BlobSender(self, topics.EPISODE_BLOB, "episode", p.chunk_bytes)
        inputs = guard_of(self)
        self.create_subscription(String, topics.EPISODE_ACK,
                                 inputs.guard(topics.EPISODE_ACK, self._on_ack), CONTROL_QOS)
        self.link = LinkHeartbeat(self, "robot", "learner", p.peer_timeout_s, self._beat_values)
        self.create_timer(0.5, inputs.guard("bag shipping", self._ship))
        self.diag = DiagnosticsReporter(self, "fowm_robot_link: learner link", "fowm_robot_link")
        self.diag.publish_every(health=self._health)
        if p.report_file:
            self.create_timer(1.0, inputs.guard("link report", self.write_report))
        self.get_logger().info(f"shipping bags of {p.bag_dir}; checkpoints into {p.store_dir}")
        # After a restart: offer the newest checkpoint received before it (the planner refuses
        # it if it is not newer than its start weights), since the learner will not re-send it.
        stored = self.inbox.newest_announcement()
        if stored is not None:
            self.weights_pub.publish(String(data=WeightsAnnouncement.from_dict(stored).to_json()))
            self.get_logger().info(f"offered the stored checkpoint {stored.get('path')} "
                                   f"(step {stored.get('step')}) to the planner")

    # -- weights (worker thread) -----------------------------------------------------------------
    def _on_weights(self, done: Completed) -> None:
        start = time.monotonic()
        note = self.inbox.accept(done.meta, done.payload)
        text = WeightsAnnouncement.from_dict(note).to_json()
        if self.context.ok():
            self.weights_pub.publish(String(data=text))
        record = {"id": done.id, "path": note.get("path"), "step": note.get("step"),
                  "bytes": len(done.payload), "transfer_s": round(done.seconds, 4),
                  "store_s": round(time.monotonic() - start, 4),
                  "wall_s": time.time()}
        with self._lock:
            self.weights_received.append(record)
        self.get_logger().info(f"checkpoint {note.get('path')} (step {note.get('step')}, "
                               f"{len(done.payload)} bytes) received and handed to the planner")

    # -- episodes --------------------------------------------------------------------------------
    def _ship(self) -> None:
        """Executor timer: queue the next bag while the learner is heard (never blocks)."""
        alive, _ = self.link.state()
        if alive and not self.episodes.busy:
            self.episodes.send(self._next_bag)

    def _next_bag(self) -> tuple[str, dict[str, Any], bytes] | None:
        with self._lock:             # sender thread: reads the bag's files
            return self.outbox.next_send(time.monotonic())

    def _on_ack(self, msg: String) -> None:
        try:
            body = json.loads(msg.data)
            name, digest = str(body["name"]), str(body["sha256"])
        except (ValueError, KeyError, TypeError) as err:
            # Raised so the guard refuses and counts it (issue 11: nothing silently).
            text = f"episode ack {msg.data[:80]!r} is not {{name, sha256}} ({err})"
            raise FowmError(text) from err
        with self._lock:
            if self.outbox.acked(name, digest):
                self.acks += 1
                self.get_logger().info(f"bag {name} acknowledged by the learner's host")

    # -- health ----------------------------------------------------------------------------------
    def _beat_values(self) -> dict[str, Any]:
        with self._lock:
            return {"weights_step": self.inbox.newest_step(), "bags_shipped": self.outbox.shipped}

    def _health(self) -> Health:
        alive, text = self.link.state()
        with self._lock:
            pending = self.outbox.pending_count
            shipped = self.outbox.shipped
            received = len(self.weights_received)
            last = self.weights_received[-1] if self.weights_received else {}
        watch = self.link.watch
        values = {"learner_heard": alive, "link": text, "partitions": watch.partitions,
                  "longest_partition_s": f"{watch.longest_s:.1f}", "bags_shipped": shipped,
                  "bags_pending": pending, "bag_sends": self.outbox.sends,
                  "weights_received": received, "weights_refused": len(self.weights.refused),
                  "last_weights": last.get("path", "none"),
                  "transfer": str(self.weights.in_progress or "idle")}
        if self.weights.refused:
            values["last_refused"] = self.weights.refused[-1][:200]
        if not alive:
            return WARN, f"{text}; control goes on with the live weights, bags queue locally", \
                values
        return OK, f"{text}; {shipped} bags shipped, {pending} pending", values

    # -- report ----------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        watch = self.link.watch
        with self._lock:
            return {"weights_received": list(self.weights_received),
                    "weights_refused": list(self.weights.refused),
                    "bags_shipped": self.outbox.shipped, "bag_sends": self.outbox.sends,
                    "partitions": watch.partitions, "longest_partition_s": watch.longest_s,
                    "bag_transfers": [vars(x) for x in self.episodes.sent]}

    def write_report(self) -> None:
        if self.params.report_file:
            atomic_write_text(Path(self.params.report_file), json.dumps(self.report()))

    def destroy_node(self) -> None:
        self.episodes.close()
        self.weights.close()
        self.write_report()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Console script `ros2 run fowm robot_link`: this node until SIGINT/SIGTERM."""
    run_nodes([RobotLinkNode], args)


if __name__ == "__main__":
    main()
