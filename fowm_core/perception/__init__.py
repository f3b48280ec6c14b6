"""Perception: ArUco marker poses, camera geometry and hand-eye calibration (docs/perception.md).

Pure numpy + OpenCV (cv2.aruco, cv2.solvePnP, cv2.calibrateHandEye): the tracker node, the twin's
marker textures and ``fowm calibrate`` share it, so the twin and the real arm run the same maths.
"""
