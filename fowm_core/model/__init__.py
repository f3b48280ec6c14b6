"""The FOWM world model and its building blocks."""

from fowm_core.model.world_model import WorldModel

__all__ = ["WorldModel"]
