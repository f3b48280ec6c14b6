"""MPPI planning with the uncertainty penalty, and its fused CPU fast path."""
