"""Every subscribed topic × every fault class, for every node (benchmarks/fault_suite.py).

The topics are not listed here: ``subscriptions(node)`` reads them from the live node, so a new
subscription gets its rows (or a KeyError from fault_inputs.faults_for naming it) without anyone
editing a table; tests/nodes/test_guarded_callbacks.py checks the same enumeration and that every
callback is guarded. One rclpy context per node (rig, benchmarks/fault_rigs.py) serves all of its
rows in turn: settle, fault, recover, each row counting crashes (exceptions out of the executor),
dead threads, bad outputs, untrusted swaps, lost episodes and deadline misses during the fault.
The camera node subscribes to nothing: its rows fault the only input it has, the device.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from benchmarks import fault_inputs as fi
from benchmarks import fault_rigs as fr
from benchmarks import fault_rigs_camera as frc
from benchmarks import fault_rigs_link as frl
from benchmarks.fault_planner import close_executor

SETTLE_S, FAULT_S, RECOVER_S = 0.4, 1.5, 1.5
_domains = itertools.count()
RigFactory = Callable[[Path], fr.Rig]
RIGS: list[tuple[str, RigFactory]] = [
    ("planner", lambda w: fr.PlannerRig(w)),
    ("planner_state", lambda w: fr.PlannerRig(w, state=True)),
    ("episode_manager", fr.EpisodeManagerRig),
    ("recorder", fr.RecorderRig),
    ("sim", lambda w: fr.ArmRig(w, xarm=False)),
    ("xarm", lambda w: fr.ArmRig(w, xarm=True)),
    ("tracker", frc.TrackerRig),
    ("calibration", frc.CalibrationRig),
    ("robot_link", frl.RobotLinkRig),
    ("learner_link", frl.LearnerLinkRig),
    ("weights_shipper", frl.ShipperRig),
]
# Every module of fowm/nodes that makes a node → the groups that fault it ("camera":
# camera_rows; (): it subscribes to nothing). tests/nodes/test_guarded_callbacks.py walks the
# folder: a node module missing here fails it.
NODE_MODULES: dict[str, tuple[str, ...]] = {
    "planner_node": ("planner", "planner_state"), "episode_manager": ("episode_manager",),
    "recorder_node": ("recorder",), "sim_node": ("sim",), "xarm_node": ("xarm",),
    "camera_node": ("camera",), "tracker_node": ("tracker",),
    "calibration_node": ("calibration",), "learner_node": ("weights_shipper",),
    "robot_link": ("robot_link",), "learner_link": ("learner_link",)}
# The CI subset: one row of each group (fault_suite --fast).
FAST = {("planner", "/xarm/joint_states", "malformed"),
        ("planner_state", "/fowm/object_pose", "hostile"), ("episode_manager", "/fowm/action",
        "hostile"), ("recorder", "/fowm/episode", "stale/future"), ("sim", "/fowm/action",
        "flooding"), ("xarm", "/fowm/action", "hostile"), ("camera", "", "malformed"),
        ("tracker", "/camera/camera/color/image_raw", "malformed"),
        ("calibration", "/camera/camera/color/image_raw", "stale/future"),
        ("robot_link", "/fowm/weights_blob", "hostile"),
        ("learner_link", "/fowm/episode_blob", "malformed"),
        ("weights_shipper", "/fowm/link", "hostile")}


def subscriptions(node: Node) -> list[tuple[str, type]]:
    """(topic, message class) of every subscription of ``node``, in creation order."""
    return [(s.topic_name, s.msg_type) for s in node.subscriptions]


def unguarded(node: Node) -> list[str]:
    """Callbacks of ``node`` (subscriptions, timers, its own services) not made by ros/guard:
    one that raises would end the executor's spin."""
    own = [s for s in node.services if not s.srv_name.endswith(PARAMETER_SERVICES)]
    found = [(f"subscription {s.topic_name}", s.callback) for s in node.subscriptions]
    found += [(f"timer {t.timer_period_ns * 1e-9:g} s", t.callback) for t in node.timers]
    found += [(f"service {s.srv_name}", s.callback) for s in own]
    return [name for name, cb in found if not getattr(cb, "fowm_guarded", False)]


PARAMETER_SERVICES = ("describe_parameters", "get_parameter_types", "get_parameters",
                      "list_parameters", "set_parameters", "set_parameters_atomically",
                      "get_type_description")


