"""Errors raised at fowm_core's module edges. Each message names the value seen and the fix."""

from __future__ import annotations


class FowmError(Exception):
    """Base class of every error fowm raises on purpose."""


class ConfigError(FowmError, ValueError):
    """A configuration value is out of range or inconsistent."""


class CheckpointError(FowmError):
    """A checkpoint file is missing, truncated, pickled, or does not match the running model."""


class BagError(FowmError):
    """A rosbag2 file cannot be read, or does not hold what an episode needs."""


class EnvError(FowmError):
    """The simulation twin was asked for something it cannot do."""


class MessageError(FowmError, ValueError):
    """A wire message (JSON on /fowm/weights or /fowm/episode) does not match its schema."""


class PerceptionError(FowmError):
    """A camera image, intrinsics, extrinsics file or calibration set cannot give a pose."""
