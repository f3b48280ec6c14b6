"""Rigs for the two-host link nodes in the topic × class matrix (benchmarks/fault_nodes.py):
fowm_robot_link (checkpoints in from the learner's host) and fowm_learner_link (bags in from the
robot). The feed is the peer: its 10 Hz heartbeat on /fowm/link and, once a second, a whole
legitimate transfer (a new checkpoint signed with the lab key; a new bag). What must hold
whatever arrives (issue 14 × issue 11): no crash, no unverified checkpoint stored or handed to
the planner (``swaps``), no bag stored or acknowledged that the robot did not send (``bad``),
and bounded memory: the reassembly buffer never above max_transfer_bytes, the process's RSS
not growing by more than RSS_LIMIT_MB during a fault.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, ClassVar

from rclpy.node import Node
from std_msgs.msg import String

from benchmarks import fault_frames as ff
from benchmarks import fault_inputs as fi
from benchmarks import fault_rigs as fr
from fowm_core.contract import topics
from fowm_core.data import bag_cache
from fowm_core.runtime import trust
from fowm_core.runtime.remote import link_message

MAX_BYTES = 1 << 20
RSS_LIMIT_MB = 150.0


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class LinkRig(fr.Rig):
    """Common: the peer's heartbeat and transfers, the buffer high-water mark, RSS."""

    role = peer = ""
    blob_topic = ""

    def __init__(self, work: Any) -> None:
        super().__init__(work)
        self.ticks = 0
        self.max_buffer = 0
        self.first: list[bytes] = []

    def start_feeds(self) -> None:
        self.link_pub = self.helper.create_publisher(String, topics.LINK, fr.QOS[topics.LINK])
        self.blob_pub = self.helper.create_publisher(
            ff.UInt8MultiArray, self.blob_topic, fr.QOS[self.blob_topic])

    def feed(self, ns: int) -> None:
        self.link_pub.publish(String(data=link_message(self.peer, "fault_rig")))
        progress = self.receiver.in_progress
        self.max_buffer = max(self.max_buffer, progress[2] if progress else 0)
        self.ticks += 1
        if self.ticks % 10 == 0:
            frames = self.next_transfer()
            self.first = self.first or frames
            for frame in frames:
                self.blob_pub.publish(ff.blob(frame))

    def begin_row(self) -> None:
        self.max_buffer = 0

    def alive(self) -> bool:
        return self.node.context.ok()

    def snap(self) -> dict[str, Any]:
        return {"done": self.done(), "rss": rss_bytes(), "refused": len(self.receiver.refused)
                + self.node.inputs.total, "index": self.out_index()}

    def progress(self, a: dict, b: dict) -> int:
        return b["done"] - a["done"]

    expected: ClassVar[dict[str, str]] = {
        cls: f"{text}; no crash, no unverified checkpoint or bag stored or handed on, bounded "
             "memory; works after" for cls, text in (
            ("malformed", "refused and counted"), ("hostile", "refused"),
            ("flooding", "legitimate transfers still complete"),
            ("stale/future", "replays change nothing unverified"))}

    def extra(self, topic: str, cls: str, a: dict, b: dict) -> tuple[bool, str]:
        grew = (b["rss"] - a["rss"]) / 2**20
        refused = b["refused"] - a["refused"]
        ok = (self.max_buffer <= MAX_BYTES and grew < RSS_LIMIT_MB
              and (cls != "malformed" or refused > 0))        # refused and counted
        said = (f"{b['done'] - a['done']} {self.unit} during the fault; "
                f"{refused} refused; largest buffer "
                f"{self.max_buffer >> 10} KiB (limit {MAX_BYTES >> 10}); RSS {grew:+.0f} MB")
        return ok, said


class RobotLinkRig(LinkRig):
    """fowm_robot_link with the lab key; the peer is the learner's shipper."""

    label = "robot link (checkpoints in)"
    role, peer, blob_topic, unit = "robot", "learner", topics.WEIGHTS_BLOB, "checkpoints stored"
    has_swaps = True

    def build(self) -> None:
        from fowm.nodes.robot_link import RobotLinkNode
        self.key = trust.load_key(trust.generate_key(self.work / "lab.key"))
        self.store = self.work / "store"
        self.node = RobotLinkNode(parameter_overrides=fr.params(
            bag_dir=str(self.work / "bags"), store_dir=str(self.store),
            key_file=str(self.work / "lab.key"), max_transfer_bytes=MAX_BYTES,
            transfer_timeout_s=2.0, peer_timeout_s=1.0))
        self.receiver = self.node.weights
        self.helper = Node("fault_feed")
        self.announced: list[dict[str, Any]] = []
        self.helper.create_subscription(String, topics.WEIGHTS, lambda m: self.announced.append(
            json.loads(m.data)), fr.QOS[topics.WEIGHTS])
        self.signed: dict[str, str] = {}      # checkpoint name → tensor SHA-256 the lab signed
        self.step = 10
        self.start_feeds()

    def lab_checkpoint(self, step: int, transfer_id: str) -> list[bytes]:
        meta, payload = ff.checkpoint(self.key, step)
        note = meta["announcement"]
        self.signed[note["path"]] = note["sha256"]
        return ff.transfer("weights", transfer_id, meta, payload)

    def next_transfer(self) -> list[bytes]:
        self.step += 1
        return self.lab_checkpoint(self.step, f"step_{self.step:08d}.safetensors#1")

    def adjust_faults(self, topic: str, faults: dict[str, fi.Fault]) -> dict[str, fi.Fault]:
        if topic != topics.WEIGHTS_BLOB:
            return faults
        old = self.lab_checkpoint(1, "step_00000001.safetensors#1")
        return {**faults, "stale/future": ff.replays("weights", [*self.first, *old],
                                                   "a transfer already stored, and an older "
                                                   "checkpoint correctly signed (the planner "
                                                   "refuses rollbacks: its rows)")}

    def done(self) -> int:
        return len(self.node.weights_received)

    def out_index(self) -> int:
        return len(self.announced)

    def swaps(self, a: dict, b: dict) -> int:
        """Unverified checkpoints stored (now) or announced to the planner (since ``a``)."""
        stored = [p for p in self.store.glob("*.safetensors")
                  if self.signed.get(p.name) != hashlib.sha256(p.read_bytes()).hexdigest()]
        told = [n for n in self.announced[a["index"]:]
                if not (n.get("path") in self.signed
                        and trust.verify(self.key, n, n.get(trust.SIGNATURE)))]
        return len(stored) + len(told)


