"""The task registry (fowm_core.tasks) is the one source of task facts: config, the state layout,
the twin, the scripted policy and the CLI all read it, so a registered task reaches all of them."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from fowm_core import config, tasks
from fowm_core.data import convert
from fowm_core.errors import ConfigError
from fowm_core.jobs import cli
from fowm_core.sim import make_env, scene
from fowm_core.sim.base import ASSETS
from fowm_core.sim.scripted import ScriptedPolicy
from fowm_core.tasks import Spawn, Task, TaskState

REPO = Path(__file__).resolve().parents[2]


def _poke_reward(state: TaskState, action: np.ndarray) -> float:
    return -float(np.linalg.norm(state.obj - state.eef))


def _poke() -> Task:
    """A made-up task on the lift scene: touch the cube (4-d actions, no goal)."""
    return Task(
        name="poke", action_dim=4, state_keys=("eef", "gripper", "obj"),
        relative_parts=(("obj", "eef"),), reward_needs=("obj",), step_reward=_poke_reward,
        is_success=lambda s: bool(np.linalg.norm(s.obj - s.eef) < 0.02), scene="lift.xml",
        scripted=lambda s: np.array([*np.clip(8.0 * (s.obj - s.eef), -1, 1), -1.0]),
        medium_noise=0.3, object_half_m=0.035, object_start=Spawn((1.505, 0.2), 0.01),
        fixed_gripper=None)


@pytest.fixture
def poke(monkeypatch: pytest.MonkeyPatch) -> Task:
    monkeypatch.setattr(tasks, "_REGISTRY", dict(tasks._REGISTRY))
    return tasks.register(_poke())


def _initial_state(task: Task) -> TaskState:
    init = scene.sample_initial(task.name, np.random.default_rng(0), scene.Workspace())
    return TaskState(init.eef, 0.0, init.obj, init.goal,
                     None if init.obj is None else float(init.obj[2]))


@pytest.mark.parametrize("name", tasks.names())
def test_every_registered_task_has_every_fact(name: str) -> None:
    task = tasks.get(name)
    assert task.name == name and task.action_dim in (3, 4)
    assert Path(ASSETS, task.scene).is_file()
    state = _initial_state(task)
    vec = convert.build_state(name, "state", state.eef, state.gripper, state.obj, state.goal)
    assert vec.shape == (convert.state_dim(name, "state"),)
    assert isinstance(task.reward(state, np.zeros(task.action_dim)), float)
    assert task.success(state) in (True, False)
    assert task.scripted(state).shape == (task.action_dim,)
    assert task.medium_noise > 0
    assert (state.obj is None) != task.has_object
    assert (state.goal is None) == (task.goal_start is None and task.goal_from_object is None)


def test_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown task 'stack'; expected one of \('reach', "):
        tasks.get("stack")
    with pytest.raises(ConfigError, match="unknown task 'stack'"):
        config.cpu("stack")


def test_registering_checks_names_and_facts(poke: Task) -> None:
    with pytest.raises(ConfigError, match="already registered"):
        tasks.register(_poke())
    with pytest.raises(ConfigError, match="action_dim=5"):
        dataclasses.replace(poke, action_dim=5)
    with pytest.raises(ConfigError, match="fixed_gripper"):
        dataclasses.replace(poke, fixed_gripper=1.0)
    with pytest.raises(ConfigError, match="relative_parts"):
        dataclasses.replace(poke, relative_parts=(("goal", "eef"),))
    with pytest.raises(ConfigError, match="object_start"):
        dataclasses.replace(poke, object_start=None)


def test_a_registered_task_reaches_config_state_layout_rewards_and_the_twin(poke: Task) -> None:
    assert tasks.names()[-1] == "poke"
    assert config.cpu("poke").model.action_dim == config.paper("poke").model.action_dim == 4
    assert convert.state_keys("poke", "state") == ("eef", "gripper", "obj")
    assert convert.state_dim("poke", "state") == 10 and convert.state_dim("poke", "all") == 4
    vec = convert.build_state("poke", "state", [1, 2, 3], 0.5, [2, 2, 2])
    assert vec.tolist() == [1, 2, 3, 0.5, 2, 2, 2, 1, 0, -1]
    assert "poke" in convert.state_layout()[0]
    env = make_env("poke", "state", seed=0)
    obs, info = env.reset()
    assert env.action_space.shape == (4,) and obs["state"].shape == (10,)
    assert abs(info["task_state"].obj[0] - 1.505) <= 0.01 + 1e-3
    policy = ScriptedPolicy("poke", rng=np.random.default_rng(0))
    assert policy.noise == 0.3
    _, r, _, _, info = env.step(policy.act(obs))
    assert r == pytest.approx(2 * _poke_reward(info["task_state"], np.zeros(4)))
    env.close()


def _task_arguments(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found = {}
    for name, sub in subs.choices.items():
        for action in sub._actions:
            if action.dest in ("task", "tasks"):
                found[name] = action
    return found


def test_cli_task_choices_are_the_registry() -> None:
    found = _task_arguments(cli.build_parser())
    assert {"collect", "pretrain", "experiment"} <= set(found)
    for name, action in found.items():
        if action.dest == "task":
            assert tuple(action.choices) == tasks.names(), name
    assert found["experiment"].default.split(",") == list(tasks.names())


def test_cli_accepts_a_registered_task(poke: Task) -> None:
    args = cli.build_parser().parse_args(["collect", "--task", "poke", "--out", "x"])
    assert args.task == "poke"


# Literal task lists or per-name branches outside fowm_core/tasks would be second definitions.
_SECOND_DEFINITIONS = re.compile(
    r"""["'](reach|push|lift)["']\s*,\s*["'](reach|push|lift)["']"""
    r"""|task\s*[!=]=\s*["'](reach|push|lift)["']""")


def test_no_task_facts_outside_the_registry() -> None:
    roots = [REPO / "fowm_core", REPO / "ros2_ws" / "src" / "fowm" / "fowm", REPO / "launch"]
    offenders = []
    for root in roots:
        for path in root.rglob("*.py"):
            if (REPO / "fowm_core" / "tasks") in path.parents:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if _SECOND_DEFINITIONS.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, "read these from fowm_core.tasks instead:\n" + "\n".join(offenders)
