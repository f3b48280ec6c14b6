"""fowm_episode_manager: starts and ends episodes, publishes rewards and episode events.

Rewards come from fowm_core.tasks, the function the learner uses on bags and the twin uses
in step(), computed on the paired observation after each agent step (fowm_core.runtime.control
.EpisodeTracker). Episodes last episode_length agent steps (docs/algorithm.md §7.1: 25) or, if
end_on_success, end at the first success. Events go to /fowm/episode as JSON (docs/design.md).

The task is the planner's ``checkpoint``'s: leave ``task`` empty and it comes from the sidecar; a
task set anyway must equal it (fowm.ros.checkpoint_task), so rewards are never scored for another
task than the one planned.

Resets run on a worker thread, never in the executor (a blocking call in a callback deadlocks a
single-threaded executor, docs/platform.md §1.5):
- sim: publish "start" (the planner clears its warm start and re-seeds on it), set the twin's
  ``seed`` parameter, call its ``~/reset`` (std_srvs/Trigger); episode n uses base_seed + n;
- real: the operator resets the scene and calls ``~/confirm_reset`` (std_srvs/Trigger), and at the
  end labels the outcome with ``~/label_success`` (std_srvs/SetBool; the label wins over the
  reward function's success). Rewards: tracked poses, else ``classifier``, else the label; the end
  event records the label and each step's source (runtime.reward_source, docs/rewards.md).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32, String
from std_srvs.srv import SetBool, Trigger

from fowm.ros import checkpoint_task, qos, reward_inputs
from fowm.ros.diagnostics import ERROR, OK, WARN, DiagnosticsReporter, Health, with_guard
from fowm.ros.guard import InputGuard, SupervisedThread
from fowm.ros.params import declare_from_dataclass
from fowm.ros.spin import run_nodes
from fowm.ros.twin_reset import TwinResetClient
from fowm_core import tasks
from fowm_core.contract import topics
from fowm_core.contract.messages import EpisodeEvent
from fowm_core.data import convert
from fowm_core.data.sync import ApproxTimeSync
from fowm_core.errors import ConfigError, FowmError
from fowm_core.runtime.control import EpisodeTracker
from fowm_core.runtime.control import param_meta as _p
from fowm_core.runtime.reward_source import RewardSourceParams

MODES = ("sim", "real")
NEVER = 2**63 - 1


@dataclass(frozen=True)
class EpisodeManagerParams:
    checkpoint: str = field(default="", metadata=_p(
        "the planner's checkpoint: the task comes from its sidecar (fowm.ros.checkpoint_task)"))
    task: str = field(default="", metadata=_p(
        "task whose reward/success are computed; empty: the checkpoint's (set: must equal it)"))
    mode: str = field(default="sim", metadata=_p(
        "sim: reset the twin by service; real: wait for the operator's confirm/label services"))
    episode_length: int = field(default=25, metadata=_p(
        "agent steps per episode (docs/algorithm.md §7.1: 25)", 1, 100000))
    end_on_success: bool = field(default=False, metadata=_p(
        "end an episode at its first success (the reference runs the full length)"))
    lockstep: bool = field(default=False, metadata=_p(
        "pair each step's action by the observation stamp exactly (sim on /clock)"))
    base_seed: int = field(default=0, metadata=_p(
        "episode n resets the twin with seed base_seed + n", 0, 2**31 - 1))
    num_episodes: int = field(default=0, metadata=_p(
        "stop after this many episodes; 0 runs until shut down", 0, 10**9))
    sim_node: str = field(default="fowm_sim", metadata=_p(
        "name of the twin node whose ~/reset and seed parameter are used"))
    service_timeout_s: float = field(default=10.0, metadata=_p(
        "seconds to wait for the twin's services", 0.1, 600.0))
    sync_slop_s: float = field(default=0.02, metadata=_p(
        "approximate-time pairing tolerance of the pose and joint streams", 1e-4, 1.0))
    max_future_s: float = field(default=0.5, metadata=_p(
        "refuse observations stamped further ahead of the node clock than this", 0.0, 10.0))
    classifier: str = field(default="", metadata=_p(
        "real mode: success classifier (fowm classifier train) scoring steps the tracker cannot"))
    rewards: RewardSourceParams = field(default_factory=RewardSourceParams)


class EpisodeManagerNode(Node):
    """Node ``fowm_episode_manager``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("fowm_episode_manager", **kwargs)
        self.params = p = checkpoint_task.resolve(
            self.get_name(), declare_from_dataclass(self, "", EpisodeManagerParams))
        if p.mode not in MODES:
            msg = f"parameter mode={p.mode!r} is invalid: expected one of {MODES}"
            raise ConfigError(msg)
        if p.task not in tasks.names():
            msg = f"parameter task={p.task!r} is invalid: expected one of {tasks.names()}"
            raise ConfigError(msg)
        # Real mode scores steps from whatever is fresh (runtime.reward_source); sim from the
        # twin's privileged poses, paired with each observation.
        self.selector, image_size = (reward_inputs.make_selector(p.task, p.classifier, p.rewards)
                                     if p.mode == "real" else (None, 0))
        self.tracker = EpisodeTracker(
            task=p.task, reward_fn=self.selector.reward if self.selector else (
                lambda task, s, a: tasks.reward(task, s, a)),
            success_fn=self.selector.success if self.selector else tasks.success,
            action_dim=tasks.get(p.task).action_dim,
            max_steps=p.episode_length, end_on_success=p.end_on_success,
            strict_pairing=p.lockstep)
        self.events: list[dict[str, Any]] = []       # every event published, for callers/tests
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._stop = threading.Event()
        self._operator = {"reset": threading.Event(), "label": threading.Event()}
        self._label: bool | None = None
        self._obj_init_z: float | None = None
        self._recent: deque[tuple[int, dict[str, Any]]] = deque(maxlen=8)
        self._next_episode = 0
        self.error = ""
        self.waiting_for = ""                         # the operator service awaited, if any
        self.inputs = InputGuard(self, p.max_future_s)
        self.diag = DiagnosticsReporter(self, "fowm_episode_manager: episodes", p.mode)

        self.reward_pub = self.create_publisher(Float32, topics.REWARD, qos.COMMAND)
        self.episode_pub = self.create_publisher(String, topics.EPISODE, qos.EVENTS)
        self.streams = {"ee_pose": (PoseStamped, topics.EE_POSE),
                        "joint_states": (JointState, topics.JOINT_STATES)}
        # Real: poses and images as they come; observations wait for their frame's poses.
        self.pending = None if self.selector is None else reward_inputs.subscribe(
            self, self.selector, image_size, self.inputs.guard, self._release)
        if self.selector is None:                 # sim: the twin's poses, paired
            self.streams["goal_pose"] = (PoseStamped, topics.GOAL_POSE)
            if tasks.get(p.task).has_object:
                self.streams["object_pose"] = (PoseStamped, topics.OBJECT_POSE)
        self._sync = ApproxTimeSync(len(self.streams), 10, p.sync_slop_s,
                                    max_ahead_s=p.max_future_s)
        guard = self.inputs.guard
        self.create_subscription(JointState, topics.ACTION, guard(topics.ACTION, self._on_action),
                                 qos.COMMAND)
        for index, (msg_type, topic) in enumerate(self.streams.values()):
            self.create_subscription(msg_type, topic, guard(topic, self._stream_callback(
                index, topic)), qos.SENSOR_SUB)
        if p.mode == "sim":
            self.twin = TwinResetClient(self, p.sim_node, p.service_timeout_s, self._stop)
        else:
            self.create_service(Trigger, "~/confirm_reset",
                                self.inputs.service("~/confirm_reset", self._on_confirm_reset))
            self.create_service(SetBool, "~/label_success",
                                self.inputs.service("~/label_success", self._on_label))
        self._worker = SupervisedThread("fowm_episodes", self._run,
                                        lambda text: self.get_logger().error(text))
        self._worker.start()
        self.create_timer(1.0, guard("watchdog", self._watchdog))
        self.diag.publish_every(health=lambda: with_guard(
            self._health(), self.inputs, worker_restarts=self._worker.restarts))

    def _health(self) -> Health:
        t = self.tracker
        values = {"mode": self.params.mode, "task": self.params.task, "episode": t.episode,
                  "steps": t.steps, "episode_length": self.params.episode_length,
                  "return": t.ret, "episodes_ended": sum(e["event"] == "end" for e in self.events)}
        if self.error:
            return ERROR, f"stopped: {self.error}", values
        if not self._worker.is_alive():
            return OK, "finished", values
        if self.waiting_for:
            return WARN, f"waiting for the operator: call ~/{self.waiting_for}", values
        if t.active:
            return OK, f"episode {t.episode}: step {t.steps}/{self.params.episode_length}", values
        return OK, "resetting", values

    # -- executor side -----------------------------------------------------------------------------
    def _on_action(self, msg: JointState) -> None:
        try:
            action = convert.action_array(msg)
        except FowmError:
            return            # not an answer of ours (e.g. a hold of another length): not counted
        if action.shape != (self.tracker.action_dim,):
            return
        if not np.isfinite(action).all():
            # Never scored: a NaN return would stop the episode events (issue 11 suite).
            self.inputs.refuse(topics.ACTION, f"non-finite action {action.tolist()}: not scored")
            return
        stamp = convert.stamp_ns(msg)
        if self.inputs.future(topics.ACTION, stamp):
            return
        action = np.clip(action, -1.0, 1.0)   # what the arm executes (safety.command_to_execute)
        with self._lock:
            self.tracker.record_action(stamp, action)

    def _stream_callback(self, index: int, topic: str) -> Any:
        def callback(msg: Any) -> None:
            stamp, now = convert.stamp_ns(msg), self.get_clock().now().nanoseconds
            if self.inputs.future(topic, stamp, now):
                return
            if topic == topics.JOINT_STATES:
                convert.joint_state_arrays(msg)       # raises (refused by the guard) if unusable
            else:
                convert.check_pose(msg, topic)        # another frame, a broken quaternion
            matched = self._sync.add(index, stamp, msg, now_ns=now or None)
            if matched is not None:
                msgs = dict(zip(self.streams, matched, strict=True))
                stamp = convert.stamp_ns(msgs["ee_pose"])
                try:
                    reward_inputs.pieces(msgs)   # an unusable set is refused, never kept
                except FowmError as err:
                    self.inputs.refuse("observation set", str(err))
                    return
                with self._lock:
                    self._recent.append((stamp, msgs))
                    self._queue(stamp, msgs)
        return callback

    def _queue(self, stamp: int, msgs: dict[str, Any]) -> None:
        """Feed now (sim), or once the tracker's poses of its frame are in (real; lock held)."""
        if self.pending is not None:
            self.pending.push(stamp, msgs, time.monotonic())
        for item in self.pending.due(time.monotonic()) if self.pending else [(stamp, msgs)]:
            self._feed(*item)

    def _release(self) -> None:
        """Real: feed the held observations that are due (a pose came, or the wait ran out)."""
        with self._lock:
            for item in self.pending.due(time.monotonic()) if self.pending else ():
                self._feed(*item)

    def _feed(self, stamp: int, msgs: dict[str, Any]) -> None:
        """Advance the tracker with one paired observation (lock held)."""
        pieces, first = reward_inputs.pieces(msgs), self.tracker.is_first(stamp)
        if self.selector is not None:      # real: scored from what is fresh (reward_source)
            state: Any = self.selector.observation(stamp, pieces["eef"], pieces["gripper"], first)
        else:
            if first:
                self._obj_init_z = None if pieces["obj"] is None else float(pieces["obj"][2])
            state = tasks.TaskState(**pieces, obj_init_z=self._obj_init_z)
        reward = self.tracker.observe(stamp, state)
        if reward is not None:
            self.reward_pub.publish(Float32(data=reward))
        if self.tracker.is_done:
            self._done.set()

    def _on_confirm_reset(self, request: Trigger.Request,
                          response: Trigger.Response) -> Trigger.Response:
        self._operator["reset"].set()
        response.success, response.message = True, "starting the next episode"
        return response

    def _on_label(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self._label = bool(request.data)
        self._operator["label"].set()
        response.success, response.message = True, f"episode labelled success={request.data}"
        return response

    # -- worker thread -----------------------------------------------------------------------------
    def _watchdog(self) -> None:
        """Executor timer: restart a worker that died (reported by ``_health``)."""
        if not self._stop.is_set() and self.context.ok():
            self._worker.check()

    def _run(self) -> None:
        """Worker thread; a restarted worker runs the episode that did not finish again."""
        try:
            while not self._stop.is_set() and (self.params.num_episodes == 0
                                               or self._next_episode < self.params.num_episodes):
                if not self._run_episode(self._next_episode):
                    return
                self._next_episode += 1
        except FowmError as err:
            if self._stop.is_set():
                return                         # shutting down: the twin went first, no error
            self.error = str(err)
            self.get_logger().error(f"episode manager stopped: {err}")
        except Exception:
            if self.context.ok():          # a signal may have shut ROS down under our feet
                raise

    def _run_episode(self, episode: int) -> bool:
        seed = self.params.base_seed + episode
        self._done.clear()
        if self.params.mode == "real":
            self.get_logger().info(
                f"episode {episode}: reset the scene, then call "
                f"{self.get_fully_qualified_name()}/confirm_reset (std_srvs/Trigger)")
            if not self._wait(self._operator["reset"], "confirm_reset"):
                return False
            self._begin(episode, seed, self.get_clock().now().nanoseconds)
        else:
            self._wait_for_twin()
            with self._lock:                  # announce first: the planner resets on this event
                self._publish(self.tracker.start(episode, seed, min_stamp_ns=NEVER))
            self._begin(episode, seed, self.twin.reset(seed), announce=False)
        if not self._wait(self._done):
            return False
        label = None
        if self.params.mode == "real":
            self.get_logger().info(
                f"episode {episode} ended: label it with {self.get_fully_qualified_name()}"
                "/label_success (std_srvs/SetBool, data: true if it succeeded)")
            if not self._wait(self._operator["label"], "label_success"):
                return False
            label = self._label
        with self._lock:
            event = self.tracker.finish(success=label)
            if self.selector is not None:
                event = dataclasses.replace(event, labelled_by="operator",
                                            reward_sources=self.selector.encoded())
            self._publish(event)
        return True

    def _begin(self, episode: int, seed: int, min_stamp: int, announce: bool = True) -> None:
        with self._lock:
            event = self.tracker.start(episode, seed, min_stamp_ns=min_stamp)
            if self.selector is not None:
                self.selector.start_episode()
            if announce:
                self._publish(event)
            for stamp, msgs in list(self._recent):   # observations that beat the reset's reply
                self._queue(stamp, msgs)              # (each parsed once already: cannot fail)

    def _wait_for_twin(self) -> None:
        """The twin's services, and briefly a listener for the events (the planner resets and
        re-seeds on "start", so the first one must not go out before it has matched)."""
        deadline = time.monotonic() + 2.0
        while self.episode_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.twin.wait_for_services()

    def _wait(self, event: threading.Event, service: str = "") -> bool:
        """Wait for ``event`` (an operator's ``service`` call, for /diagnostics) unless the node
        is shutting down; False means stop."""
        self.waiting_for = service
        try:
            while not self._stop.is_set():
                if event.wait(0.1):
                    event.clear()
                    return True
            return False
        finally:
            self.waiting_for = ""

    def _publish(self, event: EpisodeEvent) -> None:
        text = event.to_json()
        self.events.append(event.as_dict())
        self.episode_pub.publish(String(data=text))
        self.get_logger().info(f"episode event: {text}")

    def destroy_node(self) -> None:
        # None: refused at start (bad parameters) before the worker existed; rclpy's shutdown
        # still destroys the half-built node.
        worker = getattr(self, "_worker", None)
        if worker is not None:
            self._stop.set()
            worker.stop(5.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Console script `ros2 run fowm episode_manager`: this node until SIGINT/SIGTERM."""
    run_nodes([EpisodeManagerNode], args)


if __name__ == "__main__":
    main()
