"""Episodes ⇄ rosbag2 (MCAP), the one format of offline datasets and robot logs (docs/design.md).

One bag per episode, written with the ``rosbags`` library on the topic contract (contract.topics),
stock messages only. Metadata version 9 (``rosbag2_bagfile_information`` v9, MCAP storage): what
rosbags writes by default and what Jazzy/Kilted rosbag2 read; Humble's rosbag2 (v5) cannot open it
(docs/platform.md §3.4: on Humble delete metadata.yaml and run ``ros2 bag reindex``).

Layout of an episode of T agent steps (stamps s_0 < … < s_T; log time = receive time on a robot):
  obs t      ee_pose, joint_states, object_pose, goal_pose, image, camera_info at header stamp s_t
  action t   /fowm/action, header.stamp = s_t (the stamp of the observation it answers). An
             observation answered twice (a plan, then a safety hold when the data went stale
             before the next one came) keeps its last command: the one in force when s_{t+1} was
             taken, which is what the twin steps with
  reward t   /fowm/reward (Float32, no header), logged after action t and before action t+1
  events     /fowm/episode JSON: start (task, seed, obj_init_z) and end (success, terminal,
             final_stamp_ns = s_T)
The reader pairs observation streams with ``ApproxTimeSync`` fed in log order (as the planner node
is fed live), anchors each observation at its ee_pose stamp and pairs every action with the
observation of EXACTLY its stamp: no nearest-time guessing for the obs→action pair.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from rosbags.rosbag2 import Reader, ReaderError
from rosbags.serde import SerdeError

from fowm_core import tasks
from fowm_core.contract import topics
from fowm_core.contract.messages import EpisodeEvent
from fowm_core.data import bag_cache, convert, labels
from fowm_core.data.bag_write import (
    BAG_VERSION,
    CODEC,
    OFFERED_QOS,
    atomic_bag_writer,
    write_episode_bag,
)
from fowm_core.data.episode import Episode
from fowm_core.data.episode_log import CameraSpec, EpisodeLog, EpisodeRecorder, StepRecord
from fowm_core.data.sync import ApproxTimeSync
from fowm_core.errors import BagError, FowmError

# What rosbags and the MCAP parser raise on corrupted or truncated files (found by fuzzing bags):
# a corrupt length field can also overflow or ask for an absurd allocation.
_LOW_LEVEL_ERRORS = (ReaderError, SerdeError, OSError, ValueError, KeyError, IndexError,
                     ArithmeticError, MemoryError, struct.error, EOFError)
# The writing half lives in bag_write; its names are re-exported so callers keep one module.
__all__ = ["BAG_VERSION", "CODEC", "OFFERED_QOS", "CameraSpec", "DatasetRead", "EpisodeLog",
           "EpisodeRecorder", "StepRecord", "SyncParams", "atomic_bag_writer", "read_dataset",
           "read_episode_bag", "write_episode_bag"]

log = logging.getLogger(__name__)


# -- reading -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyncParams:
    """Observation pairing (docs/platform.md §4 sizing): slop > stream offset + half the slower
    period; queue ≥ latency difference × faster rate. The planner node must use the same values."""

    slop_s: float = 0.02
    queue_size: int = 30


@dataclass
class _Scan:
    obs_msgs: list[tuple[str, int, Any]] = field(default_factory=list)   # (topic, stamp, msg)
    actions: list[tuple[int, np.ndarray, int]] = field(default_factory=list)  # (stamp, a, log)
    rewards: list[tuple[int, float]] = field(default_factory=list)       # (log, value)
    events: list[EpisodeEvent] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


OBS_TOPICS = (topics.EE_POSE, topics.JOINT_STATES, topics.OBJECT_POSE, topics.GOAL_POSE,
              topics.COLOR_IMAGE)
_KEY_TOPIC = {"obj": topics.OBJECT_POSE, "goal": topics.GOAL_POSE}


def _scan(path: Path, want_images: bool) -> _Scan:
    scan = _Scan()
    wanted = {*OBS_TOPICS, topics.ACTION, topics.REWARD, topics.EPISODE}
    if not want_images:
        wanted.discard(topics.COLOR_IMAGE)
    with Reader(path) as reader:
        conns = [c for c in reader.connections if c.topic in wanted]
        for conn in reader.connections:
            scan.counts[conn.topic] = scan.counts.get(conn.topic, 0) + conn.msgcount
        for conn, log_ns, raw in reader.messages(connections=conns):
            msg = convert.TYPESTORE.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == topics.ACTION:
                scan.actions.append((convert.stamp_ns(msg), convert.action_array(msg), log_ns))
            elif conn.topic == topics.REWARD:
                scan.rewards.append((log_ns, float(msg.data)))
            elif conn.topic == topics.EPISODE:
                scan.events.append(convert.parse_event(msg))
            else:
                scan.obs_msgs.append((conn.topic, convert.stamp_ns(msg), msg))
    return scan


def _event(scan: _Scan, kind: str) -> EpisodeEvent:
    found = [e for e in scan.events if e.event == kind]
    if len(found) != 1:
        msg = (f"holds {len(found)} '{kind}' events on {topics.EPISODE}; an episode bag needs "
               "exactly one start and one end event (a cut recording or two episodes in one?)")
        raise FowmError(msg)
    return found[0]


def _needed_topics(task: str, obs_mode: str, recompute: bool) -> list[str]:
    keys = set(convert.state_keys(task, obs_mode))
    if recompute:
        keys.update(tasks.get(task).reward_needs)      # obj_init_z comes from the first obj
    needed = [topics.EE_POSE, topics.JOINT_STATES]
    needed += [_KEY_TOPIC[k] for k in ("obj", "goal") if k in keys]
    if obs_mode in ("rgb", "all"):
        needed.append(topics.COLOR_IMAGE)
    return needed


def _pair_observations(scan: _Scan, needed: list[str], params: SyncParams
                       ) -> dict[int, dict[str, Any]]:
    """Observation sets keyed by their anchor (ee_pose) stamp. A needed topic logged once (a
    latched goal) is held for every set; the others are paired by ApproxTimeSync in log order."""
    missing = [t for t in needed if scan.counts.get(t, 0) == 0]
    if missing:
        msg = f"has no messages on {', '.join(missing)}, which this task and obs_mode need"
        raise FowmError(msg)
    held = {t: m for t, _, m in scan.obs_msgs if t in needed and scan.counts[t] == 1}
    synced = [t for t in needed if t not in held]       # ee_pose first: the anchor
    index = {t: i for i, t in enumerate(synced)}
    sync = ApproxTimeSync(len(synced), params.queue_size, params.slop_s)
    sets: dict[int, dict[str, Any]] = {}
    for topic, stamp, msg in scan.obs_msgs:
        if topic in index:
            matched = sync.add(index[topic], stamp, (stamp, msg))
            if matched is not None:
                sets[matched[0][0]] = {**held, **{t: m for t, (_, m) in zip(synced, matched,
                                                                             strict=True)}}
    return sets


def _commands_in_force(actions: list[tuple[int, np.ndarray, int]]
                       ) -> tuple[list[tuple[int, np.ndarray, int]], int]:
    """Each observation's last command, and how many earlier ones it superseded. The planner
    answers an observation again only to hold: its data went stale before the next one came."""
    kept: list[tuple[int, np.ndarray, int]] = []
    for action in actions:
        if kept and kept[-1][0] == action[0]:
            kept[-1] = action
        else:
            kept.append(action)
    return kept, len(actions) - len(kept)


def _observation_stamps(scan: _Scan, sets: dict[int, dict[str, Any]],
                        end: EpisodeEvent) -> list[int]:
    """s_0..s_T: each action's own stamp (exact), then the final observation's."""
    stamps = [s for s, _, _ in scan.actions]
    if not stamps:
        msg = f"has no messages on {topics.ACTION}: nothing to learn from"
        raise FowmError(msg)
    if any(b <= a for a, b in itertools.pairwise(stamps)):
        msg = f"has action stamps that do not increase in log order: {stamps[:6]}…"
        raise FowmError(msg)
    for s in stamps:
        if s not in sets:
            near = sorted(sets, key=lambda k: abs(k - s))[:3]
            msg = (f"has an action stamped {s} ns but no complete observation (anchor "
                   f"{topics.EE_POSE}) with that exact stamp; nearest observations: {near}. "
                   "The planner must stamp each action with its observation's ee_pose stamp")
            raise FowmError(msg)
    final = end.get("final_stamp_ns")
    if final is None:
        # No recorded final stamp (a foreign recorder): take the first observation one decision
        # period after the last action, or the latest one there is.
        later = sorted(s for s in sets if s > stamps[-1])
        period = int(np.median(np.diff(stamps))) if len(stamps) > 1 else 0
        final = next((s for s in later if s >= stamps[-1] + period), later[-1] if later else None)
    if final is None or final not in sets:
        msg = (f"has no complete observation at the final stamp {final} (after the last action "
               f"at {stamps[-1]}); the episode's last observation is missing")
        raise FowmError(msg)
    return [*stamps, int(final)]


def _pieces(obs: dict[str, Any]) -> dict[str, Any]:
    joints, gripper = convert.joint_state_arrays(obs[topics.JOINT_STATES])
    out = {"eef": convert.pose_arrays(obs[topics.EE_POSE])[0], "gripper": gripper,
           "joints": joints, "obj": None, "goal": None, "rgb": None}
    if topics.OBJECT_POSE in obs:
        out["obj"] = convert.pose_arrays(obs[topics.OBJECT_POSE])[0]
    if topics.GOAL_POSE in obs:
        out["goal"] = convert.pose_arrays(obs[topics.GOAL_POSE])[0]
    if topics.COLOR_IMAGE in obs:
        out["rgb"] = convert.image_array(obs[topics.COLOR_IMAGE])
    return out


def _logged_rewards(scan: _Scan) -> np.ndarray:
    """Reward t = the first Float32 logged after action t and no later than action t+1."""
    bounds = [log_ns for _, _, log_ns in scan.actions] + [2**63]
    out = []
    for t in range(len(scan.actions)):
        window = [v for log_ns, v in scan.rewards if bounds[t] < log_ns <= bounds[t + 1]]
        if not window:
            msg = (f"has no {topics.REWARD} message between action {t} and the next; "
                   "read it with recompute_reward=True")
            raise FowmError(msg)
        out.append(window[0])
    return np.asarray(out, dtype=np.float32)


RewardFn = Callable[[str, Any, np.ndarray], float]


class ImageReward(Protocol):
    """A reward from the image after each step (learning.success.SuccessClassifier): uint8
    (T, 3, S, S) → (T,) in [0, 1]; ``key`` names it stably for the episode cache."""

    img_size: int
    key: str

    def __call__(self, rgb: np.ndarray) -> np.ndarray: ...


def _recomputed(task: str, steps: list[dict[str, Any]], actions: np.ndarray,
                obj_init_z: float | None, reward_fn: RewardFn | None) -> tuple[np.ndarray, bool]:
    """Rewards of the state after each step (fowm_core.tasks, as the twin), and whether any
    succeeded."""
    fn = reward_fn or tasks.reward
    states = [tasks.TaskState(p["eef"], p["gripper"], p["obj"], p["goal"], obj_init_z)
              for p in steps[1:]]
    values = np.asarray([fn(task, s, a) for s, a in zip(states, actions, strict=True)], np.float32)
    return values, any(tasks.success(task, s) for s in states)


def read_episode_bag(path: str | Path, *, task: str | None = None, obs_mode: str = "state",
                     recompute_reward: bool = False, img_size: int = 84,
                     sync: SyncParams = SyncParams(), reward_fn: RewardFn | None = None,
                     image_reward: ImageReward | None = None) -> Episode:
    """Rebuild the exact transitions of one episode bag.

    ``task`` other than the logged one relabels the episode (needs ``recompute_reward``).
    obs: "state" is ``convert.build_state``; in rgb/all mode also "rgb" (N,3,img_size,img_size).
    ``image_reward`` (a success classifier) replaces every reward with its score of the image after
    the step, whatever the observation mode (docs/rewards.md). Logged rewards of steps that only
    the operator's label scored become that label (labels.fill_label_rewards).
    """
    path = Path(path)
    try:
        return _read(path, task, str(obs_mode), recompute_reward, img_size, sync, reward_fn,
                     image_reward)
    except BagError:
        raise
    except FowmError as err:
        msg = f"bag {path} {err}"
        raise BagError(msg) from err
    except _LOW_LEVEL_ERRORS as err:
        msg = (f"bag {path} cannot be read ({type(err).__name__}: {err}); it is corrupted or "
               "truncated: re-record it or remove it from the dataset")
        raise BagError(msg) from err


def _read(path: Path, task: str | None, obs_mode: str, recompute: bool, img_size: int,
          params: SyncParams, reward_fn: RewardFn | None,
          image_reward: ImageReward | None = None) -> Episode:
    use_rgb = obs_mode in ("rgb", "all")
    scan = _scan(path, want_images=use_rgb or image_reward is not None)
    scan.actions, superseded = _commands_in_force(scan.actions)
    start, end = _event(scan, "start"), _event(scan, "end")
    logged_task = start.task
    task = task or logged_task
    if task != logged_task and not recompute:
        msg = (f"was logged for task {logged_task!r}; relabeling it as {task!r} needs "
               "recompute_reward=True")
        raise FowmError(msg)
    # A classifier scores every step from the image: no pose needs to be logged for the reward.
    needed = _needed_topics(task, obs_mode, recompute and image_reward is None)
    if image_reward is not None and topics.COLOR_IMAGE not in needed:
        needed.append(topics.COLOR_IMAGE)
    sets = _pair_observations(scan, needed, params)
    stamps = _observation_stamps(scan, sets, end)
    steps = [_pieces(sets[s]) for s in stamps]
    key_mode = obs_mode if use_rgb else "state"
    obs = {"state": np.stack([convert.build_state(task, key_mode, p["eef"], p["gripper"],
                                                  p["obj"], p["goal"]) for p in steps])}
    if use_rgb:
        obs["rgb"] = convert.resize_rgb(np.stack([p["rgb"] for p in steps]), img_size)
    actions = np.stack([a for _, a, _ in scan.actions])
    obj_init_z = start.get("obj_init_z")
    if obj_init_z is None and steps[0]["obj"] is not None:
        obj_init_z = float(steps[0]["obj"][2])
    success, terminal = bool(end.get("success", False)), bool(end.get("terminal", False))
    sources = end.get("reward_sources")
    sources = None if sources is None else labels.decode_sources(sources)
    if image_reward is not None:
        frames = convert.resize_rgb(np.stack([p["rgb"] for p in steps[1:]]), image_reward.img_size)
        reward = np.clip(np.asarray(image_reward(frames), np.float32).reshape(-1), 0.0, 1.0)
        source = f"classifier {image_reward.key}"
    elif recompute:
        reward, any_success = _recomputed(task, steps, actions, obj_init_z, reward_fn)
        if task != logged_task:        # the logged outcome belongs to the other task
            success, terminal = any_success, False
        source = "recomputed"
    else:
        reward, source = _logged_rewards(scan), "logged"
        if sources is not None:
            reward = labels.fill_label_rewards(reward, sources, success)
    info = {"task": task, "logged_task": logged_task, "episode": start.episode,
            "seed": start.get("seed"), "stamps_ns": np.asarray(stamps, dtype=np.int64),
            "bag": str(path), "obs_mode": obs_mode,
            "reward_source": source, "superseded_commands": superseded}
    if sources is not None:
        info["step_reward_sources"] = sources
    return Episode(obs, actions, reward, terminal=terminal, success=success, info=info)


# -- datasets ------------------------------------------------------------------------------------
@dataclass
class DatasetRead:
    episodes: list[Episode]
    failures: list[tuple[Path, str]]      # (bag, why) for every bag that was skipped


def read_dataset(root: str | Path, *, cache_dir: str | Path | None = None, cache: bool = True,
                 progress: bool = False, **read_kwargs: Any) -> DatasetRead:
    """Read every episode bag under ``root``; a bag that fails is reported and skipped.

    Episodes are cached as plain .npz arrays (never pickled) in ``cache_dir`` (default
    ``root/.fowm_cache``), keyed by the bag's content hash and the read options.
    """
    from tqdm import tqdm

    root = Path(root)
    bags = bag_cache.find_bags(root)
    if not bags:
        msg = f"no rosbag2 directories (with metadata.yaml) under {root}"
        raise BagError(msg)
    cache_root = Path(cache_dir) if cache_dir is not None else root / ".fowm_cache"
    use_cache = cache and read_kwargs.get("reward_fn") is None   # a function has no stable key
    episodes, failures = [], []
    for bag in tqdm(bags, desc="bags", disable=not progress):
        try:
            if use_cache:
                episodes.append(_read_cached(bag, cache_root, read_kwargs))
            else:
                episodes.append(read_episode_bag(bag, **read_kwargs))
        except BagError as err:
            log.warning("skipping %s", err)
            failures.append((bag, str(err)))
    return DatasetRead(episodes, failures)


def _read_cached(bag: Path, cache_root: Path, read_kwargs: dict[str, Any]) -> Episode:
    try:
        digest = bag_cache.bag_hash(bag)
    except OSError as err:
        msg = f"bag {bag} cannot be hashed: {err}"
        raise BagError(msg) from err
    opts = {k: (v.__dict__ if isinstance(v, SyncParams) else v) for k, v in read_kwargs.items()}
    # The state layout is part of the key: cached vectors built by an older build_state must miss.
    layout = convert.state_layout()
    key = hashlib.sha256(json.dumps([CODEC, digest, opts, layout, convert.RESIZE_METHOD],
                                    sort_keys=True, default=str)
                         .encode()).hexdigest()[:32]
    file = cache_root / f"{key}.npz"
    if file.is_file():
        episode = bag_cache.load_npz(file)
        if episode is not None:
            episode.info["bag"] = str(bag)
            return episode
    episode = read_episode_bag(bag, **read_kwargs)
    bag_cache.save_npz(file, episode)
    return episode