class Context:
    """A fresh ROS context on its own domain, with a spin loop that feeds the rig."""

    def __init__(self) -> None:
        os.environ["ROS_DOMAIN_ID"] = str(130 + (os.getpid() + next(_domains)) % 70)
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        rclpy.init()
        self.executor = SingleThreadedExecutor()
        self.crashes: list[str] = []

    def spin(self, seconds: float, rig: fr.Rig | None = None,
             every: Callable[[int], None] | None = None, every_hz: float = 0.0,
             until: Callable[[], bool] | None = None) -> None:
        end = time.monotonic() + seconds
        next_feed = next_every = 0.0
        while time.monotonic() < end and not (until is not None and until()):
            now = time.monotonic()
            if rig is not None and now >= next_feed:
                rig.feed(rig.helper.get_clock().now().nanoseconds)
                next_feed = now + 0.1
            if every is not None and now >= next_every:
                every(rig.helper.get_clock().now().nanoseconds if rig else time.time_ns())
                next_every = now + (1.0 / every_hz if every_hz else 0.2)
            try:
                self.executor.spin_once(timeout_sec=0.0005 if every_hz > 100 else 0.005)
            except Exception as err:     # out of a callback: `fowm run` would have ended
                self.crashes.append(f"{type(err).__name__}: {err}"[:160])

    def close(self, nodes: list[Node]) -> None:
        close_executor(self.executor, nodes)


def _injector(ctx: Context, rig: fr.Rig, topic: str, msg_type: type, fault: fi.Fault
              ) -> tuple[Callable[[int], None] | None, float, list[Any]]:
    """Start ``fault``: edit the rig's feed, or a publisher for payloads / the flood."""
    pubs: list[Any] = []
    if fault.edits and topic in rig.feeds:
        edits = itertools.cycle(fault.edits)
        rig.mutate[topic] = lambda msg: next(edits)(msg)
        return None, 0.0, pubs
    pub = rig.injector.create_publisher(msg_type, topic, fr.QOS.get(topic, fr.qos.SENSOR_PUB))
    pubs.append(pub)
    ctx.spin(0.3, rig)                          # discovery before the first message
    if fault.flood is not None:
        make = fault.flood
        return lambda ns: pub.publish(make(ns)), fault.flood_hz, pubs
    if not fault.payloads:
        msg = f"{fault.label}: edits need the rig to feed {topic}, and it does not"
        raise ValueError(msg)
    payloads = itertools.cycle(fault.payloads)
    return lambda ns: pub.publish(next(payloads)(ns)), 5.0, pubs


def run_row(ctx: Context, rig: fr.Rig, group: str, topic: str, msg_type: type, cls: str,
            fault: fi.Fault) -> Any:
    from benchmarks.fault_suite import Row
    t0 = time.monotonic()
    rig.topic = topic
    rig.begin_row()
    ctx.spin(SETTLE_S, rig)
    crashes0, a = len(ctx.crashes), rig.snap()
    every, hz, pubs = _injector(ctx, rig, topic, msg_type, fault)
    ctx.spin(FAULT_S, rig, every, hz)
    b = rig.snap()
    rig.mutate.clear()
    for pub in pubs:
        rig.injector.destroy_publisher(pub)
    ctx.spin(RECOVER_S, rig)
    c = rig.snap()
    lost = rig.end_row(lambda s, until: ctx.spin(s, rig, until=until))
    crashes, alive = len(ctx.crashes) - crashes0, rig.alive()
    bad = rig.bad(a, b) if rig.has_bad else None
    swaps = rig.swaps(a, b) if rig.has_swaps else (0 if topic.endswith("weights") else None)
    ok, said = rig.extra(topic, cls, a, b)
    recovered = rig.progress(b, c) > 0
    holds = (crashes == 0 and alive and not bad and not swaps and not lost and recovered and ok)
    observed = (f"crashes {crashes}{' (' + ctx.crashes[-1] + ')' if crashes else ''}; "
                f"threads {'alive' if alive else 'DEAD'}; {said + '; ' if said else ''}"
                f"{'recovered' if recovered else 'did NOT recover'}"
                + ("" if lost is None else f"; episode {'LOST' if lost else 'bag written'}"))
    return Row(f"{rig.label} ← {topic} [{cls}]: {fault.label}", rig.expected.get(
        cls, EXPECTED[cls]), observed, holds,
               crashes, bad, swaps, lost, rig.misses(a, b) if rig.has_misses else None,
               "", round(time.monotonic() - t0, 1))


EXPECTED = {
    "malformed": "refused and counted; no crash, threads alive, no bad command; works after",
    "hostile": "refused or held; no crash, no bad command, no untrusted swap; works after",
    "flooding": "no crash; a second publisher of an input the node acts on is held as a "
                "conflict; works after",
    "stale/future": "refused (future) or held (stale); no crash, no bad command; works after"}


def run_rig(group: str, factory: RigFactory, root: Path, fast: bool, only: str | None,
            report: Callable[[Any], None]) -> list[Any]:
    rows: list[Any] = []
    ctx = Context()
    rig = factory(root / group)
    rig.work.mkdir(parents=True, exist_ok=True)
    try:
        rig.build()
        rig.injector = Node("fault_injector")
        for node in [*rig.nodes(), rig.injector]:
            ctx.executor.add_node(node)
        fr.wait_armed(rig, lambda s, until: ctx.spin(s, rig, until=until))
        ctx.spin(2.0, rig)
        for topic, msg_type in subscriptions(rig.node):
            faults = rig.adjust_faults(topic, fi.faults_for(
                topic, msg_type, rig.flood_image,
                rig.signed if isinstance(rig, fr.PlannerRig) else None))
            for cls in fi.CLASSES:
                name = f"{group} {topic} {cls}"
                if (fast and (group, topic, cls) not in FAST) or (only and only not in name):
                    continue
                rows.append(run_row(ctx, rig, group, topic, msg_type, cls, faults[cls]))
                report(rows[-1])
                fr.wait_armed(rig, lambda s, until: ctx.spin(s, rig, until=until))
    finally:
        ctx.close([rig.injector, *rig.nodes()] if rig.node is not None else [])
    return rows


