"""Writing episode bags: rosbag2 (MCAP, metadata v9) on the topic contract, atomically.

The layout (which message at which stamp) is documented in fowm_core.data.bags, the reader; this
module is its writing half, shared by ``fowm collect`` (``write_episode_bag``) and the recorder
node (``atomic_bag_writer``, ``OFFERED_QOS``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

from fowm_core.contract import topics
from fowm_core.contract.messages import EpisodeEvent
from fowm_core.data import convert
from fowm_core.data.episode_log import CameraSpec, EpisodeLog, StepRecord
from fowm_core.errors import BagError, FowmError

BAG_VERSION = 9          # rosbag2 metadata version (Jazzy/Kilted read it; Humble needs a reindex)
CODEC = "fowm-episode/1"


def _qos(depth: int, durability: QosDurability) -> Qos:
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE, durability, zero, zero,
               QosLiveliness.AUTOMATIC, zero, False)


# Offered QoS is recorded for transient-local topics only: `ros2 bag play` then re-offers them
# latched, and plays every other topic with its default (reliable, volatile), which is what our
# publishers offer anyway (docs/platform.md §3.4). Recording it for every topic would also make
# reading much slower: rosbags parses each profile with a pure-Python YAML parser.
OFFERED_QOS: dict[str, list[Qos]] = {topics.WEIGHTS: [_qos(1, QosDurability.TRANSIENT_LOCAL)]}


@contextlib.contextmanager
def atomic_bag_writer(path: Path) -> Iterator[Writer]:
    """A rosbag2 (MCAP, metadata v9) Writer under a hidden temp directory, renamed to ``path`` when
    the block ends without error: a reader never sees a half bag, and the storage file keeps the
    bag's own name (rosbags names it after the bag directory)."""
    if path.exists():
        msg = f"bag {path} exists already; bags are write-once: pick a new name or delete it"
        raise BagError(msg)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with Writer(tmp / path.name, version=BAG_VERSION,
                    storage_plugin=StoragePlugin.MCAP) as writer:
            yield writer
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_episode_bag(path: str | Path, log_: EpisodeLog, *, camera: bool = True,
                      action_latency_ns: int = 1_000_000) -> Path:
    """Write one episode bag at ``path`` (a new directory), atomically via a temp directory.

    ``camera`` writes image + camera_info (every step needs ``rgb``). Actions are logged
    ``action_latency_ns`` after their observation, rewards with the next observation.
    """
    path = Path(path)
    stamps = [s.stamp_ns for s in log_.steps]
    if not 0 < action_latency_ns < min(np.diff(stamps), default=2**62):
        msg = f"action_latency_ns={action_latency_ns} must be > 0 and below the step period"
        raise BagError(msg)
    if camera and any(s.rgb is None for s in log_.steps):
        msg = "write_episode_bag(camera=True) needs an rgb image at every step; pass camera=False"
        raise BagError(msg)
    try:
        with atomic_bag_writer(path) as writer:
            _write_messages(writer, log_, camera, action_latency_ns)
    except BagError:
        raise
    except (OSError, FowmError, ValueError, WriterError) as err:
        msg = f"cannot write bag {path}: {err}"
        raise BagError(msg) from err
    return path


def _write_messages(writer: Writer, log_: EpisodeLog, camera: bool, latency: int) -> None:
    conns: dict[str, Any] = {}

    def put(topic: str, log_ns: int, msg: Any) -> None:
        if topic not in conns:
            conns[topic] = writer.add_connection(
                topic, topics.MSG_TYPES[topic], typestore=convert.TYPESTORE,
                offered_qos_profiles=OFFERED_QOS.get(topic, []))
        raw = convert.TYPESTORE.serialize_cdr(msg, topics.MSG_TYPES[topic])
        writer.write(conns[topic], log_ns, raw)

    for key, value in (("fowm.codec", CODEC), ("fowm.task", log_.task),
                       ("fowm.episode", str(log_.episode))):
        writer.set_custom_data(key, value)
    try:
        base = {"episode": log_.episode, "task": log_.task, "seed": log_.seed, **log_.extra}
        start = EpisodeEvent(**base, event="start", obj_init_z=log_.obj_init_z, success=False,
                             terminal=False)
    except TypeError as err:        # an EpisodeLog.extra key the event schema does not know
        msg = (f"episode log extra fields {sorted(log_.extra)} do not fit the episode event "
               f"schema ({err}); expected fields of contract.messages.EpisodeEvent")
        raise BagError(msg) from err
    s0, sT = log_.steps[0].stamp_ns, log_.steps[-1].stamp_ns
    put(topics.EPISODE, s0, convert.event_msg(start))
    for t, step in enumerate(log_.steps):
        if t > 0:
            put(topics.REWARD, step.stamp_ns, convert.reward_msg(log_.rewards[t - 1]))
        _write_observation(put, step, log_.camera, camera)
        if t < len(log_.actions):
            put(topics.ACTION, step.stamp_ns + latency,
                convert.action_msg(step.stamp_ns, log_.actions[t]))
    for log_ns, announcement in log_.weights:
        put(topics.WEIGHTS, log_ns, convert.weights_msg(announcement))
    put(topics.EPISODE, sT + latency, convert.event_msg(EpisodeEvent(
        **base, event="end", success=log_.success, terminal=log_.terminal,
        steps=len(log_.actions), final_stamp_ns=sT)))


def _write_observation(put: Callable[[str, int, Any], None], step: StepRecord,
                       spec: CameraSpec | None, camera: bool) -> None:
    s = step.stamp_ns
    put(topics.EE_POSE, s, convert.pose_msg(s, step.eef, step.eef_quat))
    put(topics.JOINT_STATES, s, convert.joint_state_msg(s, step.joints, step.gripper))
    if step.obj is not None:
        put(topics.OBJECT_POSE, s, convert.pose_msg(s, step.obj))
    if step.goal is not None:
        put(topics.GOAL_POSE, s, convert.pose_msg(s, step.goal))
    if camera:
        image = convert.image_msg(step.rgb, s)
        put(topics.COLOR_IMAGE, s, image)
        spec = spec or CameraSpec(image.width, image.height, 45.0)
        put(topics.COLOR_INFO, s, convert.camera_info_msg(s, spec.width, spec.height,
                                                          spec.fovy_deg))
