"""Configuration as plain, frozen data.

One dataclass per concern; ``FowmConfig`` composes them. Defaults are the reference hyperparameters
for the xArm tasks (docs/algorithm.md §5); ``paper()`` returns them, ``cpu()`` a preset sized for a
2-core machine. Configs are never edited after construction: use ``dataclasses.replace`` or
``FowmConfig.with_overrides``. No torch import here.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from fowm_core.errors import ConfigError


class Modality(enum.StrEnum):
    """What the encoder sees: state vector, 84x84 image, or both averaged
    (docs/algorithm.md §2.1 'all')."""

    STATE = "state"
    RGB = "rgb"
    ALL = "all"


def _check(cond: bool, name: str, value: Any, expected: str) -> None:
    if not cond:
        msg = f"{name}={value!r} is invalid: expected {expected}"
        raise ConfigError(msg)


@dataclass(frozen=True)
class ModelConfig:
    """World-model sizes (docs/algorithm.md §2). LeRobot names: enc_dim = state_encoder_hidden_dim,
    num_channels = image_encoder_hidden_dim, num_q = q_ensemble_size."""

    modality: Modality = Modality.ALL
    state_dim: int = 4
    action_dim: int = 4
    latent_dim: int = 50
    mlp_dim: int = 512
    enc_dim: int = 256
    num_q: int = 5
    num_channels: int = 32
    img_size: int = 84
    frame_stack: int = 1
    # The pixel encoder's valid convs, one (kernel, stride) per layer: the reference's four
    # k7/5/3/3 stride-2 layers by default; the cpu preset uses a lighter stack (cpu() below).
    conv_kernels: tuple[int, ...] = (7, 5, 3, 3)
    conv_strides: tuple[int, ...] = (2, 2, 2, 2)
    # Not in the reference (off in both presets): standardise the state vector with the offline
    # dataset's per-dimension mean and std before the state encoder (docs/sim.md, issue 15's
    # candidates for push); pretraining sets the statistics, checkpoints carry them.
    state_norm: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "modality", Modality(self.modality))
        # YAML, JSON and ROS parameters give lists; the config holds tuples (frozen, comparable).
        for name in ("conv_kernels", "conv_strides"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in ("state_dim", "action_dim", "latent_dim", "mlp_dim", "enc_dim", "num_channels"):
            _check(getattr(self, name) >= 1, f"model.{name}", getattr(self, name), ">= 1")
        _check(self.num_q >= 2, "model.num_q", self.num_q, ">= 2 (min of 2 distinct heads)")
        _check(len(self.conv_kernels) == len(self.conv_strides) >= 1, "model.conv_strides",
               self.conv_strides, f"one stride per kernel of {self.conv_kernels}")
        _check(min(self.conv_kernels + self.conv_strides) >= 1, "model.conv_kernels",
               self.conv_kernels, "kernels and strides >= 1")
        _check(self.conv_out_size >= 1, "model.img_size", self.img_size,
               f"large enough for the convs {self.conv_kernels} / strides {self.conv_strides} "
               "(>= 37 for the reference's four stride-2 convs)")
        _check(self.frame_stack >= 1, "model.frame_stack", self.frame_stack, ">= 1")

    @property
    def conv_out_size(self) -> int:
        """Spatial size after the valid convs: 84 → 39 → 18 → 8 → 3 for the reference."""
        size = self.img_size
        for kernel, stride in zip(self.conv_kernels, self.conv_strides, strict=True):
            size = (size - kernel) // stride + 1
        return size

    @property
    def uses_state(self) -> bool:
        return self.modality in (Modality.STATE, Modality.ALL)

    @property
    def uses_rgb(self) -> bool:
        return self.modality in (Modality.RGB, Modality.ALL)


@dataclass(frozen=True)
class PlannerConfig:
    """MPPI with the uncertainty penalty (docs/algorithm.md §4). LeRobot names: iterations =
    cem_iterations, num_samples = n_gaussian_samples, uncertainty_cost =
    uncertainty_regularizer_coeff, temperature = elite_weighting_temperature, momentum =
    gaussian_mean_momentum."""

    mpc: bool = True
    iterations: int = 6
    num_samples: int = 512
    num_elites: int = 50
    mixture_coef: float = 0.1
    min_std: float = 0.05
    max_std: float = 2.0
    temperature: float = 0.5
    momentum: float = 0.1
    uncertainty_cost: float = 1.0
    # How the fast path lays out its work, not what it computes: False runs the stacked blocks one
    # at a time through cache-resident buffers (fastest when the planner has its cores); True runs
    # one bmm per layer over all blocks, with far fewer OpenMP barriers, which stays fast when other
    # busy processes share the cores (docs/results.md "Speed", docs/platform.md §15).
    stacked_blocks: bool = False

    def __post_init__(self) -> None:
        _check(self.iterations >= 1, "planner.iterations", self.iterations, ">= 1")
        _check(self.num_samples >= 1, "planner.num_samples", self.num_samples, ">= 1")
        _check(
            1 <= self.num_elites <= self.num_samples + self.num_pi_trajs,
            "planner.num_elites", self.num_elites, "1..num_samples + pi trajectories",
        )
        _check(0.0 <= self.mixture_coef <= 1.0, "planner.mixture_coef", self.mixture_coef,
               "in [0, 1]")
        _check(0 < self.min_std <= self.max_std, "planner.min_std", self.min_std,
               "0 < min_std <= max_std")
        _check(0.0 <= self.momentum < 1.0, "planner.momentum", self.momentum, "in [0, 1)")
        _check(self.uncertainty_cost >= 0, "planner.uncertainty_cost", self.uncertainty_cost,
               ">= 0")

    @property
    def num_pi_trajs(self) -> int:
        """π rollouts mixed into the candidates: ⌊mixture_coef·num_samples⌋ (51 for the paper)."""
        return int(self.mixture_coef * self.num_samples)


@dataclass(frozen=True)
class LearnerConfig:
    """Losses and optimisation (docs/algorithm.md §3). LeRobot names: a_scaling = advantage_scaling,
    expectile = expectile_weight, rho = temporal_decay_coeff."""

    batch_size: int = 256
    lr: float = 3e-4
    consistency_coef: float = 20.0
    reward_coef: float = 0.5
    value_coef: float = 0.1
    rho: float = 0.5
    expectile: float = 0.9
    a_scaling: float = 3.0
    max_awr_weight: float = 100.0
    grad_clip_norm: float = 10.0
    tau: float = 0.01
    update_freq: int = 2
    is_data_clip: bool = True

    def __post_init__(self) -> None:
        _check(self.batch_size >= 2, "learner.batch_size", self.batch_size, ">= 2")
        _check(self.lr > 0, "learner.lr", self.lr, "> 0")
        _check(0 < self.rho <= 1, "learner.rho", self.rho, "in (0, 1]")
        _check(0 < self.expectile < 1, "learner.expectile", self.expectile, "in (0, 1)")
        _check(0 < self.tau <= 1, "learner.tau", self.tau, "in (0, 1]")
        _check(self.update_freq >= 1, "learner.update_freq", self.update_freq, ">= 1")
        _check(self.grad_clip_norm > 0, "learner.grad_clip_norm", self.grad_clip_norm, "> 0")


@dataclass(frozen=True)
class ReplayConfig:
    """Prioritized replay and balanced offline/online sampling (docs/algorithm.md §3.1, §6).
    offline_fraction is the reference's demo_schedule (0.5 = 50/50 batches)."""

    per: bool = True
    per_alpha: float = 0.6
    per_beta: float = 0.4
    online_capacity: int = 10_000
    offline_fraction: float = 0.5

    def __post_init__(self) -> None:
        _check(0 <= self.per_alpha <= 1, "replay.per_alpha", self.per_alpha, "in [0, 1]")
        _check(0 <= self.per_beta <= 1, "replay.per_beta", self.per_beta, "in [0, 1]")
        _check(self.online_capacity >= 1, "replay.online_capacity", self.online_capacity, ">= 1")
        _check(0 < self.offline_fraction < 1, "replay.offline_fraction", self.offline_fraction,
               "in (0, 1)")


