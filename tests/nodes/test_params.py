"""fowm.ros.params.declare_from_dataclass on a real rclpy node."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import pytest
from fowm.ros.params import declare_from_dataclass
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
    # The range keeps guarding later sets (`ros2 param set`).
    result = node.set_parameters([Parameter("cfg.inner.gain", value=3.0)])[0]
    assert not result.successful
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
