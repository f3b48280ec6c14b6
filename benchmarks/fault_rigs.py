"""One rig per node under test for the topic × class matrix (benchmarks/fault_nodes.py): the node,
the normal traffic it needs to do its work (``feed``, 10 Hz, one stamp per step) and what counts
as its output. ``snap()`` reads counters; the runner compares snaps around the fault:
``progress`` (work done), ``bad`` (non-finite or out-of-range commands/outputs), ``swaps``
(weights swapped in), ``misses`` (control-loop deadline misses), ``alive`` (its threads).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path
from typing import Any, ClassVar

from fowm.ros import qos
from fowm.ros.transfer import BLOB_QOS, CONTROL_QOS
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float32, String
from std_srvs.srv import Trigger

from benchmarks import fault_inputs as fi
from benchmarks import fault_planner as fp
from fowm_core.contract import topics
from fowm_core.runtime import trust

QOS = {topics.ACTION: qos.COMMAND, topics.REWARD: qos.COMMAND, topics.EPISODE: qos.EVENTS,
       topics.WEIGHTS: qos.LATCHED, topics.WEIGHTS_BLOB: BLOB_QOS, topics.EPISODE_BLOB: BLOB_QOS,
       topics.LINK: CONTROL_QOS, topics.EPISODE_ACK: CONTROL_QOS,
       topics.TRANSFER_PROGRESS: CONTROL_QOS}
NORMAL = {topics.COLOR_IMAGE: fi.image, topics.COLOR_INFO: fi.camera_info,
          topics.JOINT_STATES: fi.joints, topics.EE_POSE: lambda ns: fi.pose(ns, 0.3),
          topics.OBJECT_POSE: lambda ns: fi.pose(ns, 0.35),
          topics.GOAL_POSE: lambda ns: fi.pose(ns, 0.4), topics.ACTION: fi.action,
          topics.REWARD: lambda ns: Float32(data=0.5)}


def params(**values: Any) -> list[Parameter]:
    return [Parameter(k, value=v) for k, v in values.items()]


class Rig:
    """Base: ``build()`` makes ``node`` (under test) and ``helper`` (feeds and listens)."""

    label = ""
    flood_image = (640, 480)
    has_misses = has_swaps = has_bad = False
    expected: ClassVar[dict[str, str]] = {}     # a class's expectation, where not fault_nodes'

    def __init__(self, work: Path) -> None:
        self.work = work
        self.mutate: dict[str, Any] = {}        # topic → edit of the fed message (a fault)
        self.topic = ""                         # the topic the current row faults
        self.feeds: dict[str, Any] = {}
        self.node: Any = None
        self.helper: Any = None

    def nodes(self) -> list[Node]:
        return [self.node, self.helper]

    def feed_topics(self) -> list[str]:
        return []

    def make_feeds(self) -> None:
        self.feeds = {t: self.helper.create_publisher(NORMAL_TYPES[t], t, QOS.get(
            t, qos.SENSOR_PUB)) for t in self.feed_topics()}

    def feed(self, ns: int) -> None:
        for topic, pub in self.feeds.items():
            msg = NORMAL[topic](ns)
            if topic in self.mutate:
                msg = self.mutate[topic](msg)
            pub.publish(msg)

    def signed(self, kind: str) -> list[Any] | None:
        return None

    def adjust_faults(self, topic: str, faults: dict[str, Any]) -> dict[str, Any]:
        """Faults only this rig's node can be judged on (fault_rigs_camera: a frame of
        another size)."""
        return faults

    def begin_row(self) -> None:
        pass

    def end_row(self, spin: Any) -> int | None:
        return None

    def extra(self, topic: str, cls: str, a: dict, b: dict) -> tuple[bool, str]:
        return True, ""

    def misses(self, a: dict, b: dict) -> int | None:
        return int(b["misses"] - a["misses"]) if "misses" in a else None

    def swaps(self, a: dict, b: dict) -> int | None:
        return b["swaps"] - a["swaps"] if "swaps" in a else None


NORMAL_TYPES = {topics.COLOR_IMAGE: Image, topics.COLOR_INFO: CameraInfo,
                topics.JOINT_STATES: JointState, topics.EE_POSE: fi.PoseStamped,
                topics.OBJECT_POSE: fi.PoseStamped, topics.GOAL_POSE: fi.PoseStamped,
                topics.ACTION: JointState, topics.REWARD: Float32}


class PlannerRig(Rig):
    """fowm_planner with the lab's trust set-up (fault_planner.Harness); ``state``: the second
    planner, a state-mode lift checkpoint (reads object_pose, no image)."""

    has_misses = has_swaps = has_bad = True

    def __init__(self, work: Path, state: bool = False) -> None:
        super().__init__(work)
        self.state = state
        self.label = "planner (state obs)" if state else "planner (rgb + proprio)"

    def build(self) -> None:
        from fowm.nodes.planner_node import PlannerNode
        h = self.harness = fp.Harness.__new__(fp.Harness)
        fp.Harness.__init__(h, self.work)
        if self.state:
            h.params["checkpoint"] = str(state_checkpoint(self.work / "state.safetensors"))
        self.node = PlannerNode(parameter_overrides=params(**h.params))
        self.helper = Node("fault_feed")
        self.actions: list[JointState] = []
        self.helper.create_subscription(JointState, topics.ACTION, self.actions.append,
                                        qos.COMMAND)
        self.make_feeds()

    def feed_topics(self) -> list[str]:
        return [t for _, t in self.node.streams.values()]

    def signed(self, kind: str) -> list[Any]:
        h, steps = self.harness, itertools.count(200)

        def note(body: dict[str, Any]) -> String:
            return String(data=json.dumps(body))
        if kind == "stale":          # a correctly signed rollback (5 < live 100)
            old = fp.forged_checkpoint(h, "old.safetensors", 5)
            return [lambda ns: note(h.signed(old, 5))]
        rnd = fp.forged_checkpoint(h, "random.safetensors", 300)
        other = trust.load_key(trust.generate_key(h.work / "other.key"))

        def unsigned(ns: int) -> String:
            body = h.signed(rnd, next(steps))
            body.pop(trust.SIGNATURE)
            return note(body)
        return [unsigned, lambda ns: note(h.signed(rnd, next(steps), key=other))]

    def snap(self) -> dict[str, Any]:
        p = self.node
        return {"plans": p.counters.plans, "holds": dict(p.counters.holds_by_reason),
                "actions": len(self.actions), "swaps": p.weights.swapper.stats.swaps,
                "misses": p.loop.stats.summary().get("deadline_misses", 0)}

    def progress(self, a: dict, b: dict) -> int:
        return b["plans"] - a["plans"]

    def bad(self, a: dict, b: dict) -> int:
        return sum(1 for m in self.actions[a["actions"]:b["actions"]]
                   if not all(math.isfinite(v) and -1.0 <= v <= 1.0 for v in m.position))

    def alive(self) -> bool:
        return self.node.loop.is_running

    def extra(self, topic: str, cls: str, a: dict, b: dict) -> tuple[bool, str]:
        """Observation faults: no plan on the faulty data (one may be in flight as it starts);
        a flood from a second publisher: held as input_conflict."""
        plans = b["plans"] - a["plans"]
        holds = {k: v - a["holds"].get(k, 0) for k, v in b["holds"].items()
                 if v - a["holds"].get(k, 0)}
        said = f"{plans} plans, holds {holds}"
        if topic in (topics.EPISODE, topics.WEIGHTS):
            return True, said
        if cls == "flooding":
            return plans <= 1 and "input_conflict" in holds, said
        return plans <= 1, said


def state_checkpoint(path: Path) -> Path:
    from fowm_core.jobs import workflows
    from fowm_core.learning.checkpoints import save_agent
    from fowm_core.model import WorldModel
    cfg = workflows.preset_for("cpu", "lift", "state").with_overrides(
        {"planner": {"iterations": 2, "num_samples": 32, "num_elites": 8},
         "model": {"mlp_dim": 32, "latent_dim": 16}})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_agent(path, WorldModel(cfg.model), cfg, step=100, metrics={})
    return path


class EpisodeManagerRig(Rig):
    """fowm_episode_manager in sim mode against a stand-in twin (its ~/reset and seed only);
    the feed answers every observation with an action of the same stamp, as the planner."""

    label = "episode manager"
    flood_image = (84, 84)
    has_bad = True

    def build(self) -> None:
        from fowm.nodes.episode_manager import EpisodeManagerNode
        ckpt = fp.tiny_checkpoint(self.work / "rgb.safetensors")
        twin = self.twin = Node("fowm_sim")
        twin.declare_parameter("seed", 0)
        twin.create_service(Trigger, "~/reset", self._reset)
        self.node = EpisodeManagerNode(parameter_overrides=params(
            checkpoint=str(ckpt), episode_length=40, service_timeout_s=5.0))
        self.helper = Node("fault_feed")
        self.rewards: list[float] = []
        self.helper.create_subscription(Float32, topics.REWARD,
                                        lambda m: self.rewards.append(m.data), qos.COMMAND)
        # A listener for the events, as the planner and recorder are: the manager waits up to
        # 2 s for one before each episode.
        self.helper.create_subscription(String, topics.EPISODE, lambda m: None, qos.EVENTS)
        self.make_feeds()

    def _reset(self, _req: Any, res: Any) -> Any:
        res.success = True
        res.message = json.dumps({"seed": self.twin.get_parameter("seed").value,
                                  "stamp_ns": self.twin.get_clock().now().nanoseconds})
        return res

    def nodes(self) -> list[Node]:
        return [self.node, self.helper, self.twin]

    def feed_topics(self) -> list[str]:
        return [t for _, t in self.node.streams.values()] + [topics.ACTION]

    def snap(self) -> dict[str, Any]:
        return {"rewards": len(self.rewards)}

    def progress(self, a: dict, b: dict) -> int:
        return b["rewards"] - a["rewards"]

    def bad(self, a: dict, b: dict) -> int:
        return sum(not math.isfinite(r) for r in self.rewards[a["rewards"]:b["rewards"]])

    def alive(self) -> bool:
        return self.node._worker.is_alive()

    def extra(self, topic: str, cls: str, a: dict, b: dict) -> tuple[bool, str]:
        return True, f"{b['rewards'] - a['rewards']} rewards during the fault"


class RecorderRig(Rig):
    """fowm_recorder with the lab key; each row is one episode (start before the fault, end after
    the recovery): a completed episode without its bag is lost."""

    label = "recorder"
    flood_image = (160, 120)

    def build(self) -> None:
        from fowm.nodes.recorder_node import RecorderNode
        key = trust.generate_key(self.work / "lab.key")
        self.bags = self.work / "bags"
        self.node = RecorderNode(parameter_overrides=params(
            bag_dir=str(self.bags), grace_s=0.2, key_file=str(key)))
        self.helper = Node("fault_feed")
        self.events = self.helper.create_publisher(String, topics.EPISODE, qos.EVENTS)
        self.episode = itertools.count(100)
        self.current = (0, 0)
        self.make_feeds()

    def feed_topics(self) -> list[str]:
        return [t for t in topics.RECORDED if t not in (topics.EPISODE, topics.WEIGHTS)]

    def begin_row(self) -> None:
        ns = self.node.get_clock().now().nanoseconds
        self.current = (next(self.episode), ns)
        self.events.publish(String(data=json.dumps({"event": "start", "task": "lift",
                                                     "episode": self.current[0], "seed": 0})))

    def end_row(self, spin: Any) -> int:
        episode, first = self.current
        final = self.node.get_clock().now().nanoseconds - 50_000_000
        before = len(self.node.written)
        self.events.publish(String(data=json.dumps({
            "event": "end", "task": "lift", "episode": episode, "steps": 10,
            "first_stamp_ns": first, "final_stamp_ns": final})))
        spin(10.0, until=lambda: len(self.node.written) > before)
        ours = [p for p in self.node.written[before:] if f"ep{episode:05d}" in p.name]
        # Whole, not cut short (by a forged end, say): a stream the row did not fault, 10 Hz,
        # over the whole row (faulted messages stamped outside the episode are rightly cut).
        stream = topics.EE_POSE if self.topic == topics.JOINT_STATES else topics.JOINT_STATES
        expected = 0.6 * (final - first) * 1e-9 * 10
        return int(not ours or messages_in(ours[0], stream) < expected)

    def snap(self) -> dict[str, Any]:
        with self.node._lock:
            ep = self.node._episode
            return {"messages": len(ep.messages) if ep is not None else 0}

    def progress(self, a: dict, b: dict) -> int:
        return b["messages"] - a["messages"]

    def alive(self) -> bool:
        return self.node._writer.is_alive()


def messages_in(bag: Path, topic: str) -> int:
    from rosbags.rosbag2 import Reader
    with Reader(bag) as reader:
        return sum(c.msgcount for c in reader.connections if c.topic == topic)


class ArmRig(Rig):
    """fowm_sim (real time) or fowm_xarm (SDK double, armed): the feed is the planner's action
    stream; bad = an executed command that is non-finite, out of range or stale."""

    flood_image = (84, 84)
    has_bad = True

    def __init__(self, work: Path, xarm: bool) -> None:
        super().__init__(work)
        self.xarm = xarm
        self.label = "xarm node (SDK double)" if xarm else "sim twin"
        self.has_misses = not xarm

    def build(self) -> None:
        self.helper = Node("fault_feed")
        self.joint_msgs: list[Any] = []
        self.helper.create_subscription(JointState, topics.JOINT_STATES,
                                        self.joint_msgs.append, qos.SENSOR_PUB)
        self.executed: list[tuple[Any, float | None]] = []
        if self.xarm:
            from fowm.nodes.xarm_node import XArmNode

            from tests.doubles.xarm_double import XArmDouble
            self.double = XArmDouble("10.0.0.1", is_radian=True, do_not_open=True)
            self.node = XArmNode(api_factory=lambda ip, rt: self.double, parameter_overrides=(
                params(rate_hz=50.0, with_gripper=False)))
        else:
            from fowm.nodes.sim_node import SimNode
            ckpt = fp.tiny_checkpoint(self.work / "rgb.safetensors")
            self.node = SimNode(parameter_overrides=params(checkpoint=str(ckpt),
                                                           episode_length=100000))
            step = self.node._step

            def recorded(action: Any) -> None:
                self.executed.append((action, None))
                step(action)
            self.node._step = recorded
        self.make_feeds()

    def armed(self) -> None:
        if self.xarm and not self.node.gate.is_armed:
            self.node._on_rearm(None, Trigger.Response())

    def feed_topics(self) -> list[str]:
        return [topics.ACTION]

    def snap(self) -> dict[str, Any]:
        if self.xarm:
            return {"sent": len(self.double.sim_commands), "joints": len(self.joint_msgs),
                    "conflict": self.node.counts["conflict_holds"]}
        return {"sent": len(self.executed), "joints": len(self.joint_msgs),
                "conflict": self.node.conflict_holds,
                "misses": self.node.loop.stats.summary().get("deadline_misses", 0)}

    def progress(self, a: dict, b: dict) -> int:
        return min(b["joints"] - a["joints"], b["sent"] - a["sent"])

    def bad(self, a: dict, b: dict) -> int:
        if self.xarm:
            cap = self.node.limits.max_speed_m_s * 1000.0 * 1.001
            return sum(1 for _, speeds, _ in self.double.sim_commands[a["sent"]:b["sent"]]
                       if not all(math.isfinite(v) and abs(v) <= cap for v in speeds[:3]))
        return sum(1 for action, _ in self.executed[a["sent"]:b["sent"]]
                   if not all(math.isfinite(float(v)) and -1.0 <= v <= 1.0 for v in action))

    def alive(self) -> bool:
        return True if self.xarm else self.node.loop.is_running

    def extra(self, topic: str, cls: str, a: dict, b: dict) -> tuple[bool, str]:
        held = b["conflict"] - a["conflict"]
        if cls != "flooding":
            return True, f"{b['sent'] - a['sent']} commands executed"
        return held > 0, f"held {held} ticks: another /fowm/action publisher"


def wait_armed(rig: Rig, spin: Any) -> None:
    if isinstance(rig, ArmRig) and rig.xarm:
        spin(5.0, until=lambda: rig.node.arm.is_connected)
        rig.armed()
        time.sleep(0.05)
