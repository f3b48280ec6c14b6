"""What each fault class sends on a topic, by message type (used by benchmarks/fault_nodes.py).

Four classes, for every subscription of every node (benchmarks.fault_nodes enumerates them from
the nodes themselves):
- malformed: wrong sizes and field contents, undecodable CDR bytes, bad JSON, missing names;
- hostile: NaN/inf/huge values, the wrong frame, forged or oversized messages;
- flooding: a second publisher on the topic at a high rate;
- stale/future: stamps an hour ahead and ten seconds behind (unstamped topics: replays).

A ``Fault`` either edits the message the rig's own publisher sends (``edit``: a faulty driver,
same publisher) or has the injector publish ``payloads`` (topics the rig does not feed), or
floods from a second publisher (``flood`` at ``flood_hz``). An edit or payload may be raw bytes:
rclpy publishes them as they are, so the subscriber's middleware must decode them itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float32, String, UInt8MultiArray

from fowm_core.contract import topics

CLASSES = ("malformed", "hostile", "flooding", "stale/future")
JOINTS = [f"joint{i}" for i in range(1, 8)] + [topics.GRIPPER_JOINT]
# CDR header (little endian) then bytes no message type decodes: a length far past the end.
GARBAGE_CDR = b"\x00\x01\x00\x00" + b"\xff\xff\xff\x7f" * 6
FUTURE_S, STALE_S = 3600.0, -10.0


@dataclass
class Fault:
    """One (topic, class) injection: ``label`` says what is sent."""

    label: str
    edits: list[Callable[[Any], Any]] = field(default_factory=list)
    payloads: list[Callable[[int], Any]] = field(default_factory=list)    # stamp ns → message
    flood: Callable[[int], Any] | None = None
    flood_hz: float = 0.0


# -- normal messages ---------------------------------------------------------------------------
def stamp(msg: Any, ns: int) -> Any:
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(max(int(ns), 0), 10**9)
    return msg


def joints(ns: int, value: float = 0.0) -> JointState:
    return stamp(JointState(name=list(JOINTS), position=[value] * len(JOINTS)), ns)


def action(ns: int, values: tuple[float, ...] = (0.1, 0.0, 0.0, 0.0)) -> JointState:
    return stamp(JointState(name=list(topics.ACTION_NAMES), position=list(values)), ns)


def pose(ns: int, x: float = 0.3, frame: str = topics.BASE_FRAME) -> PoseStamped:
    msg = PoseStamped()
    msg.header.frame_id = frame
    msg.pose.position.x, msg.pose.position.z, msg.pose.orientation.w = x, 0.2, 1.0
    return stamp(msg, ns)


def image(ns: int, width: int = 84, height: int = 84) -> Image:
    msg = Image(height=height, width=width, encoding="rgb8", step=3 * width,
                data=np.full((height, width, 3), 120, np.uint8).tobytes())
    msg.header.frame_id = topics.CAMERA_FRAME
    return stamp(msg, ns)


def camera_info(ns: int) -> CameraInfo:
    info = CameraInfo(width=84, height=84, distortion_model="plumb_bob", d=[0.0] * 5)
    info.k = [60.0, 0.0, 42.0, 0.0, 60.0, 42.0, 0.0, 0.0, 1.0]
    info.header.frame_id = topics.CAMERA_FRAME
    return stamp(info, ns)


# -- edits -------------------------------------------------------------------------------------
def _set(**fields: Any) -> Callable[[Any], Any]:
    def edit(msg: Any) -> Any:
        for name, value in fields.items():
            setattr(msg, name, value)
        return msg
    return edit


def _position(value: float) -> Callable[[Any], Any]:
    def edit(msg: Any) -> Any:
        if isinstance(msg, JointState):
            msg.position = [value] * len(msg.name)
        else:
            msg.pose.position.x = value
        return msg
    return edit


def _shift(seconds: float) -> Callable[[Any], Any]:
    def edit(msg: Any) -> Any:
        ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        return stamp(msg, ns + int(seconds * 1e9))
    return edit


def _garbage(_msg: Any) -> bytes:
    return GARBAGE_CDR


def _frame(frame: str) -> Callable[[Any], Any]:
    def edit(msg: Any) -> Any:
        msg.header.frame_id = frame
        return msg
    return edit


def _zero_quaternion(msg: PoseStamped) -> PoseStamped:
    o = msg.pose.orientation      # all four: a tool-down pose has w = 0 already
    o.x = o.y = o.z = o.w = 0.0
    return msg


def _nan_k(msg: CameraInfo) -> CameraInfo:
    msg.k = [math.nan] * 9
    return msg


STAMPED_TIME = Fault("stamps 1 h ahead, then 10 s old",
                     edits=[_shift(FUTURE_S), _shift(STALE_S)])


def _stamped(malformed: Fault, hostile: Fault, flood: Callable[[int], Any], hz: float
             ) -> dict[str, Fault]:
    return {"malformed": malformed, "hostile": hostile, "stale/future": STAMPED_TIME,
            "flooding": Fault(f"a second publisher at {hz:g} Hz", flood=flood, flood_hz=hz)}


def _text(*texts: str) -> list[Callable[[int], String]]:
    return [lambda ns, t=t: String(data=t) for t in texts]


def _event(**body: Any) -> str:
    return json.dumps({"task": "lift", "episode": 1, **body})


def _end(offset_s: int) -> Callable[[int], String]:
    def make(ns: int) -> String:
        first = ns + offset_s * 10**9
        return String(data=_event(event="end", steps=3, first_stamp_ns=first,
                                  final_stamp_ns=first + 10**9))
    return make


LINK_FAULTS = {   # the two-host link's JSON topics (fowm.ros.transfer): malformed, hostile, stale
    topics.LINK: (['[]', '{oops', '{"role": 5}', '{"role": "robot", "weights_step": "abc"}'],
                  ['{"role": "robot", "weights_step": 1e308, "sender": "forged"}',
                   '{"role": "learner", "sender": "a second learner"}', "x" * 1_000_000],
                  ['{"role": "robot", "sender": "fowm_robot_link@old", "weights_step": 0}',
                   '{"role": "learner", "sender": "fowm_learner_link@old"}']),
    topics.EPISODE_ACK: (['[]', '{oops', '{"name": 5, "sha256": null}', '{"name": "x"}'],
                         ['{"name": "../../etc/passwd", "sha256": "' + "0" * 64 + '"}',
                          '{"name": "ep00001", "sha256": "forged"}', "x" * 1_000_000],
                         ['{"name": "old_bag", "sha256": "' + "ab" * 32 + '"}']),
    topics.TRANSFER_PROGRESS: (['[]', '{oops', '{"id": "x", "frames": "abc"}', '{"id": 1}'],
                               ['{"id": "x", "frames": 1e308}', '{"id": "x", "frames": -5}',
                                '{"id": "x", "frames": NaN}', "x" * 1_000_000],
                               ['{"id": "step_00000001.safetensors#1", "frames": 3}'])}


def link_string_faults(topic: str) -> dict[str, Fault]:
    malformed, hostile, stale = LINK_FAULTS[topic]
    return {"malformed": Fault("[], not JSON, wrong field types, fields missing",
                               payloads=_text(*malformed)),
            "hostile": Fault("absurd or negative numbers, forged names, a 1 MB string",
                             payloads=_text(*hostile)),
            "flooding": Fault("a second publisher at 1 kHz: valid-looking messages",
                              flood=lambda ns: String(data=stale[0]), flood_hz=1000.0),
            "stale/future": Fault("(unstamped) replays of old messages", payloads=_text(*stale))}


def string_faults(topic: str, signed: Callable[[str], list[Callable[[int], String]]] | None
                  ) -> dict[str, Fault]:
    """/fowm/episode and /fowm/weights (JSON in std_msgs/String). ``signed(kind)`` gives the
    planner rigs' trust-layer payloads (kind: 'hostile' or 'stale'), None elsewhere."""
    if topic in LINK_FAULTS:
        return link_string_faults(topic)
    if topic == topics.EPISODE:
        return {
            "malformed": Fault("[], not JSON, seed \"abc\", {} (names missing)", payloads=_text(
                "[]", "{oops", '{"event": "start", "task": "lift", "episode": 1, "seed": "abc"}',
                "{}")),
            "hostile": Fault("episode 1e308, seed NaN, a 1 MB string", payloads=_text(
                _event(event="end", episode=1e308), '{"event": "start", "seed": NaN}',
                "x" * 1_000_000)),
            "flooding": Fault("a second publisher at 1 kHz: unknown events", flood=lambda ns:
                              String(data='{"event": "noise"}'), flood_hz=1000.0),
            "stale/future": Fault("end events of another episode stamped 1 h ahead, 10 s old",
                                  payloads=[_end(3600), _end(-11)])}
    forged_live = json.dumps({"live": True, "path": "/evil.safetensors", "sha256": "0" * 64,
                              "step": 999})
    hostile = [*_text(forged_live, "x" * 1_000_000)] + (signed("hostile") if signed else [])
    stale = signed("stale") if signed else _text(
        json.dumps({"path": "/w/old.safetensors", "sha256": "ab" * 32, "step": 0}))
    return {
        "malformed": Fault("step \"abc\", [], not JSON, sha256 5", payloads=_text(
            '{"path": "x", "step": "abc"}', "[]", "{oops", '{"path": "x", "sha256": 5}')),
        "hostile": Fault("forged {live: true}, a 1 MB string"
                         + (", unsigned and wrong-key checkpoints" if signed else ""),
                         payloads=hostile),
        "flooding": Fault("a second publisher at 1 kHz: unsigned announcements", flood=lambda ns:
                          String(data='{"path": "/tmp/x.safetensors", "step": 1}'),
                          flood_hz=1000.0),
        "stale/future": Fault("a rollback to an older step" + (", correctly signed" if signed
                                                               else ""), payloads=stale)}


