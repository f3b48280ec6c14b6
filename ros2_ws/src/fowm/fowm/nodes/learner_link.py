"""fowm_learner_link: the learner host's end of a link to the robot PC (docs/two_hosts.md).

Receives the robot's episode bags from /fowm/episode_blob (bounded memory, one transfer at a
time, a timeout for incomplete ones) into ``bag_dir``, the directory fowm_learner watches: each
bag is written under a hidden temp directory, its content hash checked against the robot's, and
renamed into place (fowm_core.runtime.remote.BagInbox), then acknowledged on /fowm/episode_ack. A
bag received again (a lost acknowledgement, a restarted robot) is acknowledged without a second
copy, and the learner's ledger (bag name + content hash) ingests each bag exactly once.

Health: a 1 Hz heartbeat on /fowm/link (the learner node reads the robot's to re-send weights)
and "fowm_learner_link: robot link" on /diagnostics: WARN "no robot heard for N s".
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

from fowm.ros.diagnostics import OK, WARN, DiagnosticsReporter, Health
from fowm.ros.params import declare_from_dataclass
from fowm.ros.spin import run_nodes
from fowm.ros.transfer import CONTROL_QOS, BlobReceiver, LinkHeartbeat
from fowm_core.contract import topics
from fowm_core.errors import ConfigError
from fowm_core.runtime.control import param_meta as _p
from fowm_core.runtime.remote import BagInbox
from fowm_core.runtime.transfer import Completed


@dataclass(frozen=True)
class LearnerLinkParams:
    bag_dir: str = field(default="", metadata=_p(
        "where received bags go: the learner's bag_dir (on this host only)"))
    max_transfer_bytes: int = field(default=256 << 20, metadata=_p(
        "largest bag accepted (bytes)", 1, 2**31 - 1))
    transfer_timeout_s: float = field(default=20.0, metadata=_p(
        "drop an incomplete transfer after this many silent seconds", 0.5, 3600.0))
    peer_timeout_s: float = field(default=3.0, metadata=_p(
        "the robot counts as gone after this many seconds without its heartbeat", 0.5, 600.0))


class LearnerLinkNode(Node):
    """Node ``fowm_learner_link``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("fowm_learner_link", **kwargs)
        self.params = p = declare_from_dataclass(self, "", LearnerLinkParams)
        if not p.bag_dir:
            msg = "parameter bag_dir is empty: set it to the learner's bag_dir on this host"
            raise ConfigError(msg)
        self.inbox = BagInbox(Path(p.bag_dir))
        self._lock = threading.Lock()
        self.acked: list[dict[str, Any]] = []
        self.ack_pub = self.create_publisher(String, topics.EPISODE_ACK, CONTROL_QOS)
        self.episodes = BlobReceiver(self, topics.EPISODE_BLOB, "episode", p.max_transfer_bytes,
                                     p.transfer_timeout_s, self._on_episode)
        self.link = LinkHeartbeat(self, "learner", "robot", p.peer_timeout_s,
                                  lambda: {"bags_received": len(self.inbox.received)})
        self.diag = DiagnosticsReporter(self, "fowm_learner_link: robot link",
                                        "fowm_learner_link")
        self.diag.publish_every(health=self._health)
        self.get_logger().info(f"receiving episode bags into {p.bag_dir}")

    def _on_episode(self, done: Completed) -> None:
        """Worker thread: write (or find) the bag, then acknowledge it."""
        ack = self.inbox.accept(done.meta, done.payload)
        if self.context.ok():
            self.ack_pub.publish(String(data=json.dumps(ack, sort_keys=True)))
        with self._lock:
            self.acked.append({**ack, "bytes": len(done.payload), "wall_s": time.time()})

    def _health(self) -> Health:
        alive, text = self.link.state()
        watch = self.link.watch
        with self._lock:
            acked = len(self.acked)
        values = {"robot_heard": alive, "link": text, "partitions": watch.partitions,
                  "longest_partition_s": f"{watch.longest_s:.1f}",
                  "bags_received": len(self.inbox.received), "acks_sent": acked,
                  "refused": len(self.episodes.refused),
                  "transfer": str(self.episodes.in_progress or "idle")}
        if not alive:
            return WARN, f"{text}; learning goes on with the bags received", values
        return OK, f"{text}; {len(self.inbox.received)} bags received", values

    def destroy_node(self) -> None:
        self.episodes.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Console script `ros2 run fowm learner_link`: this node until SIGINT/SIGTERM."""
    run_nodes([LearnerLinkNode], args)


if __name__ == "__main__":
    main()
