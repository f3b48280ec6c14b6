"""The twin in tracker mode (docs/perception.md): fowm_sim renders the ArUco plates and publishes
the tracker camera (640×480) and the arm, but not the simulator's object and goal poses, which
fowm_tracker supplies from the images as it would on the robot. Shared by `fowm run --tracker`
(fowm.bringup) and sim.launch.py's tracker:=true."""

from __future__ import annotations

from typing import Any

SIM_PARAMS: dict[str, Any] = {"markers": True, "camera": "tracker_cam",
                              "privileged_poses": False, "image_width": 640,
                              "image_height": 480}
