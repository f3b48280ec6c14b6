"""Fault rows against a live fowm_planner (real rclpy, in this process): hostile and malformed
messages on every subscribed topic, floods and second publishers, time faults, forged weights.

Each row gets a fresh ROS context on its own domain: a planner (tiny lift checkpoint, 10 Hz),
a fake robot publishing every stream at 10 Hz, and the injector. A row runs ``settle`` (normal),
``fault`` (the injection) and ``recover`` (normal again) and counts, during the fault: exceptions
out of the executor (a callback that would end `fowm run`: a crash), a dead control thread,
non-finite or out-of-range commands, swaps to untrusted weights and deadline misses.
Used by benchmarks/fault_suite.py.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
import torch
from fowm.nodes.planner_node import PlannerNode
from fowm.ros import qos
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from fowm_core.config import FowmConfig, cpu
from fowm_core.contract import topics
from fowm_core.learning.checkpoints import save_agent
from fowm_core.model import WorldModel
from fowm_core.runtime import trust
from fowm_core.runtime.hotswap import Weights

JOINTS = [f"joint{i}" for i in range(1, 8)] + [topics.GRIPPER_JOINT]
RATE_HZ = 10.0
_domains = itertools.count()


def tiny_config() -> FowmConfig:
    return cpu("lift", "all").with_overrides({
        "planner": {"iterations": 2, "num_samples": 32, "num_elites": 8},
        "model": {"mlp_dim": 32, "enc_dim": 32, "num_channels": 4, "latent_dim": 16}})


def tiny_checkpoint(path: Path, seed: int = 0, step: int = 100) -> Path:
    torch.manual_seed(seed)
    cfg = tiny_config()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_agent(path, WorldModel(cfg.model), cfg, step=step, metrics={})
    return path


def close_executor(executor: SingleThreadedExecutor, nodes: list[Any]) -> None:
    """Remove and destroy ``nodes``, then end the executor and rclpy's context."""
    for node in nodes:
        try:
            executor.remove_node(node)
            node.destroy_node()
        except Exception:               # a wedged node must not stop the suite
            pass
    executor.shutdown()
    rclpy.try_shutdown()