@dataclass(frozen=True)
class ScheduleConfig:
    """Offline→online schedule (docs/algorithm.md §6): gradient steps offline, then one planner
    episode followed by len(episode)·utd balanced updates, repeated."""

    offline_steps: int = 25_000
    online_episodes: int = 1_000
    utd: int = 1
    eval_episodes: int = 20
    seed: int = 1

    def __post_init__(self) -> None:
        _check(self.offline_steps >= 0, "schedule.offline_steps", self.offline_steps, ">= 0")
        _check(self.online_episodes >= 0, "schedule.online_episodes", self.online_episodes, ">= 0")
        _check(self.utd >= 1, "schedule.utd", self.utd, ">= 1")


@dataclass(frozen=True)
class FowmConfig:
    """Everything the algorithm needs; horizon and discount are shared by learner and planner."""

    preset: str = "paper"
    task: str = "lift"
    horizon: int = 5
    discount: float = 0.9
    model: ModelConfig = field(default_factory=ModelConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def __post_init__(self) -> None:
        _check(self.horizon >= 1, "horizon", self.horizon, ">= 1")
        _check(0 < self.discount <= 1, "discount", self.discount, "in (0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FowmConfig:
        return _build(cls, data, "")

    def with_overrides(self, overrides: dict[str, Any]) -> FowmConfig:
        """A new config with nested overrides applied, e.g. {"planner": {"iterations": 1}}."""
        return FowmConfig.from_dict(_deep_merge(self.to_dict(), overrides))

    @classmethod
    def from_yaml(cls, path: str | Path, base: FowmConfig | None = None) -> FowmConfig:
        """Load a YAML file holding a ``preset`` name and overrides of that preset's values; with
        ``base`` (e.g. the preset the command line chose) its overrides apply to ``base`` instead
        and a ``preset`` key in it is ignored."""
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            msg = f"cannot read config {path}: {err}"
            raise ConfigError(msg) from err
        if not isinstance(data, dict):
            msg = f"config {path} must hold a mapping, found {type(data).__name__}"
            raise ConfigError(msg)
        if base is not None:
            return base.with_overrides({k: v for k, v in data.items() if k != "preset"})
        # The preset derives action/state sizes from the task and modality, so build it with them.
        model = data.get("model") if isinstance(data.get("model"), dict) else {}
        kwargs = {k: v for k, v in (("task", data.get("task")),
                                    ("modality", model.get("modality"))) if v is not None}
        base = preset(data.get("preset", "paper"), **kwargs)
        return base.with_overrides(data)


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, enum.Enum):
        return obj.value
    return obj


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        msg = (f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
               f"valid keys here: {', '.join(sorted(known))}")
        raise ConfigError(msg)
    kwargs = {}
    for name, value in data.items():
        ftype = known[name].type
        sub = _NESTED.get(ftype) if isinstance(ftype, str) else None
        if sub is not None:
            if not isinstance(value, dict):
                msg = f"config key {prefix}{name} must be a mapping, found {value!r}"
                raise ConfigError(msg)
            kwargs[name] = _build(sub, value, f"{prefix}{name}.")
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as err:
        msg = f"bad config under '{prefix or '<top>'}': {err}"
        raise ConfigError(msg) from err


_NESTED: dict[str, type] = {
    "ModelConfig": ModelConfig,
    "PlannerConfig": PlannerConfig,
    "LearnerConfig": LearnerConfig,
    "ReplayConfig": ReplayConfig,
    "ScheduleConfig": ScheduleConfig,
}

def _action_dim(task: str) -> int:
    """The task's action size, from the task registry (fowm_core.tasks). Asked at call time:
    config is the bottom layer (it loads with nothing of fowm_core but errors), and the
    registry is the one definition of the task's facts."""
    from fowm_core import tasks

    return tasks.get(task).action_dim


def paper(task: str = "lift", modality: Modality | str = Modality.ALL,
          state_dim: int = 4) -> FowmConfig:
    """The reference xArm hyperparameters (docs/algorithm.md §5): λ=1, 6 iterations, batch 256,
    512 samples."""
    return FowmConfig(
        preset="paper",
        task=task,
        model=ModelConfig(modality=Modality(modality), state_dim=state_dim,
                          action_dim=_action_dim(task)),
    )


def cpu(task: str = "lift", modality: Modality | str = Modality.STATE,
        state_dim: int = 4) -> FowmConfig:
    """A preset sized for a 2-core CPU: same algorithm, narrower networks and a lighter search.

    Every rule of the algorithm is kept (5 Q heads, penalty at every step, balanced batches, PER);
    only sizes shrink. Why these sizes and 8,000 offline updates: docs/results.md "Why the cpu
    preset is sized as it is"; costs per decision and per update: docs/results.md "Speed".

    With images (modality rgb/all) the encoder is lighter than the reference's and the batch is
    64: ``CPU_PIXEL_ENCODER``, chosen by measurement (docs/results.md, "A CPU pixel preset"); and
    each online step buys 2 updates (utd), which took pixel lift from 33 to 63 % after 100 online
    episodes (docs/results.md, "Offline → online from pixels").
    """
    modality = Modality(modality)
    pixels = modality in (Modality.RGB, Modality.ALL)
    return FowmConfig(
        preset="cpu",
        task=task,
        model=ModelConfig(modality=modality, state_dim=state_dim,
                          action_dim=_action_dim(task),
                          latent_dim=32, mlp_dim=128, enc_dim=128,
                          **(CPU_PIXEL_ENCODER if pixels else {})),
        planner=PlannerConfig(iterations=3, num_samples=128, num_elites=16),
        learner=LearnerConfig(batch_size=64 if pixels else 128),
        schedule=ScheduleConfig(offline_steps=8_000, online_episodes=100, utd=2 if pixels else 1),
    )


# The cpu preset's pixel encoder: 16 channels, three valid convs k8/s4, k4/s2, k3/s1 (the Atari
# DQN stack, narrower) on the same 84x84 images: 84 → 20 → 9 → 7, 1.7 M MACs per image against
# the reference's 16 M. Chosen with batch 64 by measuring candidates alternately on 2 cores
# (benchmarks/pixel_candidates.py; numbers in docs/results.md, "A CPU pixel preset").
CPU_PIXEL_ENCODER: dict[str, Any] = {
    "num_channels": 16, "conv_kernels": (8, 4, 3), "conv_strides": (4, 2, 1)}


PRESETS = {"paper": paper, "cpu": cpu}


def preset(name: str, **kwargs: Any) -> FowmConfig:
    try:
        factory = PRESETS[name]
    except KeyError:
        msg = f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}"
        raise ConfigError(msg) from None
    return factory(**kwargs)