# -- the camera: its device is its only input --------------------------------------------------
def camera_rows(root: Path, fast: bool, only: str | None, report: Callable[[Any], None]
                ) -> list[Any]:
    from fowm.nodes.camera_node import CameraNode
    from fowm.ros import qos
    from sensor_msgs.msg import Image

    from benchmarks.fault_suite import Row
    from fowm_core.contract import topics
    from tests.doubles.realsense_double import SoftwareCamera
    cams: list[Any] = []
    ctx = Context()
    node = CameraNode(source_factory=lambda cfg: cams.append(SoftwareCamera(cfg)) or cams[-1],
                      parameter_overrides=fr.params(width=64, height=48, fps=30))
    viewer = Node("fault_viewer")
    images: list[Any] = []
    viewer.create_subscription(Image, topics.COLOR_IMAGE, images.append, qos.SENSOR_PUB)
    intruder = viewer.create_publisher(Image, topics.COLOR_IMAGE, qos.SENSOR_PUB)
    for n in (node, viewer):
        ctx.executor.add_node(n)
    good = np.full((48, 64, 3), 100, np.uint8)
    push = lambda ns: cams[-1].push(good)  # noqa: E731
    rows: list[Any] = []

    def broken_read(timeout_s: float) -> Any:
        node.camera.read = original          # once: then the device works again
        raise ValueError("driver bug: unexpected exception type")
    original = node.camera.read
    cases = [("malformed", "a frame that cannot be converted (the conversion raises)",
              lambda: setattr(node, "_publish", _once(node._publish, ValueError("bad shape")))),
             ("hostile", "the driver raises an unexpected exception (not RuntimeError)",
              lambda: setattr(node.camera, "read", broken_read)),
             ("flooding", "a second publisher floods its image topic at 1 kHz", None),
             ("stale/future", "the device stops for 2 s (stale), then streams again",
              lambda: None)]
    try:
        ctx.spin(3.0, every=push, until=lambda: len(images) > 3)
        for cls, label, start in cases:
            if (fast and ("camera", "", cls) not in FAST) or (only and only not in
                                                               f"camera {cls}"):
                continue
            t0, crashes0 = time.monotonic(), len(ctx.crashes)
            restarts0 = node._thread.restarts
            if start is not None:
                start()
            flood = (lambda ns: intruder.publish(fi.image(ns, 64, 48))) if start is None else None
            ctx.spin(FAULT_S + 0.8, every=flood or (push if cls != "stale/future" else None),
                     every_hz=1000.0 if flood else 0.0)
            n1 = len(images)
            ctx.spin(RECOVER_S + 1.0, every=push)
            crashes = len(ctx.crashes) - crashes0
            restarts = node._thread.restarts - restarts0
            recovered = len(images) > n1
            alive = node._thread.is_alive()
            holds = crashes == 0 and alive and recovered and (cls != "hostile" or restarts >= 1)
            rows.append(Row(f"camera node ← device [{cls}]: {label}", EXPECTED_CAMERA[cls],
                            f"crashes {crashes}; capture thread {'alive' if alive else 'DEAD'} "
                            f"(restarts {restarts}); refused {node.inputs.total}; "
                            f"{'recovered' if recovered else 'did NOT recover'}", holds,
                            crashes, None, None, None, None, "", round(time.monotonic() - t0, 1)))
            report(rows[-1])
    finally:
        ctx.close([node, viewer])
    return rows


def _once(fn: Callable[..., Any], err: Exception) -> Callable[..., Any]:
    calls = [0]

    def wrapped(*args: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise err
        return fn(*args)
    return wrapped


EXPECTED_CAMERA = {
    "malformed": "the frame is refused and counted; capture goes on",
    "hostile": "the capture thread is restarted and reported; frames flow again",
    "flooding": "the camera node is not disturbed (consumers hold: planner rows)",
    "stale/future": "no crash; frames flow again when the device resumes"}


def run(root: Path, fast: bool, only: str | None, report: Callable[[Any], None]) -> list[Any]:
    rows: list[Any] = []
    def wanted(group: str) -> bool:      # --only "GROUP [TOPIC [CLASS]]" builds one rig
        return only is None or only == group or only.startswith(group + " ")
    for group, factory in RIGS:
        if wanted(group):
            rows += run_rig(group, factory, root, fast, only, report)
    if wanted("camera"):
        rows += camera_rows(root / "camera", fast, only, report)
    return rows
