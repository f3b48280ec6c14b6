"""Declare ROS parameters from a config dataclass, so each default exists once
(docs/contributing.md).

Every field of the dataclass becomes a parameter ``<prefix>.<field>`` with the field's default.
Field metadata (plain keys, so fowm_core needs no ROS import) adds the descriptor:
``{"description": str, "range": (lo, hi)}``; a range becomes a FloatingPointRange/IntegerRange, so
``ros2 param set`` refuses out-of-range values too. Nested dataclasses become dotted names
(``limits.max_step_m``), tuples/lists become arrays, enums become strings. Values the dataclass
itself rejects (its ``__post_init__``) and values out of range both stop the node at startup with a
ConfigError that names the parameter, the value and what is allowed.

Parameters are read once, so every one is declared read-only (``ros2 param set`` is refused)
unless it is named in ``live``: a node that lets a parameter change at run time must apply it,
and does so through ``watch_live`` (the changed fields rebuilt into a new dataclass instance,
checked by the dataclass and the node's own rule, then installed), never by re-reading it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
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


def _descriptor(name: str, f: dataclasses.Field, default: Any, live: bool) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(name=name, description=f.metadata.get("description", ""),
                                     read_only=not live)
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


def _declare_one(node: Node, name: str, f: dataclasses.Field, default: Any, live: bool) -> Any:
    descriptor = _descriptor(name, f, default, live)
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


def declare_from_dataclass(node: Node, prefix: str, cls: type[T],
                           live: Collection[str] | bool = ()) -> T:
    """Declare one parameter per field of ``cls`` under ``prefix`` and build the instance.

    Args:
        node: the node that owns the parameters.
        prefix: dotted prefix ("" for none), e.g. "limits" gives ``limits.max_step_m``.
        cls: a dataclass whose fields all have defaults.
        live: field names (of ``cls``) that may change at run time, or True for all of them;
            every other field is read-only. A live field needs a ``watch_live`` that applies it.

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
            values[f.name] = _declare_one(node, name, f, default,
                                          live is True or f.name in (live or ()))
    try:
        return cls(**values)
    except (ConfigError, ValueError, TypeError) as err:
        where = f"parameters under '{prefix}'" if prefix else "parameters"
        msg = f"node {node.get_name()}: {where} rejected by {cls.__name__}: {err}"
        raise ConfigError(msg) from err


@dataclasses.dataclass
class LiveGroup(Generic[T]):
    """The live parameters under ``prefix`` of one dataclass instance a node uses.

    ``current()`` returns the instance in use; ``check(old, new)`` returns why ``new`` is refused
    (None: accepted); ``apply(new)`` installs it. ``check`` runs before anything is stored, so a
    refused ``ros2 param set`` leaves both the parameter and the node unchanged.
    """

    prefix: str
    current: Callable[[], T]
    apply: Callable[[T], None]
    check: Callable[[T, T], str | None] = lambda old, new: None


def watch_live(node: Node, *groups: LiveGroup[Any]) -> None:
    """Apply ``ros2 param set`` on live parameters (all-or-nothing over one set request)."""

    def on_set(parameters: list[Any]) -> SetParametersResult:
        changes: dict[int, dict[str, Any]] = {}
        for param in parameters:
            for index, group in enumerate(groups):
                field_name = _field_of(group, param.name)
                if field_name is not None:
                    default = getattr(group.current(), field_name)
                    try:
                        value = _from_ros(param.value, default)
                    except ValueError as err:
                        return SetParametersResult(successful=False,
                                                   reason=f"{param.name}={param.value!r}: {err}")
                    changes.setdefault(index, {})[field_name] = value
        built: list[tuple[LiveGroup[Any], Any]] = []
        for index, fields in changes.items():
            group = groups[index]
            old = group.current()
            try:
                new = dataclasses.replace(old, **fields)
            except (ConfigError, ValueError, TypeError) as err:
                return SetParametersResult(successful=False, reason=f"refused: {err}")
            why = group.check(old, new)
            if why is not None:
                return SetParametersResult(successful=False, reason=f"refused: {why}")
            built.append((group, new))
        for group, new in built:
            group.apply(new)
        if built:
            node.get_logger().info(
                "parameters applied: " + ", ".join(f"{p.name}={p.value!r}" for p in parameters))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)


def _field_of(group: LiveGroup[Any], name: str) -> str | None:
    """The dataclass field a parameter name sets, when it belongs to ``group``."""
    if group.prefix:
        if not name.startswith(group.prefix + "."):
            return None
        name = name[len(group.prefix) + 1:]
    names = {f.name for f in dataclasses.fields(group.current())}
    return name if name in names else None


def only_tighter(rules: dict[str, str], what: str, fix: str,
                 unless: Callable[[], bool] = lambda: False) -> Callable[[Any, Any], str | None]:
    """A ``LiveGroup.check`` that refuses loosening a safety limit while ``unless()`` is False.

    ``rules`` maps a field to the direction that is stricter: "lower", "higher" or
    "lower_or_off" (lower, and 0 switches the check off: the loosest value). Tuples compare
    element by element (e.g. a workspace corner).
    """

    def looser(rule: str, old: Any, new: Any) -> bool:
        if isinstance(old, tuple):
            return any(looser(rule, a, b) for a, b in zip(old, new, strict=True))
        if rule == "higher":
            return new < old
        if rule == "lower_or_off":
            return old != 0.0 and (new == 0.0 or new > old)
        return new > old

    def check(old: Any, new: Any) -> str | None:
        if unless():
            return None
        loosened = [n for n, rule in rules.items()
                    if looser(rule, getattr(old, n), getattr(new, n))]
        if not loosened:
            return None
        changes = ", ".join(f"{n}: {getattr(old, n)!r} -> {getattr(new, n)!r}" for n in loosened)
        return f"{changes} loosens a safety limit of {what}; {fix}"

    return check
