"""Thin adapters over the vendor SDKs (xArm, RealSense) and their test doubles."""
