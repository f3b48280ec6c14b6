"""The ROS 2 nodes, one module each, each with its own main()."""
