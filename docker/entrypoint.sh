#!/bin/bash
# Source ROS and the fowm workspace, then run the command (default: the sim launch).
set -e
source /opt/ros/jazzy/setup.bash
source /fowm/ros2_ws/install/setup.bash
exec "$@"
