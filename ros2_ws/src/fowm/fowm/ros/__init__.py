"""Leaf helpers for the nodes: parameters, QoS profiles, timing, diagnostics, spinning."""