class LearnerLinkRig(LinkRig):
    """fowm_learner_link; the peer is the robot's bag shipper."""

    label = "learner link (bags in)"
    role, peer, blob_topic, unit = "learner", "robot", topics.EPISODE_BLOB, "bags stored"
    has_bad = True

    def build(self) -> None:
        from fowm.nodes.learner_link import LearnerLinkNode
        self.bags = self.work / "received"
        self.node = LearnerLinkNode(parameter_overrides=fr.params(
            bag_dir=str(self.bags), max_transfer_bytes=MAX_BYTES, transfer_timeout_s=2.0,
            peer_timeout_s=1.0))
        self.receiver = self.node.episodes
        self.helper = Node("fault_feed")
        self.acks: list[dict[str, Any]] = []
        self.helper.create_subscription(String, topics.EPISODE_ACK, lambda m: self.acks.append(
            json.loads(m.data)), fr.QOS[topics.EPISODE_ACK])
        self.sent: dict[str, str] = {}        # bag name → the hash of what the robot sent
        self.count = 0
        self.start_feeds()

    def next_transfer(self) -> list[bytes]:
        name = f"ep_legit_{self.count:05d}"
        self.count += 1
        meta, payload = ff.bag(name)
        self.sent[name] = meta["sha256"]
        return ff.transfer("episode", f"{name}#1", meta, payload)

    def done(self) -> int:
        return len(self.node.inbox.received)

    def out_index(self) -> int:
        return len(self.acks)

    def bad(self, a: dict, b: dict) -> int:
        """Bags stored that the robot did not send as they are (now), or acknowledged (since
        ``a``) without being sent."""
        stored = [p for p in self.bags.iterdir() if not p.name.startswith(".")
                  and self.sent.get(p.name) != bag_cache.bag_hash(p)]
        acked = [k for k in self.acks[a["index"]:] if self.sent.get(k.get("name"))
                 != k.get("sha256")]
        return len(stored) + len(acked)


class ShipperRig(LinkRig):
    """fowm_learner's subscriptions with weights_link: true are its WeightsShipper's (the
    robot's heartbeat, the receiver's progress): a shipper on a stand-in node named
    fowm_learner, offering one lab-signed checkpoint that the robot's heartbeat says it lacks
    (re-sent every 0.5 s). Its output is that checkpoint's frames, rebuilt here."""

    label = "learner's weights shipper"
    role, peer, blob_topic, unit = "learner", "robot", topics.WEIGHTS_BLOB, "checkpoints shipped"

    def build(self) -> None:
        from fowm.ros.transfer import WeightsShipper

        from fowm_core.runtime.transfer import Reassembler, TransferError
        key = trust.load_key(trust.generate_key(self.work / "lab.key"))
        meta, payload = ff.checkpoint(key, 20)
        files = ff.unpack_files(payload)
        for name, data in files.items():
            (self.work / name).write_bytes(data)
        note = meta["announcement"]
        self.node = Node("fowm_learner")
        self.shipper = WeightsShipper(self.node, chunk_bytes=ff.CHUNK, resend_s=0.5,
                                      peer_timeout_s=1.0)
        self.helper = Node("fault_feed")
        self.rebuild = Reassembler("weights", MAX_BYTES, 2.0)
        self.shipped: list[str] = []

        def on_frame(msg: Any) -> None:
            try:
                done = self.rebuild.feed(memoryview(msg.data), 0.0)
            except TransferError:
                return
            if done is not None:
                self.shipped.append(done.id)
        self.helper.create_subscription(ff.UInt8MultiArray, topics.WEIGHTS_BLOB, on_frame,
                                        fr.QOS[topics.WEIGHTS_BLOB])
        self.link_pub = self.helper.create_publisher(String, topics.LINK, fr.QOS[topics.LINK])
        self.shipper.offer(note, self.work / note["path"])

    def feed(self, ns: int) -> None:       # the robot: alive, without step 20
        self.link_pub.publish(String(data=link_message("robot", "fault_rig", weights_step=0)))

    def snap(self) -> dict[str, Any]:
        return {"done": len(self.shipped), "rss": rss_bytes(), "index": 0,
                "refused": self.node.inputs.total}

    def alive(self) -> bool:
        return self.shipper.sender._thread.is_alive()