@dataclass
class Outcome:
    """What one row observed during its fault phase (and whether planning came back after)."""

    crashes: int = 0
    crash_detail: str = ""
    control_alive: bool = True
    bad_commands: int = 0
    commands: int = 0
    plans_during: int = 0
    holds_during: dict[str, int] = field(default_factory=dict)
    recovered: bool = False
    swaps: int = 0
    refused: list[str] = field(default_factory=list)
    deadline_misses: int = 0
    ticks: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Robot:
    """The legitimate publisher of every stream (one stamp per step); ``mutate`` edits a message
    before it is sent, to model a faulty driver (same publisher, hostile content)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.pubs = {"image": node.create_publisher(Image, topics.COLOR_IMAGE, qos.SENSOR_PUB),
                     "ee_pose": node.create_publisher(PoseStamped, topics.EE_POSE, qos.SENSOR_PUB),
                     "object_pose": node.create_publisher(PoseStamped, topics.OBJECT_POSE,
                                                          qos.SENSOR_PUB),
                     "joint_states": node.create_publisher(JointState, topics.JOINT_STATES,
                                                           qos.SENSOR_PUB)}
        self.mutate: dict[str, Callable[[Any], Any]] = {}

    def publish(self) -> None:
        stamp = self.node.get_clock().now().to_msg()
        img = Image(height=84, width=84, encoding="rgb8", step=252,
                    data=np.full((84, 84, 3), 120, np.uint8).tobytes())
        msgs: dict[str, Any] = {"image": img}
        for name, x in (("ee_pose", 0.3), ("object_pose", 0.35)):
            pose = PoseStamped()
            pose.header.frame_id = topics.BASE_FRAME
            pose.pose.position.x, pose.pose.position.z = x, 0.2
            pose.pose.orientation.w = 1.0
            msgs[name] = pose
        msgs["joint_states"] = JointState(name=JOINTS, position=[0.0] * 8)
        for name, msg in msgs.items():
            msg.header.stamp = stamp
            if name in self.mutate:
                msg = self.mutate[name](msg)
            self.pubs[name].publish(msg)


class Harness:
    """A planner, a robot and an injector node on a fresh domain (context manager)."""

    def __init__(self, work: Path, **params: Any) -> None:
        self.work = work
        self.ckpt = tiny_checkpoint(work / "live.safetensors")
        # The lab's trust set-up (docs/trust.md): the key the learner signs with and the only
        # directory weights may come from; forged rows differ from an honest one in one respect.
        self.trusted = work / "checkpoints"
        self.trusted.mkdir(parents=True, exist_ok=True)
        self.key_file = trust.generate_key(work / "lab.key")
        self.key = trust.load_key(self.key_file)
        self._probes = itertools.count(10_000)
        self.params = {"checkpoint": str(self.ckpt), "rate_hz": RATE_HZ,
                       "max_obs_age_s": 0.5, "trust.key_file": str(self.key_file),
                       "trust.trusted_dir": str(self.trusted), **params}

    def signed(self, path: Path | str, step: int, key: bytes | None = None,
               sha256: str | None = None) -> dict[str, Any]:
        """A learner's announcement of ``path``, signed with ``key`` (default: the lab key)."""
        if sha256 is None:
            sha256 = Weights.of_checkpoint(path).sha256 if Path(path).is_file() else "ab" * 32
        return trust.announcement(key or self.key, path=str(path), sha256=sha256, step=step,
                                  cfg=tiny_config(), sender="fault_injector/1")

    def __enter__(self) -> Harness:
        os.environ["ROS_DOMAIN_ID"] = str(120 + (os.getpid() + next(_domains)) % 80)
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        rclpy.init()
        self.executor = SingleThreadedExecutor()
        self.planner = PlannerNode(parameter_overrides=[
            Parameter(k, value=v) for k, v in self.params.items()])
        self.helper = Node("fault_robot")
        self.robot = Robot(self.helper)
        self.injector = Node("fault_injector")
        self.actions: list[JointState] = []
        self.intruders: list[Any] = []
        self.helper.create_subscription(JointState, topics.ACTION, self.actions.append,
                                        qos.COMMAND)
        for node in (self.planner, self.helper, self.injector):
            self.executor.add_node(node)
        return self

    def __exit__(self, *exc: object) -> None:
        close_executor(self.executor, [self.injector, self.helper, self.planner])

    def spin(self, seconds: float, every: Callable[[], None] | None = None,
             every_hz: float = 0.0, crashes: list[str] | None = None) -> None:
        end = time.monotonic() + seconds
        next_robot = next_every = 0.0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_robot:
                self.robot.publish()
                next_robot = now + 1.0 / RATE_HZ
            if every is not None and now >= next_every:
                every()
                next_every = now + (1.0 / every_hz if every_hz else 1e9)
            try:
                self.executor.spin_once(timeout_sec=0.001 if every_hz > 100 else 0.005)
            except Exception as err:        # out of a callback: `fowm run` would have ended
                if crashes is not None:
                    crashes.append(f"{type(err).__name__}: {err}"[:160])

    def run(self, fault: Callable[[Harness], Callable[[], None] | None], fault_s: float = 2.5,
            every_hz: float = 0.0, clear: Callable[[Harness], None] | None = None,
            settle_s: float = 1.5, recover_s: float = 2.5) -> Outcome:
        p = self.planner
        self.spin(settle_s)
        before = (p.counters.plans, p.loop.stats.summary().get("deadline_misses", 0),
                  p.counters.ticks, dict(p.counters.holds_by_reason), len(self.actions),
                  p.weights.swapper.stats.swaps)
        crashes: list[str] = []
        every = fault(self)
        self.spin(fault_s, every, every_hz, crashes)
        out = Outcome(crashes=len(crashes), crash_detail=crashes[0] if crashes else "")
        out.plans_during = p.counters.plans - before[0]
        out.deadline_misses = int(p.loop.stats.summary().get("deadline_misses", 0) - before[1])
        out.ticks = p.counters.ticks - before[2]
        out.holds_during = {k: v - before[3].get(k, 0)
                            for k, v in p.counters.holds_by_reason.items()
                            if v - before[3].get(k, 0)}
        during = self.actions[before[4]:]
        out.commands = len(during)
        out.bad_commands = sum(1 for m in during if not all(
            math.isfinite(v) and -1.0 <= v <= 1.0 for v in m.position))
        self.robot.mutate.clear()
        for pub in self.intruders:
            self.injector.destroy_publisher(pub)
        if clear is not None:
            clear(self)
        plans = p.counters.plans
        self.spin(recover_s, crashes=crashes)
        out.crashes = len(crashes)
        out.recovered = p.counters.plans > plans
        out.control_alive = p.loop.is_running
        stats = p.weights.swapper.stats
        out.swaps = stats.swaps - before[5]
        out.refused = [f"{p}: {why}" for p, why in stats.refused]
        return out


