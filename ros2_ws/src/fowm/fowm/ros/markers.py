"""The planner's rviz output: the planned end-effector path as a MarkerArray (visualization_msgs).

Kept apart from the control loop: the loop computes the path (fowm_core.runtime.control) and the
colour, this turns them into messages.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from fowm_core.contract import topics
from fowm_core.data import convert


def plan_markers(path: np.ndarray, rgba: tuple[float, float, float, float],
                 stamp_ns: int) -> MarkerArray:
    """Clear the previous plan, then one line strip through ``path`` (N, 3) in the base frame."""
    r, g, b, a = rgba
    clear = Marker(action=Marker.DELETEALL)
    line = Marker(ns="fowm_plan", id=0, type=Marker.LINE_STRIP, action=Marker.ADD)
    line.header.frame_id = topics.BASE_FRAME
    line.header.stamp = convert.to_time(stamp_ns, Time)
    line.pose.orientation.w = 1.0
    line.scale.x = 0.01
    line.color = ColorRGBA(r=r, g=g, b=b, a=a)
    line.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in path]
    line.colors = [line.color] * len(line.points)
    return MarkerArray(markers=[clear, line])
