"""Real mode on the twin (docs/rewards.md "Real mode on the twin"): what a lab's people do,
played by the twin, so that the episode manager's ``mode: real`` runs against the twin's camera
with no privileged topic.

In ``mode: real`` the episode manager waits for a person: ``~/confirm_reset`` once the scene is
reset, ``~/label_success`` once the episode has ended. ``TwinOperator`` stands in for that person:
it resets the twin through the twin's own ``~/reset`` (seed base_seed + n), confirms, and labels
each ended episode with the twin's TRUE success (from ``TruthLog``). That label is privileged
knowledge a lab's operator has by looking; the end event marks it ``labelled_by: operator`` as it
would a person's. ``ScriptedAnswerer`` is the behaviour policy (the task's scripted controller on
the true state, as `fowm collect` uses; on a robot: teleop, or a policy on the tracked poses).

The truth never travels on a topic: ``TruthLog`` is fed in-process by the twin
(``SimNode.observers``), so only a process holding the twin can use it: a test, a benchmark, or
`fowm run --tracker FILE --real-mode` (``with_twin_operator``, the planner acting).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.client import Client
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from fowm.ros import qos
from fowm_core import tasks
from fowm_core.contract import topics
from fowm_core.data import convert
from fowm_core.errors import FowmError
from fowm_core.sim.scripted import ScriptedPolicy


class TruthLog:
    """The twin's true task state at every observation stamp (a SimNode observer)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.states: dict[int, tasks.TaskState] = {}
        self.latest: tuple[int, tasks.TaskState] | None = None

    def __call__(self, stamp_ns: int, state: tasks.TaskState) -> None:
        with self._lock:
            self.states[int(stamp_ns)] = state
            self.latest = (int(stamp_ns), state)

    def at(self, stamp_ns: int) -> tasks.TaskState | None:
        with self._lock:
            return self.states.get(int(stamp_ns))


class ScriptedAnswerer(Node):
    """Node ``fowm_scripted_policy``: answers each observation (its ee_pose stamp) with the task's
    scripted action (``noise``: the task's medium noise if None) on the twin's true state, from
    an episode's start event to its end (an observation before the start is answered at the
    start): a lock-step twin answered at once would run ahead of the operator's confirm, and
    the episode manager, counting from the confirm, would wait for steps the twin never takes."""

    def __init__(self, task: str, truth: TruthLog, noise: float | None = None, seed: int = 0,
                 **kwargs: Any) -> None:
        super().__init__("fowm_scripted_policy", **kwargs)
        self.task, self.truth = task, truth
        self.policy = ScriptedPolicy(task, noise, np.random.default_rng(seed))
        self.actions: dict[int, np.ndarray] = {}
        self.missed = 0                       # observations whose true state was not logged
        self.active = False
        self._waiting: PoseStamped | None = None
        self.pub = self.create_publisher(JointState, topics.ACTION, qos.COMMAND)
        self.create_subscription(PoseStamped, topics.EE_POSE, self._answer, qos.SENSOR_SUB)
        self.create_subscription(String, topics.EPISODE, self._on_event, qos.EVENTS)

    def _on_event(self, msg: String) -> None:
        self.active = json.loads(msg.data).get("event") == "start"
        if self.active and self._waiting is not None:
            self._answer(self._waiting)

    def _answer(self, msg: PoseStamped) -> None:
        if not self.active:
            self._waiting = msg
            return
        self._waiting = None
        stamp = convert.stamp_ns(msg)
        state = self.truth.at(stamp)
        if state is None or stamp in self.actions:
            self.missed += state is None
            return
        action = self.policy.act(state)
        self.actions[stamp] = action
        names = list(topics.ACTION_NAMES[:len(action)])
        self.pub.publish(JointState(header=msg.header, name=names,
                                    position=[float(v) for v in action]))


