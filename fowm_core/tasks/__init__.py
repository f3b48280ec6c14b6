"""The tasks: one module per task (reach, push, lift), each defining a ``Task``, and this registry.

Everything that depends on the task (config's action size, the state-vector layout, the twin's
scene and initial conditions, the scripted behaviour policy, CLI choices, node parameters) reads
it from here, so adding a task is adding a module with a ``TASK`` and listing it in ``_MODULES``.
Reward, success and state are pure numpy (no mujoco, no torch): bag tools and the learner use them.
"""

from __future__ import annotations

import numpy as np

from fowm_core.errors import ConfigError
from fowm_core.tasks import lift, push, reach
from fowm_core.tasks.base import Spawn, Task, TaskState

__all__ = ["Spawn", "Task", "TaskState", "env_reward", "get", "names", "register", "reward",
           "success"]

_MODULES = (reach, push, lift)
_REGISTRY: dict[str, Task] = {m.TASK.name: m.TASK for m in _MODULES}


def names() -> tuple[str, ...]:
    """The registered task names, in registration order."""
    return tuple(_REGISTRY)


def get(name: str) -> Task:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        msg = f"unknown task {name!r}; expected one of {names()}"
        raise ConfigError(msg) from None


def register(task: Task, *, replace: bool = False) -> Task:
    """Add a task (a plug-in, or a test's); ``replace`` allows redefining a registered name."""
    if not isinstance(task, Task):
        msg = f"register() takes a fowm_core.tasks.Task, got {type(task).__name__}"
        raise ConfigError(msg)
    if task.name in _REGISTRY and not replace:
        msg = f"task {task.name!r} is already registered; pass replace=True to redefine it"
        raise ConfigError(msg)
    _REGISTRY[task.name] = task
    return task


# By-name forms of the Task methods: the signature (task, state, action) of a reward callback.
def env_reward(task: str, state: TaskState, action: np.ndarray) -> float:
    return get(task).env_reward(state, action)


def reward(task: str, state: TaskState, action: np.ndarray, action_repeat: int = 2) -> float:
    return get(task).reward(state, action, action_repeat)


def success(task: str, state: TaskState) -> bool:
    return get(task).success(state)
