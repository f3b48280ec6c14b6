"""fowm_core: the FOWM algorithm, simulation twin and rosbag2 data, without any ROS import."""

__version__ = "0.1.0"