class TwinOperator(Node):
    """Node ``fowm_twin_operator``: resets, confirms and labels ``num_episodes`` real-mode
    episodes on the twin (module doc). ``wants_label()`` says the episode manager waits for the
    label (``EpisodeManagerNode.waiting_for == "label_success"``); the label is the true success
    of the twin's last state; ``before_label(episode)`` runs just before it is given."""

    def __init__(self, task: str, truth: TruthLog, wants_label: Callable[[], bool],
                 num_episodes: int, base_seed: int = 0, sim_node: str = "fowm_sim",
                 manager: str = "fowm_episode_manager", timeout_s: float = 60.0,
                 before_label: Callable[[int], None] | None = None, confirm_first: bool = False,
                 **kwargs: Any) -> None:
        super().__init__("fowm_twin_operator", **kwargs)
        self.task, self.truth, self.wants_label = task, truth, wants_label
        self.before_label = before_label
        # Lock-step twin with a planner acting at once: confirm (the manager counts from its
        # clock, the twin idle at its last stamp), then reset. Otherwise the operator's order.
        self.confirm_first = confirm_first
        self._starts = 0
        self.num_episodes, self.base_seed, self.timeout_s = num_episodes, base_seed, timeout_s
        self.labels: list[bool] = []          # the labels given, episode by episode
        self.error = ""
        self._ends = 0
        self._stop = threading.Event()
        self.seed_client = self.create_client(SetParameters, f"/{sim_node}/set_parameters")
        self.reset_client = self.create_client(Trigger, f"/{sim_node}/reset")
        self.confirm_client = self.create_client(Trigger, f"/{manager}/confirm_reset")
        self.label_client = self.create_client(SetBool, f"/{manager}/label_success")
        self.create_subscription(String, topics.EPISODE, self._on_event, qos.EVENTS)
        self._worker = threading.Thread(target=self._run, name="fowm_twin_operator", daemon=True)
        self._worker.start()

    @property
    def done(self) -> bool:
        return not self._worker.is_alive()

    def _on_event(self, msg: String) -> None:
        event = json.loads(msg.data).get("event")
        self._ends += event == "end"
        self._starts += event == "start"

    def _run(self) -> None:
        try:
            for episode in range(self.num_episodes):
                if self.confirm_first:
                    self._call(self.confirm_client, Trigger.Request())
                    self._until(lambda n=episode + 1: self._starts >= n, "the start event")
                    self._reset(self.base_seed + episode)
                else:
                    self._reset(self.base_seed + episode)
                    self._call(self.confirm_client, Trigger.Request())
                self._until(self.wants_label, "the episode manager to ask for a label")
                latest = self.truth.latest
                assert latest is not None
                label = tasks.success(self.task, latest[1])    # the twin's truth (module doc)
                if self.before_label is not None:
                    self.before_label(episode)
                self.labels.append(label)
                self._call(self.label_client, SetBool.Request(data=label))
                self._until(lambda n=episode + 1: self._ends >= n, "the episode's end event")
        except FowmError as err:
            if not self._stop.is_set():
                self.error = str(err)
                self.get_logger().error(f"twin operator stopped: {err}")

    def _reset(self, seed: int) -> None:
        value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=seed)
        result = self._call(self.seed_client, SetParameters.Request(
            parameters=[ParameterMsg(name="seed", value=value)]))
        reply = self._call(self.reset_client, Trigger.Request())
        if not (result.results[0].successful and reply.success):
            msg = f"the twin refused the reset with seed {seed}: {reply.message}"
            raise FowmError(msg)

    def _call(self, client: Client, request: Any) -> Any:
        self._until(lambda: client.wait_for_service(timeout_sec=0.05),
                    f"service {client.srv_name}")
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        self._until(lambda: done.wait(0.05), f"an answer from {client.srv_name}")
        return future.result()

    def _until(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not ready():
            if self._stop.is_set():
                raise FowmError("stopping")
            if time.monotonic() > deadline:
                msg = f"waited {self.timeout_s} s for {what}; is the real-mode stack running?"
                raise FowmError(msg)
            time.sleep(0.01)

    def destroy_node(self) -> None:
        self._stop.set()
        self._worker.join(5.0)
        super().destroy_node()


def with_twin_operator(factories: list[Callable[[], Node]],
                       episodes: int) -> list[Callable[[], Node]]:
    """`fowm run --tracker FILE --real-mode` (fowm.bringup): the stack's factories, with the
    twin's truth logged (its node ``fowm_sim``) and a ``TwinOperator`` for the episode manager
    (``fowm_episode_manager``, in real mode) built after them. Duck-typed: ros/ never imports a
    node."""
    truth, built = TruthLog(), {}

    def watched(factory: Callable[[], Node]) -> Callable[[], Node]:
        def make() -> Node:
            node = factory()
            built[node.get_name()] = node
            if node.get_name() == "fowm_sim":
                node.observers.append(truth)
            return node
        return make

    def operator() -> Node:
        sim, manager = built["fowm_sim"], built["fowm_episode_manager"]
        return TwinOperator(manager.params.task, truth,
                            lambda: manager.waiting_for == "label_success", episodes,
                            manager.params.base_seed, timeout_s=manager.params.service_timeout_s,
                            confirm_first=sim.params.lockstep)

    return [*(watched(f) for f in factories), operator]
