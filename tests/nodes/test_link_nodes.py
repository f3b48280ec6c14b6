"""fowm_robot_link and fowm_learner_link in one process (docs/two_hosts.md): bags shipped and
acknowledged once, a checkpoint sent as bytes and handed to the planner as a signed announcement
by bare file name, a forged transfer not stored, and the partition on /diagnostics."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from fowm.nodes.learner_link import LearnerLinkNode
from fowm.nodes.robot_link import RobotLinkNode
from fowm.ros import qos
from fowm.ros.transfer import BlobSender, WeightsShipper
from helpers.loop import collect, tiny_config, tiny_model_checkpoint
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import String

from fowm_core.contract import topics
from fowm_core.runtime import trust
from fowm_core.runtime.hotswap import Weights
from fowm_core.runtime.ingest import announcement
from fowm_core.runtime.remote import WeightsInbox, checkpoint_files
from fowm_core.runtime.trust import generate_key, load_key


def unguarded(node: Node) -> list[str]:
    """Subscriptions and timers whose callback fowm.ros.guard did not make."""
    found = [(s.topic_name, s.callback) for s in node.subscriptions]
    found += [(f"timer {t.timer_period_ns}", t.callback) for t in node.timers]
    return [name for name, cb in found if not getattr(cb, "fowm_guarded", False)]


def _params(**values: object) -> list[Parameter]:
    return [Parameter(k, value=v) for k, v in values.items()]


def test_bags_and_weights_cross_and_a_silent_peer_is_reported(
        executor, spin_until, tmp_path: Path) -> None:
    key_file = generate_key(tmp_path / "lab.key")
    key = load_key(key_file)
    robot_bags = collect(tmp_path / "robot_bags", 2, task="reach")
    (robot_bags / "dataset.json").unlink(missing_ok=True)
    store, received = tmp_path / "store", tmp_path / "received"
    robot = RobotLinkNode(parameter_overrides=_params(
        bag_dir=str(robot_bags), store_dir=str(store), key_file=str(key_file),
        peer_timeout_s=1.0))
    learner_link = LearnerLinkNode(parameter_overrides=_params(bag_dir=str(received)))
    probe = Node("link_probe")
    announced: list[dict] = []
    status: dict[str, tuple[int, str]] = {}
    probe.create_subscription(String, topics.WEIGHTS,
                              lambda m: announced.append(json.loads(m.data)), qos.LATCHED)

    def on_diag(msg: DiagnosticArray) -> None:
        for s in msg.status:
            status[s.name] = (int.from_bytes(s.level, "little") if isinstance(s.level, bytes)
                              else int(s.level), s.message)
    probe.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, on_diag, qos.DIAGNOSTICS)
    for node in (robot, learner_link, probe):
        executor.add_node(node)
    # No payload may end the executor's spin (fowm.ros.guard), as for every other node.
    assert unguarded(robot) == [] and unguarded(learner_link) == []

    # Bags: each shipped, written once on the other side, acknowledged.
    assert spin_until(lambda: robot.outbox.shipped == 2, timeout_s=30), robot.outbox.pending()
    names = sorted(p.name for p in robot_bags.iterdir() if not p.name.startswith("."))
    assert sorted(learner_link.inbox.received) == names
    assert sorted(p.name for p in received.iterdir() if not p.name.startswith(".")) == names

    # Weights: the learner's shipper sends bytes; the robot stores them and announces them.
    ckpt = tiny_model_checkpoint(tmp_path / "learner" / "step_00000025.safetensors", step=25)
    note = announcement(Weights(ckpt.name, hashlib.sha256(ckpt.read_bytes()).hexdigest(), 25),
                        tiny_config(), key=key, sender="fowm_learner/1").as_dict()
    sender_node = Node("fowm_learner")
    executor.add_node(sender_node)
    shipper = WeightsShipper(sender_node)
    assert unguarded(sender_node) == []
    shipper.offer(note, ckpt)
    assert spin_until(lambda: any(a.get("step") == 25 for a in announced), timeout_s=30)
    got = next(a for a in announced if a.get("step") == 25)
    assert got["path"] == ckpt.name and trust.verify(key, got, got["signature"])
    assert (store / ckpt.name).read_bytes() == ckpt.read_bytes()
    # The robot's heartbeat now reports step 25: no re-send is due.
    assert spin_until(lambda: shipper.robot.peer.get("weights_step") == 25, timeout_s=10)

    # A transfer whose announcement is not signed by the lab key is not stored.
    forged = {**note, "step": 50, "path": "step_00000050.safetensors"}
    bad = BlobSender(sender_node, topics.WEIGHTS_BLOB, "weights")
    bad.send(lambda: ("forged#1", *checkpoint_files(ckpt, forged)))
    assert spin_until(lambda: robot.weights.refused, timeout_s=20)
    assert "not signed" in robot.weights.refused[-1]
    assert not (store / "step_00000050.safetensors").exists()
    bad.close()
    shipper.sender.close()

    # The workstation goes silent: the robot's link status says so.
    assert spin_until(lambda: status.get("fowm_robot_link: learner link", (9,))[0] == 0,
                      timeout_s=10)
    executor.remove_node(learner_link)
    learner_link.destroy_node()
    assert spin_until(lambda: "no learner heard" in status.get(
        "fowm_robot_link: learner link", (0, ""))[1], timeout_s=15), status
    assert status["fowm_robot_link: learner link"][0] == 1


def test_a_restarted_robot_link_offers_its_newest_stored_checkpoint(
        executor, spin_until, tmp_path: Path) -> None:
    key_file = generate_key(tmp_path / "lab.key")
    ckpt = tiny_model_checkpoint(tmp_path / "learner" / "step_00000040.safetensors", step=40)
    note = announcement(Weights(ckpt.name, hashlib.sha256(ckpt.read_bytes()).hexdigest(), 40),
                        tiny_config(), key=load_key(key_file), sender="fowm_learner/1").as_dict()
    WeightsInbox(tmp_path / "store", load_key(key_file)).accept(*checkpoint_files(ckpt, note))
    probe = Node("link_probe")
    announced: list[dict] = []
    probe.create_subscription(String, topics.WEIGHTS,
                              lambda m: announced.append(json.loads(m.data)), qos.LATCHED)
    robot = RobotLinkNode(parameter_overrides=_params(
        bag_dir=str(tmp_path / "bags"), store_dir=str(tmp_path / "store"),
        key_file=str(key_file)))
    for node in (probe, robot):
        executor.add_node(node)
    assert spin_until(lambda: announced, timeout_s=15)
    assert announced[-1] == note
