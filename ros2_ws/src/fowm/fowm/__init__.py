"""fowm: the ROS 2 package. Thin rclpy nodes that adapt fowm_core and the vendor SDKs to topics."""
