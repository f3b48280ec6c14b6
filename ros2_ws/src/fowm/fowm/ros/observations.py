"""The planner node's executor side: pair the observation streams, keep the newest set.

Subscription callbacks only check and store (docs/platform.md §1.5): every message is checked
first (a stamp ahead of the node's clock or an unusable joint state is refused and counted by
``InputGuard``), then paired by fowm_core.data.sync (message_filters semantics, with the
future-stamp guard live), and the newest complete set waits for the control thread. Episode
start events (typed, contract.messages) mark the next set as the episode's first and carry the
seed to plan it with.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from fowm.ros.guard import InputGuard
from fowm_core.config import FowmConfig
from fowm_core.contract import topics
from fowm_core.contract.messages import EpisodeEvent
from fowm_core.data import convert
from fowm_core.data.sync import ApproxTimeSync
from fowm_core.errors import MessageError


def streams_for(cfg: FowmConfig) -> dict[str, tuple[type, str]]:
    """The streams paired into one observation: what build_state and the encoder need
    ({name: (message type, topic)}, "ee_pose" the anchor)."""
    keys = convert.state_keys(cfg.task, cfg.model.modality.value)
    streams: dict[str, tuple[type, str]] = {}
    if cfg.model.uses_rgb:
        streams["image"] = (Image, topics.COLOR_IMAGE)
    streams["ee_pose"] = (PoseStamped, topics.EE_POSE)
    streams["joint_states"] = (JointState, topics.JOINT_STATES)
    if "obj" in keys:
        streams["object_pose"] = (PoseStamped, topics.OBJECT_POSE)
    if "goal" in keys:
        streams["goal_pose"] = (PoseStamped, topics.GOAL_POSE)
    return streams


@dataclass
class Observation:
    """One paired observation: messages by stream name plus episode bookkeeping."""

    seq: int
    stamp_ns: int
    msgs: dict[str, Any]
    first_of_episode: bool = False
    episode_seed: int | None = None


class ObservationInbox:
    """Pairs ``streams`` ({name: (message type, topic)}, "ee_pose" the anchor) on ``node``."""

    def __init__(self, node: Any, streams: dict[str, tuple[type, str]], inputs: InputGuard, *,
                 queue_size: int, slop_s: float, max_future_s: float, default_seed: int) -> None:
        self.node = node
        self.streams = streams
        self.inputs = inputs
        self.latest: Observation | None = None
        self.new_obs = threading.Event()        # set on every stored set (lock-step trigger)
        self._default_seed = default_seed
        self._pending_seed: int | None = None
        self._seq = 0
        self._lock = threading.Lock()
        self._sync = ApproxTimeSync(len(streams), queue_size, slop_s, max_ahead_s=max_future_s)

    def subscribe(self, sensor_qos: Any, events_qos: Any) -> None:
        # The episode subscription is created first so a start event is taken before the
        # observations that follow the reset it announces (executors serve in creation order).
        guard = self.inputs.guard
        self.node.create_subscription(String, topics.EPISODE,
                                      guard(topics.EPISODE, self.on_episode), events_qos)
        for index, (name, (msg_type, topic)) in enumerate(self.streams.items()):
            self.node.create_subscription(msg_type, topic,
                                          guard(topic, self._callback(index, name, topic)),
                                          sensor_qos)

    def newest(self) -> Observation | None:
        with self._lock:
            return self.latest

    def _callback(self, index: int, name: str, topic: str) -> Any:
        def callback(msg: Any) -> None:
            stamp, now = convert.stamp_ns(msg), self._now()
            if self.inputs.future(topic, stamp, now):
                return
            if name == "joint_states":
                convert.joint_state_arrays(msg)        # raises (refused by the guard) if unusable
            elif name.endswith("_pose"):
                convert.check_pose(msg, topic)         # another frame, a broken quaternion
            matched = self._sync.add(index, stamp, msg, now_ns=now or None)
            if matched is not None:
                self.store(dict(zip(self.streams, matched, strict=True)))
        callback.__name__ = f"on_{name}"
        return callback

    def store(self, msgs: dict[str, Any]) -> None:
        stamp, now = convert.stamp_ns(msgs["ee_pose"]), self._now()
        with self._lock:
            latest = self.latest
            # Out of order: never step back in time, unless the newest set is stamped in the
            # future (taken while the clock was unset): it must not shadow every real one.
            if (latest is not None and stamp <= latest.stamp_ns
                    and not self.inputs.future("ee_pose (stored)", latest.stamp_ns, now)):
                return
            self._seq += 1
            obs = Observation(self._seq, stamp, msgs)
            if self._pending_seed is not None:
                obs.first_of_episode, obs.episode_seed = True, self._pending_seed
                self._pending_seed = None
            self.latest = obs
        self.new_obs.set()

    def on_episode(self, msg: String) -> None:
        try:
            event = EpisodeEvent.from_json(msg.data)
        except MessageError as err:
            self.inputs.refuse(topics.EPISODE, str(err))
            return
        if event.is_start:
            with self._lock:
                self._pending_seed = event.get("seed", self._default_seed)

    def _now(self) -> int:
        return self.node.get_clock().now().nanoseconds
