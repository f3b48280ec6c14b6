"""fowm.ros.params.declare_from_dataclass on a real rclpy node."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import pytest
from fowm.ros.params import LiveGroup, declare_from_dataclass, only_tighter, watch_live
from rclpy.node import Node
from rclpy.parameter import Parameter

from fowm_core.errors import ConfigError


class Colour(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Inner:
    gain: float = field(default=0.5, metadata={"description": "a gain", "range": (0.0, 1.0)})
    count: int = field(default=3, metadata={"range": (1, 9)})


@dataclass(frozen=True)
class Outer:
    name: str = "arm"
    colour: Colour = Colour.RED
    box: tuple[float, float] = (0.1, 0.2)
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.box[0] >= self.box[1]:
            msg = f"box={list(self.box)}: expected min < max"
            raise ConfigError(msg)


def make(*params: Parameter) -> Node:
    return Node("params_probe", parameter_overrides=list(params))


def test_defaults_overrides_and_descriptors(ros) -> None:
    node = make(Parameter("cfg.colour", value="blue"), Parameter("cfg.inner.gain", value=0.25),
                Parameter("cfg.box", value=[0.3, 0.4]))
    cfg = declare_from_dataclass(node, "cfg", Outer)
    assert cfg == Outer(colour=Colour.BLUE, box=(0.3, 0.4), inner=Inner(gain=0.25))
    assert isinstance(cfg.colour, Colour) and isinstance(cfg.box, tuple)
    descriptor = node.describe_parameter("cfg.inner.gain")
    assert descriptor.description == "a gain"
    assert descriptor.floating_point_range[0].to_value == 1.0
    assert node.describe_parameter("cfg.inner.count").integer_range[0].to_value == 9
    # Read once, so read-only: `ros2 param set` is refused instead of silently ignored.
    assert node.describe_parameter("cfg.inner.gain").read_only
    result = node.set_parameters([Parameter("cfg.inner.gain", value=0.75)])[0]
    assert not result.successful and "read-only" in result.reason
    node.destroy_node()


@pytest.mark.parametrize(("param", "needle"), [
    (Parameter("cfg.inner.gain", value=2.0), "cfg.inner.gain"),
    (Parameter("cfg.inner.count", value=1.5), "cfg.inner.count"),
    (Parameter("cfg.colour", value="green"), "cfg.colour"),
    (Parameter("cfg.box", value=[0.5, 0.4]), "box=[0.5, 0.4]"),
])
def test_bad_values_raise_config_error_naming_the_parameter(ros, param, needle) -> None:
    node = make(param)
    with pytest.raises(ConfigError) as err:
        declare_from_dataclass(node, "cfg", Outer)
    assert needle in str(err.value)
    assert "params_probe" in str(err.value)
    node.destroy_node()


def test_field_without_default_is_refused(ros) -> None:
    @dataclass
    class NoDefault:
        value: float

    node = make()
    with pytest.raises(ConfigError, match="no default"):
        declare_from_dataclass(node, "", NoDefault)
    node.destroy_node()


@dataclass(frozen=True)
class Limits:
    speed: float = field(default=0.5, metadata={"range": (0.0, 1.0)})
    timeout: float = 0.4
    box_min: tuple[float, float] = (0.0, 0.0)
    label: str = "x"

    def __post_init__(self) -> None:
        if self.timeout <= 0.0:
            msg = f"timeout={self.timeout}: expected > 0"
            raise ConfigError(msg)


def test_live_parameters_are_checked_then_applied_all_or_nothing(ros) -> None:
    node = make()
    state = {"limits": declare_from_dataclass(node, "lim", Limits, live=("speed", "timeout",
                                                                       "box_min")),
             "relaxed": False}
    applied: list[Limits] = []

    def apply(new: Limits) -> None:
        state["limits"] = new
        applied.append(new)

    watch_live(node, LiveGroup("lim", lambda: state["limits"], apply, only_tighter(
        {"speed": "lower", "timeout": "lower", "box_min": "higher"}, "the probe", "restart it",
        unless=lambda: state["relaxed"])))
    assert node.describe_parameter("lim.label").read_only
    assert not node.describe_parameter("lim.speed").read_only

    ok = node.set_parameters_atomically([Parameter("lim.speed", value=0.25),
                                         Parameter("lim.box_min", value=[0.1, 0.0])])
    assert ok.successful and state["limits"] == Limits(speed=0.25, box_min=(0.1, 0.0))
    # Loosening one refuses the whole request: nothing stored, nothing applied.
    refused = node.set_parameters_atomically([Parameter("lim.speed", value=0.1),
                                              Parameter("lim.timeout", value=0.9)])
    assert not refused.successful and "timeout: 0.4 -> 0.9" in refused.reason
    assert "restart it" in refused.reason
    assert node.get_parameter("lim.speed").value == 0.25 and len(applied) == 1
    # The dataclass's own check runs too.
    bad = node.set_parameters([Parameter("lim.timeout", value=0.0)])[0]
    assert not bad.successful and "timeout=0.0" in bad.reason
    # A box corner moving outwards on any axis is a loosening.
    assert not node.set_parameters([Parameter("lim.box_min", value=[0.2, -0.1])])[0].successful
    state["relaxed"] = True                      # e.g. the arm is disarmed: any valid value
    assert node.set_parameters([Parameter("lim.timeout", value=0.9)])[0].successful
    assert state["limits"].timeout == 0.9
    node.destroy_node()


def test_only_tighter_off_means_loosest() -> None:
    check = only_tighter({"max_u": "lower_or_off"}, "p", "fix")

    @dataclass(frozen=True)
    class P:
        max_u: float = 0.0

    assert check(P(0.0), P(0.5)) is None            # off -> on: stricter
    assert check(P(0.5), P(0.2)) is None
    assert check(P(0.5), P(0.0)) is not None        # on -> off: looser
    assert check(P(0.2), P(0.5)) is not None
