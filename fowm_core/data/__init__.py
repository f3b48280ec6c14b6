"""Episode data: rosbag2 codec, message conversion and the reward functions (pure numpy)."""
