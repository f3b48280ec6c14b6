"""Declare ROS parameters from a config dataclass, so each default exists once
(docs/contributing.md).

Every field of the dataclass becomes a parameter ``<prefix>.<field>`` with the field's default.
Field metadata (plain keys, so fowm_core needs no ROS import) adds the descriptor:
``{"description": str, "range": (lo, hi)}``; a range becomes a FloatingPointRange/IntegerRange, so
``ros2 param set`` refuses out-of-range values too. Nested dataclasses become dotted names
(``limits.max_step_m``), tuples/lists become arrays, enums become strings. Values the dataclass
itself rejects (its ``__post_init__``) and values out of range both stop the node at startup with a
ConfigError that names the parameter, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Any, TypeVar

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

from fowm_core.errors import ConfigError

if TYPE_CHECKING:
    from rclpy.node import Node

T = TypeVar("T")


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    msg = f"dataclass field {f.name!r} has no default; every node parameter needs one"
    raise ConfigError(msg)


def _to_ros(default: Any) -> Any:
    """The value rclpy stores: enums as their value, tuples as lists (arrays)."""
    if isinstance(default, enum.Enum):
        return default.value
    if isinstance(default, tuple | list):
        return [_to_ros(v) for v in default]
    return default


def _from_ros(value: Any, default: Any) -> Any:
    """Back to the dataclass field's kind: enum members, tuples."""
    if isinstance(default, enum.Enum):
        return type(default)(value)
    if isinstance(default, tuple):
        return tuple(value)
    if isinstance(default, list):
        return list(value)
    return value


def _descriptor(name: str, f: dataclasses.Field, default: Any) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(name=name, description=f.metadata.get("description", ""))
    bounds = f.metadata.get("range")
    if bounds is None:
        return descriptor
    lo, hi = bounds
    if isinstance(default, bool) or not isinstance(default, int | float):
        msg = f"parameter {name}: a range is only allowed on int/float fields, not {default!r}"
        raise ConfigError(msg)
    if isinstance(default, int):
        descriptor.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
    else:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return descriptor


def _declare_one(node: Node, name: str, f: dataclasses.Field, default: Any) -> Any:
    descriptor = _descriptor(name, f, default)
    try:
        parameter = node.declare_parameter(name, _to_ros(default), descriptor)
    except InvalidParameterValueException as err:
        msg = (f"node {node.get_name()}: parameter {name} is out of range "
               f"{list(f.metadata.get('range', ()))}: {err}; set a value inside the range in the "
               f"node's YAML or on the command line")
        raise ConfigError(msg) from err
    except InvalidParameterTypeException as err:
        msg = (f"node {node.get_name()}: parameter {name} has the wrong type ({err}); the default "
               f"is {default!r}: write e.g. 1.0 rather than 1 for a float, a list for an array")
        raise ConfigError(msg) from err
    try:
        return _from_ros(parameter.value, default)
    except ValueError as err:
        msg = f"node {node.get_name()}: parameter {name}={parameter.value!r} is invalid: {err}"
        raise ConfigError(msg) from err


def declare_from_dataclass(node: Node, prefix: str, cls: type[T]) -> T:
    """Declare one parameter per field of ``cls`` under ``prefix`` and build the instance.

    Args:
        node: the node that owns the parameters.
        prefix: dotted prefix ("" for none), e.g. "limits" gives ``limits.max_step_m``.
        cls: a dataclass whose fields all have defaults.

    Raises:
        ConfigError: a value is out of its range, of the wrong type, or rejected by the dataclass.
    """
    if not dataclasses.is_dataclass(cls):
        msg = f"declare_from_dataclass needs a dataclass type, got {cls!r}"
        raise ConfigError(msg)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        name = f"{prefix}.{f.name}" if prefix else f.name
        default = _default_of(f)
        if dataclasses.is_dataclass(default):
            values[f.name] = declare_from_dataclass(node, name, type(default))
        else:
            values[f.name] = _declare_one(node, name, f, default)
    try:
        return cls(**values)
    except (ConfigError, ValueError, TypeError) as err:
        where = f"parameters under '{prefix}'" if prefix else "parameters"
        msg = f"node {node.get_name()}: {where} rejected by {cls.__name__}: {err}"
        raise ConfigError(msg) from err
