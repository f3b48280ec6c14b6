"""The episode manager's real-mode reward inputs (docs/rewards.md): its ``RewardSelector`` (with
the success classifier, if one is set) and the subscriptions that feed it tracked poses and
camera images as they come. The decision itself is fowm_core.runtime.reward_source's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import Image

from fowm.ros import qos
from fowm_core import tasks
from fowm_core.contract import topics
from fowm_core.data import convert
from fowm_core.learning import success
from fowm_core.runtime.reward_source import RewardSelector, RewardSourceParams

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


def subscribe(node: Node, selector: RewardSelector, image_size: int, guard: Guard) -> None:
    """Tracked poses (those the task has) and, with a classifier, camera images."""
    poses = {"goal": topics.GOAL_POSE}
    if tasks.get(selector.task).has_object:
        poses["obj"] = topics.OBJECT_POSE
    for key, topic in poses.items():
        node.create_subscription(PoseStamped, topic, guard(topic, lambda m, k=key: (
            selector.pose(k, convert.stamp_ns(m), convert.pose_arrays(m)[0]))), qos.SENSOR_SUB)
    if selector.classifier is not None:
        node.create_subscription(Image, topics.COLOR_IMAGE, guard(
            topics.COLOR_IMAGE, lambda m: selector.image(
                convert.stamp_ns(m), convert.model_image(m, image_size))), qos.SENSOR_SUB)