def faults_for(topic: str, msg_type: type, flood_image: tuple[int, int] = (640, 480),
               signed: Callable[[str], list[Callable[[int], String]]] | None = None
               ) -> dict[str, Fault]:
    """The four faults of ``topic`` (a KeyError names a message type nobody wrote faults for:
    a new subscription must get its rows)."""
    if msg_type is String:
        return string_faults(topic, signed)
    if msg_type is UInt8MultiArray:
        from benchmarks.fault_frames import blob_faults
        return blob_faults(topic)
    if msg_type is JointState and topic == topics.ACTION:
        return _stamped(
            Fault("wrong names, 2 positions for 4 names, undecodable CDR", edits=[
                _set(name=["a", "b", "c", "d"]), _set(position=[0.1, 0.0]), _garbage]),
            Fault("NaN, 1e30, -inf values", edits=[_position(math.nan), _position(1e30),
                                                   _position(-math.inf)]),
            lambda ns: action(ns, (0.9, 0.9, 0.9, 1.0)), 1000.0)
    if msg_type is JointState:
        return _stamped(
            Fault("3 positions for 8 names, gripper joint missing, undecodable CDR", edits=[
                _set(position=[0.0] * 3), _set(name=["joint1"], position=[0.0]), _garbage]),
            Fault("NaN, 1e30, inf positions", edits=[_position(math.nan), _position(1e30),
                                                     _position(math.inf)]),
            lambda ns: joints(ns, 0.5), 1000.0)
    if msg_type is PoseStamped:
        return _stamped(
            Fault("zero quaternion, undecodable CDR", edits=[_zero_quaternion, _garbage]),
            Fault("NaN, 1e30 position, wrong frame", edits=[
                _position(math.nan), _position(1e30), _frame("evil_frame")]),
            lambda ns: pose(ns, 0.5), 1000.0)
    if msg_type is Image:
        w, h = flood_image
        return _stamped(
            Fault("data shorter than height×step, encoding 32FC1, undecodable CDR", edits=[
                _set(data=bytes(10)), _set(encoding="32FC1"), _garbage]),
            Fault("100000×100000 declared, width 0", edits=[
                _set(height=100000, width=100000), _set(width=0, step=0)]),
            lambda ns: image(ns, w, h), 100.0)
    if msg_type is CameraInfo:
        return _stamped(
            Fault("100 distortion coefficients, undecodable CDR", edits=[
                _set(d=[0.0] * 100), _garbage]),
            Fault("NaN K, width 2^32-1", edits=[_nan_k, _set(width=2**32 - 1)]),
            camera_info, 1000.0)
    if msg_type is Float32:
        return {"malformed": Fault("undecodable CDR (1 byte)", payloads=[lambda ns: b"\x00"]),
                "hostile": Fault("NaN, inf, -3.4e38", payloads=[
                    lambda ns: Float32(data=math.nan), lambda ns: Float32(data=math.inf),
                    lambda ns: Float32(data=-3.4e38)]),
                "flooding": Fault("a second publisher at 1 kHz", flood=lambda ns:
                                  Float32(data=1.0), flood_hz=1000.0),
                "stale/future": Fault("(unstamped) a replayed reward burst", payloads=[
                    lambda ns: Float32(data=-1.0)] * 5)}
    msg = f"no faults written for {topic} ({msg_type.__name__}): add them to fault_inputs"
    raise KeyError(msg)
