"""fowm_sim: the MuJoCo twin (fowm_core.sim) on the real robot's topics.

It publishes what realsense-ros, xarm_ros2 and an object tracker would (docs/design.md topic
contract; every message of one sim step carries the same stamp) and executes /fowm/action with the
arm driver's safety rule: a command older than command_timeout_s, or none, is a hold (zero motion),
and each command is executed at most once. Two clocks:

- real time: a monotonic-deadline thread steps the twin at rate_hz and stamps with the node clock;
- lock-step: the twin owns time. It publishes /clock and steps only when the action answering its
  current observation (same stamp) has arrived, so evaluation through ROS is reproducible. Before
  the first ``~/reset`` call and after the episode's last step it publishes nothing new.

Task and observation mode: the planner's ``checkpoint`` owns them; leave ``task`` and ``obs_mode``
empty and they come from its sidecar, a value set anyway must equal it (fowm.ros.checkpoint_task).

``~/reset`` (std_srvs/Trigger) starts a new episode with the ``seed`` parameter (the episode
manager sets it first); the reply's message is JSON {"seed": s, "stamp_ns": first stamp or reset
time}.

Tracker mode (docs/perception.md): ``markers`` adds ArUco plates and the ``tracker_cam`` camera,
``camera`` picks the published camera, and ``privileged_poses: false`` drops the object and goal
publishers, so fowm_tracker is the only source of those poses.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_srvs.srv import Trigger

from fowm.ros import checkpoint_task, qos
from fowm.ros.diagnostics import ERROR, OK, WARN, DiagnosticsReporter, Health, with_guard
from fowm.ros.guard import InputGuard, restart_stopped
from fowm.ros.lockstep import LockstepLoop, ResetRequest
from fowm.ros.params import declare_from_dataclass
from fowm.ros.sim_messages import camera_info, image_msg, pose_msg
from fowm.ros.spin import run_nodes
from fowm.ros.timing import FixedRateLoop, Tick
from fowm_core import tasks
from fowm_core.config import Modality
from fowm_core.contract import topics
from fowm_core.data import convert
from fowm_core.errors import ConfigError, EnvError, FowmError
from fowm_core.runtime.control import param_meta as _p
from fowm_core.runtime.safety import command_to_execute
from fowm_core.sim import JOINT_NAMES, make_env
from fowm_core.sim.scene import GRIPPER_QUAT

AGENT_STEP_S = 0.16      # docs/algorithm.md §7.1: 2 env steps × 2 × 20 × 0.002 s


# The shortest time ~/reset waits for the loop to run it: enough to build the twin under load.
MIN_RESET_WAIT_S = 5.0


@dataclass(frozen=True)
class SimNodeParams:
    checkpoint: str = field(default="", metadata=_p(
        "the planner's checkpoint: task and obs_mode come from its sidecar (fowm.ros."
        "checkpoint_task)"))
    task: str = field(default="", metadata=_p(
        f"twin task: {', '.join(tasks.names())}; empty: the checkpoint's (set: must equal it)"))
    obs_mode: str = field(default="", metadata=_p(
        "observation mode the twin renders for: state, rgb or all; empty: the checkpoint's"))
    seed: int = field(default=0, metadata=_p(
        "seed of the next ~/reset (set by the episode manager)", 0, 2**31 - 1))
    rate_hz: float = field(default=1.0 / AGENT_STEP_S, metadata=_p(
        "real-time stepping rate (one agent step per tick)", 0.1, 100.0))
    lockstep: bool = field(default=False, metadata=_p(
        "own the clock: publish /clock and step only when the planner has answered"))
    image_width: int = field(default=84, metadata=_p("camera image width (px)", 16, 1920))
    image_height: int = field(default=84, metadata=_p("camera image height (px)", 16, 1080))
    command_timeout_s: float = field(default=0.4, metadata=_p(
        "real time: a command older than this is not executed (the arm holds)", 0.01, 10.0))
    lockstep_timeout_s: float = field(default=10.0, metadata=_p(
        "lock-step: wall seconds to wait for an answer before stepping with the hold", 0.1, 600.0))
    episode_length: int = field(default=25, metadata=_p(
        "agent steps per episode before the twin stops and waits for ~/reset", 1, 100000))
    markers: bool = field(default=False, metadata=_p(
        "ArUco plates on the cube and the goal, and the tracker_cam camera (docs/perception.md)"))
    camera: str = field(default="camera0", metadata=_p(
        "camera published on the image topic: camera0, or tracker_cam (needs markers)"))
    privileged_poses: bool = field(default=True, metadata=_p(
        "publish the simulator's object/goal poses; false: a tracker supplies them"))


class SimNode(Node):
    """Node ``fowm_sim``: steps the twin and publishes the robot's topics."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("fowm_sim", **kwargs)
        # seed is live: the episode manager sets it before each ~/reset, which reads it.
        self.params = p = checkpoint_task.resolve(
            self.get_name(), declare_from_dataclass(self, "", SimNodeParams, live=("seed",)))
        try:
            tasks.get(p.task)
            Modality(p.obs_mode)
        except (FowmError, ValueError) as err:
            msg = (f"fowm_sim cannot build the twin (task={p.task!r}, "
                   f"obs_mode={p.obs_mode!r}): {err}")
            raise ConfigError(msg) from err
        if p.camera not in ("camera0", *(("tracker_cam",) if p.markers else ())):
            msg = (f"parameter camera={p.camera!r} is invalid: expected camera0, or tracker_cam "
                   f"with markers: true (markers={p.markers})")
            raise ConfigError(msg)
        self.action_dim = tasks.get(p.task).action_dim
        # MuJoCo's EGL context is current on one thread only: the twin is built, reset, stepped
        # and rendered on the loop thread alone; ~/reset hands its request over and waits.
        self.env: Any = None
        self._lock = threading.RLock()
        self._command: tuple[int, np.ndarray, float] | None = None   # stamp, action, recv time
        self._command_event = threading.Event()
        self._reset_request: ResetRequest | None = None
        self._obs_stamp: int | None = None       # stamp of the observation awaiting an answer
        self._episode_over = p.lockstep           # lock-step waits for the first ~/reset
        self._sim_time_ns = 1_000_000_000         # lock-step time starts at 1 s (0 = "unset")
        self.executed_holds = 0
        self.conflict_holds = 0                   # ticks held: another /fowm/action publisher
        self.loop_restarts = 0
        self._closing = False
        self._last_command_s = 0.0                # monotonic receipt time of the last command
        self.inputs = InputGuard(self)            # no payload or tick error stops the twin
        self.steps = 0
        self.twin_error = ""
        self._obs: dict[str, np.ndarray] = {}
        # In-process only, never published: the twin's true state at each observation's stamp,
        # for the operator double and the truth a benchmark scores against (fowm.ros.twin_operator).
        self.observers: list[Callable[[int, tasks.TaskState], None]] = []

        self.image_pub = self.create_publisher(Image, topics.COLOR_IMAGE, qos.SENSOR_PUB)
        self.info_pub = self.create_publisher(CameraInfo, topics.COLOR_INFO, qos.SENSOR_PUB)
        self.joint_pub = self.create_publisher(JointState, topics.JOINT_STATES, qos.SENSOR_PUB)
        self.ee_pub = self.create_publisher(PoseStamped, topics.EE_POSE, qos.SENSOR_PUB)
        # Without privileged poses not even a publisher: the tracker must be the only one (the
        # planner holds on a second publisher of an input).
        self.object_pub = self.goal_pub = None
        if p.privileged_poses:
            self.object_pub = self.create_publisher(PoseStamped, topics.OBJECT_POSE,
                                                    qos.SENSOR_PUB)
            self.goal_pub = self.create_publisher(PoseStamped, topics.GOAL_POSE, qos.SENSOR_PUB)
        self.clock_pub = (self.create_publisher(Clock, "/clock", qos.COMMAND)
                          if p.lockstep else None)
        self.create_subscription(JointState, topics.ACTION,
                                 self.inputs.guard(topics.ACTION, self._on_action), qos.COMMAND)
        self.create_service(Trigger, "~/reset", self.inputs.service("~/reset", self._on_reset))
        if p.lockstep:
            self._publish_clock()
        self.loop: Any = self._make_loop()
        self.loop.start()
        self.create_timer(1.0, self.inputs.guard("watchdog", self._watchdog))
        self.diag = DiagnosticsReporter(self, "fowm_sim: twin", f"mujoco {p.task}/{p.obs_mode}")
        self.diag.publish_every(health=lambda: with_guard(
            self._health(), self.inputs, loop_restarts=self.loop_restarts))

    def _make_loop(self) -> Any:
        loop = (LockstepLoop(self) if self.params.lockstep else FixedRateLoop(
            1.0 / self.params.rate_hz, self._guarded_tick, name="fowm_sim"))
        loop.on_exit = self._close_env
        loop.alive = self.context.ok
        return loop

    def _watchdog(self) -> None:
        """Executor timer: a loop thread that died anyway is restarted (and counted)."""
        if not self._closing and self.context.ok():
            new = restart_stopped(self.loop, self._make_loop)
            if new is not None:
                self.loop, self.loop_restarts = new, self.loop_restarts + 1
                self.get_logger().error("the twin's loop thread had stopped: restarted it")

    def _guarded_tick(self, tick: Tick) -> None:
        try:
            self._realtime_tick(tick)
        except Exception as err:  # a twin that fails holds until ~/reset; the loop goes on
            self.tick_failed(err)

    def tick_failed(self, err: Exception) -> None:
        self.twin_error = f"twin tick failed, holding until ~/reset: {type(err).__name__}: {err}"
        self._episode_over = True
        self.inputs.refuse("twin tick", self.twin_error)

    def _health(self) -> Health:
        values: dict[str, object] = {"steps": self.steps, "executed_holds": self.executed_holds,
                                     "lockstep": self.params.lockstep}
        if hasattr(self.loop, "stats"):
            values.update(self.loop.stats.summary())
        if not self.loop.is_running:
            return ERROR, "the twin's loop thread stopped; see the log and restart", values
        if self.twin_error:
            return ERROR, self.twin_error, values
        if self._episode_over:
            return OK, "waiting for ~/reset", values
        if self.conflict_holds and self._action_conflict():
            return ERROR, "another publisher on /fowm/action: holding (two controllers)", values
        silent_s = time.monotonic() - self._last_command_s
        if not self.params.lockstep and self.steps and silent_s > self.params.command_timeout_s:
            return WARN, f"holding: no command for {silent_s:.1f} s (planner silent?)", values
        if self.params.lockstep and not self.planner_ready():
            return WARN, "lock-step: waiting for a planner on /fowm/action", values
        return OK, "stepping", values

    def ensure_env(self) -> None:
        """Build the twin on the calling (loop) thread, once."""
        if self.env is None:
            p = self.params
            self.env = make_env(p.task, p.obs_mode, episode_length=p.episode_length,
                                markers=p.markers)
            self._obs, _ = self.env.reset(seed=p.seed)

    # -- commands and resets (executor side) ------------------------------------------------------
    def _on_action(self, msg: JointState) -> None:
        try:
            action = convert.action_array(msg)
        except FowmError as err:
            self.inputs.refuse(topics.ACTION, f"ignoring action: {err}")
            return
        stamp = convert.stamp_ns(msg)
        if not self.params.lockstep and self.inputs.future(topics.ACTION, stamp):
            return
        with self._lock:
            self._last_command_s = time.monotonic()
            self._command = (stamp, action, self._last_command_s)
        self._command_event.set()

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        seed = int(self.get_parameter("seed").value)
        job = ResetRequest(seed)
        with self._lock:
            self._reset_request = job
        self._command_event.set()                       # wake a lock-step loop at once
        # The loop may be in a lock-step wait, a step or, on the first reset, building the twin
        # (MuJoCo model and renderer: 0.2 s on a quiet core, more on a busy one).
        wait_s = max(self.params.lockstep_timeout_s + 1.0 / self.params.rate_hz, MIN_RESET_WAIT_S)
        deadline = time.monotonic() + wait_s
        # In slices: a loop that stopped (shutdown) must not hold the executor for the timeout.
        while not job.done.wait(0.05):
            if time.monotonic() > deadline or not self.loop.is_running:
                response.success, response.message = False, "the twin's loop did not run the reset"
                return response
        response.success = job.error is None
        response.message = job.error or json.dumps({"seed": seed, "stamp_ns": job.stamp_ns})
        return response

    def serve_reset(self) -> None:
        """Run a pending ~/reset on the loop thread (called at the top of every iteration)."""
        with self._lock:
            job, self._reset_request = self._reset_request, None
            if job is None:
                return
            try:
                self.ensure_env()
                self._obs, _ = self.env.reset(seed=job.seed)
            except (FowmError, ValueError) as err:
                job.error = f"reset with seed {job.seed} failed: {err}"
                job.done.set()
                return
            self._command, self._episode_over, self.steps = None, False, 0
            self.twin_error = ""
            if self.params.lockstep:
                job.stamp_ns = self._advance_clock()
                self._publish_observation(job.stamp_ns)
            else:
                job.stamp_ns = self.get_clock().now().nanoseconds
        job.done.set()

    # -- stepping --------------------------------------------------------------------------------
    def _realtime_tick(self, tick: Tick) -> None:
        self.serve_reset()
        with self._lock:
            self.ensure_env()
            if self._obs_stamp is not None and not self._episode_over:
                command = self._command
                age = None if command is None else time.monotonic() - command[2]
                if command is not None and self._action_conflict():
                    command, age = None, None       # two controllers: hold (fowm.ros.publishers)
                    self.conflict_holds += 1
                action, _ = command_to_execute(None if command is None else command[1], age,
                                               self.params.command_timeout_s, self.action_dim)
                self._command = None                # each command is executed at most once
                self._step(action)
            self._publish_observation(self.get_clock().now().nanoseconds)

    def _step(self, action: np.ndarray) -> None:
        self.executed_holds += int(not np.any(action))
        try:
            self._obs, _, terminated, truncated, _ = self.env.step(action)
        except EnvError as err:
            self.twin_error = f"twin failed, holding until ~/reset: {err}"
            self.get_logger().error(self.twin_error)
            self._episode_over = True
            return
        self.steps += 1
        self._episode_over = terminated or truncated

    def lockstep_step(self, waited_s: float) -> bool:
        """Lock-step: step if the current observation has its answer (or the wait timed out)."""
        self.serve_reset()
        with self._lock:
            self.ensure_env()
            if self._episode_over or self._obs_stamp is None:
                return False
            command = self._command
            if command is not None and command[0] == self._obs_stamp:
                action, _ = command_to_execute(command[1], 0.0, 1.0, self.action_dim)
            elif waited_s >= self.params.lockstep_timeout_s:
                self.get_logger().warning(
                    f"no answer to the observation at {self._obs_stamp} ns within "
                    f"{self.params.lockstep_timeout_s} s: stepping with the hold (zero action)")
                action = np.zeros(self.action_dim, np.float32)
            else:
                return False
            self._command = None
            self._step(action)
            self._publish_observation(self._advance_clock())
            return True

    def _action_conflict(self) -> bool:
        return self.count_publishers(topics.ACTION) > 1

    def planner_ready(self) -> bool:
        """Lock-step: something publishes /fowm/action (the planner finished starting)."""
        return self.count_publishers(topics.ACTION) > 0

    def _advance_clock(self) -> int:
        self._sim_time_ns += round(AGENT_STEP_S * 1e9)
        self._publish_clock()
        return self._sim_time_ns

    def _publish_clock(self) -> None:
        if self.clock_pub is not None:
            self.clock_pub.publish(Clock(clock=convert.to_time(self._sim_time_ns, Time)))

    # -- observations ----------------------------------------------------------------------------
    def _publish_observation(self, stamp_ns: int) -> None:
        """Every message of one step with one stamp (the obs the next action must answer)."""
        env, stamp = self.env, convert.to_time(stamp_ns, Time)
        state = env.task_state()
        for observer in self.observers:           # before the messages: an answer may look it up
            observer(stamp_ns, state)
        self.image_pub.publish(self._image(stamp))
        self.info_pub.publish(self._camera_info(stamp))
        joints = JointState(name=list(JOINT_NAMES),
                            position=[float(v) for v in env.joint_positions()])
        joints.header.stamp = stamp
        self.joint_pub.publish(joints)
        w, x, y, z = GRIPPER_QUAT
        self.ee_pub.publish(pose_msg(stamp, state.eef, (x, y, z, w)))
        pose = env.object_pose()
        if pose is not None and self.object_pub is not None:
            qw, qx, qy, qz = pose[1]
            self.object_pub.publish(pose_msg(stamp, pose[0], (qx, qy, qz, qw)))
        if state.goal is not None and self.goal_pub is not None:
            self.goal_pub.publish(pose_msg(stamp, state.goal, (0.0, 0.0, 0.0, 1.0)))
        self._obs_stamp = stamp_ns

    def _image(self, stamp: Time) -> Image:
        p = self.params
        rgb = self._obs.get("rgb") if p.camera == "camera0" else None
        if rgb is not None and rgb.shape[1:] == (p.image_height, p.image_width):
            hwc = np.ascontiguousarray(rgb.transpose(1, 2, 0))   # the exact pixels of the env obs
        else:
            hwc = self.env.render(p.image_width, p.image_height, p.camera)
        return image_msg(stamp, hwc)

    def _camera_info(self, stamp: Time) -> CameraInfo:
        p = self.params
        fovy = float(self.env.model.cam(p.camera).fovy[0])
        return camera_info(stamp, p.image_width, p.image_height, fovy)

    def _close_env(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None

    def destroy_node(self) -> None:
        # A node refused at start (bad parameters) has no loop; rclpy's shutdown still destroys it.
        self._closing = True
        if hasattr(self, "loop"):
            self.loop.stop()              # closes the twin on its own thread (on_exit)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Console script `ros2 run fowm sim_node`: this node until SIGINT/SIGTERM."""
    run_nodes([SimNode], args)


if __name__ == "__main__":
    main()
