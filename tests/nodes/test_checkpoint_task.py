"""One owner for task and observation mode: the twin and the episode manager take them from the
planner's checkpoint (fowm.ros.checkpoint_task) and refuse a contradiction at start."""

from __future__ import annotations

from pathlib import Path

import pytest
from fowm.nodes.episode_manager import EpisodeManagerNode
from fowm.nodes.sim_node import SimNode
from fowm.ros import checkpoint_task
from helpers.stack import tiny_checkpoint
from rclpy.parameter import Parameter

from fowm_core.errors import ConfigError


def _make(cls: type, **params: object) -> object:
    return cls(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


@pytest.fixture
def push_state(tmp_path: Path) -> str:
    return str(tiny_checkpoint(tmp_path / "push.safetensors", task="push", modality="state"))


def test_sidecar_gives_task_and_obs_mode(push_state: str) -> None:
    assert checkpoint_task.checkpoint_values(push_state) == {"task": "push", "obs_mode": "state"}


def test_omitted_task_and_obs_mode_are_taken_from_the_checkpoint(
        ros: None, push_state: str) -> None:
    sim = _make(SimNode, checkpoint=push_state)
    manager = _make(EpisodeManagerNode, checkpoint=push_state)
    try:
        assert (sim.params.task, sim.params.obs_mode) == ("push", "state")
        assert manager.params.task == "push" and manager.tracker.task == "push"
        assert "object_pose" in manager.streams             # push scores the object: its stream
    finally:
        sim.destroy_node()
        manager.destroy_node()


def test_a_value_equal_to_the_checkpoints_is_accepted(ros: None, push_state: str) -> None:
    sim = _make(SimNode, checkpoint=push_state, task="push", obs_mode="state")
    try:
        assert sim.params.task == "push"
    finally:
        sim.destroy_node()


@pytest.mark.parametrize(("cls", "params", "seen", "saved"), [
    (SimNode, {"task": "lift"}, "task='lift'", "'push'"),
    (SimNode, {"obs_mode": "all"}, "obs_mode='all'", "'state'"),
    (EpisodeManagerNode, {"task": "reach"}, "task='reach'", "'push'"),
])
def test_a_contradiction_is_refused_at_start_naming_both_values(
        ros: None, push_state: str, cls: type, params: dict[str, str], seen: str,
        saved: str) -> None:
    with pytest.raises(ConfigError, match="contradicts") as err:
        _make(cls, checkpoint=push_state, **params)
    assert seen in str(err.value) and saved in str(err.value) and push_state in str(err.value)


@pytest.mark.parametrize("cls", [SimNode, EpisodeManagerNode])
def test_no_checkpoint_and_no_task_is_refused(ros: None, cls: type) -> None:
    with pytest.raises(ConfigError, match=r"task.* is empty and no checkpoint is set"):
        _make(cls)


def test_an_unreadable_checkpoint_is_named(ros: None, tmp_path: Path) -> None:
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(ConfigError, match=f"checkpoint {missing}"):
        _make(EpisodeManagerNode, checkpoint=str(missing))
