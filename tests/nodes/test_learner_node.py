"""fowm_learner: bags in, latched checkpoint announcements out; a bad bag is skipped; a
restarted node resumes from its ledger and checkpoint and re-announces the latest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import rclpy
from fowm.nodes.learner_node import LearnerNode
from helpers.loop import collect, tiny_checkpoint
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from fowm_core.contract import topics
from fowm_core.errors import ConfigError
from fowm_core.learning import checkpoints

LATCHED_SUB = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("learner")
    return {"dataset": collect(root / "dataset", 2, seed=0),
            "online": collect(root / "online", 2, seed=5),
            "ckpt": tiny_checkpoint(root / "pre.safetensors")}


def _node(data: dict[str, Path], bag_dir: Path) -> LearnerNode:
    return LearnerNode(parameter_overrides=[
        Parameter("bag_dir", value=str(bag_dir)), Parameter("checkpoint", value=str(data["ckpt"])),
        Parameter("dataset_dir", value=str(data["dataset"])), Parameter("poll_s", value=0.05),
        Parameter("yield_s", value=0.0)])


def test_bags_are_learned_once_and_checkpoints_announced_latched(
        executor, spin_until, data: dict[str, Path], tmp_path: Path) -> None:
    bag_dir = tmp_path / "bags"
    bag_dir.mkdir()
    online = sorted(p for p in data["online"].iterdir() if (p / "metadata.yaml").exists())
    shutil.copytree(online[0], bag_dir / "ep0")
    broken = bag_dir / "ep_broken"
    shutil.copytree(online[1], broken)
    for f in broken.glob("*.mcap"):
        f.write_bytes(b"\x89MCAP0\r\n" + b"\0" * 64)              # a corrupt storage file
    node = _node(data, bag_dir)
    executor.add_node(node)
    assert spin_until(lambda: len(node.announced) == 1, timeout_s=60), node.error
    ll = node.learner
    assert ll is not None and [e.name for e in ll.ledger.ingested] == ["ep0"]
    assert [e.name for e in ll.ledger.failed] == ["ep_broken"]        # reported, skipped
    shutil.copytree(online[1], bag_dir / "ep1")                       # a good bag arrives later
    assert spin_until(lambda: len(node.announced) == 2, timeout_s=60), node.error
    # A subscriber that joins late still gets the newest announcement (transient-local).
    heard: list[dict] = []
    late = rclpy.create_node("late_listener")
    late.create_subscription(String, topics.WEIGHTS, lambda m: heard.append(json.loads(m.data)),
                             LATCHED_SUB)
    executor.add_node(late)
    assert spin_until(lambda: bool(heard), timeout_s=10)
    assert heard[-1] == node.announced[-1]
    info = heard[-1]
    tensors, meta = checkpoints.load_checkpoint(info["path"])
    assert meta["step"] == info["step"] == 2 * 25 and len(tensors) > 0

    # Restart: same directory, a new node. Nothing is ingested twice; the latest is re-announced.
    executor.remove_node(node)
    node.destroy_node()
    again = _node(data, bag_dir)
    executor.add_node(again)
    assert spin_until(lambda: again.ready.is_set() and bool(again.announced), timeout_s=60)
    assert again.announced[0]["sha256"] == info["sha256"]
    spin_until(lambda: False, timeout_s=0.5)                          # a few polls
    assert again.learner is not None and again.learner.owed_updates == 0
    assert len(again.learner.ledger.entries) == 3
    assert again.learner.agent.learner.step == 2 * 25


def test_a_learner_without_a_bag_dir_is_a_config_error(ros: None) -> None:
    with pytest.raises(ConfigError, match="bag_dir"):
        LearnerNode()


def test_a_training_thread_that_dies_is_restarted_and_resumes(
        executor, spin_until, data: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from fowm_core.runtime.ingest import LiveLearner

    train_one = LiveLearner.train_one
    calls = {"n": 0}

    def crash_once(self: LiveLearner) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in an update")
        return train_one(self)

    monkeypatch.setattr(LiveLearner, "train_one", crash_once)
    bag_dir = tmp_path / "bags"
    online = sorted(p for p in data["online"].iterdir() if (p / "metadata.yaml").exists())
    shutil.copytree(online[0], bag_dir / "ep0")
    node = _node(data, bag_dir)
    executor.add_node(node)
    assert spin_until(lambda: len(node.announced) == 1, timeout_s=60), node.error
    assert node._thread.restarts == 1 and "a bug in an update" in node._thread.last_error
    assert node.learner is not None and [e.name for e in node.learner.ledger.ingested] == ["ep0"]