# -- injections --------------------------------------------------------------------------------
def mutate(stream: str, edit: Callable[[Any], Any]) -> Callable[[Harness], None]:
    def inject(h: Harness) -> None:
        h.robot.mutate[stream] = edit
    return inject


def shift_stamp(seconds: float) -> Callable[[Any], Any]:
    def edit(msg: Any) -> Any:
        ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec + int(seconds * 1e9)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(max(ns, 0), 10**9)
        return msg
    return edit


def second_publisher(stream: str, make: Callable[[Harness], Any]) -> Callable[[Harness], Any]:
    """A flood from a second node on ``stream``'s topic (every call publishes one message)."""
    types = {"image": (Image, topics.COLOR_IMAGE), "joint_states": (JointState,
                                                                   topics.JOINT_STATES),
             "ee_pose": (PoseStamped, topics.EE_POSE)}

    def inject(h: Harness) -> Callable[[], None]:
        msg_type, topic = types[stream]
        pub = h.injector.create_publisher(msg_type, topic, qos.SENSOR_PUB)
        h.intruders.append(pub)               # gone when the fault ends
        return lambda: pub.publish(make(h))
    return inject


def publish_once(msg_type: type, topic: str, data: str, profile: Any = None
                 ) -> Callable[[Harness], None]:
    def inject(h: Harness) -> None:
        pub = h.injector.create_publisher(msg_type, topic, profile or qos.EVENTS)
        h.spin(0.3)
        pub.publish(msg_type(data=data))
    return inject


def flood_joints(h: Harness) -> JointState:
    msg = JointState(name=JOINTS, position=[0.5] * 8)
    msg.header.stamp = h.injector.get_clock().now().to_msg()
    return msg


def flood_image(h: Harness) -> Image:
    img = Image(height=480, width=640, encoding="rgb8", step=1920,
                data=np.zeros((480, 640, 3), np.uint8).tobytes())
    img.header.stamp = h.injector.get_clock().now().to_msg()
    return img


def probe_validator(h: Harness) -> None:
    """After a weights fault: a correctly signed announcement of a missing file in the trusted
    directory must still be refused by the validator thread (it is alive and not wedged)."""
    body = h.signed(h.trusted / "absent_probe.safetensors", next(h._probes))
    publish_once(String, topics.WEIGHTS, json.dumps(body), qos.LATCHED)(h)


def forged_checkpoint(h: Harness, name: str, step: int, seed: int = 7) -> Path:
    """Random weights in our own format, inside the trusted directory."""
    return tiny_checkpoint(h.trusted / name, seed=seed, step=step)
