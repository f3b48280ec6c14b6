"""Robot-side rules without ROS: safety chain, arm limits, episodes, hot-swap, live learning."""
