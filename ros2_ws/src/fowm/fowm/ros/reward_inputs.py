"""The episode manager's reward inputs (docs/rewards.md): the pieces of a paired observation, and
in real mode its ``RewardSelector`` (with the success classifier, if one is set) and the
subscriptions that feed it tracked poses and camera images as they come, with the
``PendingSteps`` that hold each observation until the tracker's poses of its frame are in. The
decision itself is fowm_core.runtime.reward_source's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import Image

from fowm.ros import qos
from fowm_core import tasks
from fowm_core.contract import topics
from fowm_core.data import convert
from fowm_core.errors import FowmError
from fowm_core.learning import success
from fowm_core.runtime.reward_source import PendingSteps, RewardSelector, RewardSourceParams
from fowm_core.runtime.safety import first_non_finite

RELEASE_PERIOD_S = 0.02    # how often held observations whose wait ran out are released

Guard = Callable[[str, Callable[[Any], None]], Callable[[Any], None]]


def make_selector(task: str, classifier: str, params: RewardSourceParams
                  ) -> tuple[RewardSelector, int]:
    """The selector and the classifier's image size (0 without one)."""
    if not classifier:
        return RewardSelector(task, None, 0.5, params), 0
    clf = success.load(classifier)
    success.check_task(clf, task, f"parameter classifier={classifier!r}")
    return RewardSelector(task, lambda rgb: float(clf.predict(rgb)[0]), clf.threshold,
                          params), clf.img_size


def pieces(msgs: dict[str, Any]) -> dict[str, Any]:
    """The reward function's inputs; FowmError for a set that cannot give a finite reward."""
    obj = convert.pose_arrays(msgs["object_pose"])[0] if "object_pose" in msgs else None
    goal = convert.pose_arrays(msgs["goal_pose"])[0] if "goal_pose" in msgs else None
    out = {"eef": convert.pose_arrays(msgs["ee_pose"])[0],
           "gripper": convert.joint_state_arrays(msgs["joint_states"])[1],
           "obj": obj, "goal": goal}
    bad = first_non_finite({k: v for k, v in out.items() if v is not None})
    if bad is not None:
        msg = f"non-finite {bad} in the observation stamped {convert.stamp_ns(msgs['ee_pose'])}"
        raise FowmError(msg)
    return out


def subscribe(node: Node, selector: RewardSelector, image_size: int, guard: Guard,
              release: Callable[[], None]) -> PendingSteps:
    """Tracked poses (those the task has) and, with a classifier, camera images; returns the
    queue of held observations, and calls ``release`` when a pose comes and periodically."""
    poses = {"goal": topics.GOAL_POSE}
    if tasks.get(selector.task).has_object:
        poses["obj"] = topics.OBJECT_POSE

    def on_pose(key: str, msg: PoseStamped) -> None:
        selector.pose(key, convert.stamp_ns(msg), convert.pose_arrays(msg)[0])
        release()

    for key, topic in poses.items():
        node.create_subscription(PoseStamped, topic, guard(topic, lambda m, k=key: on_pose(k, m)),
                                 qos.SENSOR_SUB)
    # On the steady clock: the wait is in wall seconds, and a lock-step twin's /clock stops at
    # the episode's end, when the last observations may still be held.
    node.create_timer(RELEASE_PERIOD_S, guard("held observations", lambda: release()),
                      clock=Clock(clock_type=ClockType.STEADY_TIME))
    if selector.classifier is not None:
        node.create_subscription(Image, topics.COLOR_IMAGE, guard(
            topics.COLOR_IMAGE, lambda m: selector.image(
                convert.stamp_ns(m), convert.model_image(m, image_size))), qos.SENSOR_SUB)
    return PendingSteps(selector, selector.params.pose_wait_s)
