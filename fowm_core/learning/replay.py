"""Episode storage with prioritized replay, and balanced offline/online batches
(docs/algorithm.md §3.1, §6).

Layout: a ring of ``capacity`` transition slots. Slot j holds o_j, a_j, r_j, mask_j, done_j and
its PER priority. Observations are stored once: the next observation of slot j is o_{j+1} (the next
slot) unless j ends its episode (done), in which case it is that episode's final observation o_T,
kept in a small side store addressed by pointer (one entry per live episode). So an episode of T
steps costs T observation slots plus one, not 2T as in the reference's obs/next_obs arrays.

Windows: a sample is H consecutive steps from a start slot i. The reference reads i..i+H-1 blindly
and relies on the done flags to mask whatever lies past the episode end. Here the window stops
advancing at the first done (later steps repeat the boundary step), so it never reads another
episode or an unwritten slot; the learner's loss mask (w_t = w_{t-1}(1 - d_{t-1})) zeros those steps
exactly as it zeros the reference's garbage.

Deviation (improvement): the reference truncates an episode that does not fit before the end of its
array; this ring wraps it instead, so no transition is dropped. With 25-step episodes and a 10k
capacity both behave the same.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from fowm_core.config import FowmConfig, ModelConfig, ReplayConfig
from fowm_core.data.episode import Episode
from fowm_core.errors import FowmError

ObsSpec = dict[str, tuple[tuple[int, ...], np.dtype]]

PRIORITY_EPS = 1e-6          # added to every written priority, as the reference does
# |a| limit for dataset actions when is_data_clip (docs/algorithm.md §5.1).
DATA_CLIP = 1.0 - 1e-5


class Source(enum.IntEnum):
    """Which buffer a batch row came from, so priority updates go back to the right PER."""

    OFFLINE = 0
    ONLINE = 1


class PrioritySink(Protocol):
    def write_priorities(self, batch: Batch, priorities: np.ndarray) -> None: ...


@dataclass
class Batch:
    """H-step windows for B start slots, as torch tensors (CPU until ``to``).

    rgb stays uint8 (the encoder divides by 255); the learner applies the random shift.
    """

    obs: dict[str, torch.Tensor]        # key -> (B, ...)
    next_obs: dict[str, torch.Tensor]   # key -> (H, B, ...): o'_{i+t}
    action: torch.Tensor                # (H, B, A)
    reward: torch.Tensor                # (H, B)
    mask: torch.Tensor                  # (H, B): 1 - terminal
    done: torch.Tensor                  # (H, B): 1 on an episode's last step (time limit too)
    weights: torch.Tensor               # (B,): PER importance weights, max 1
    indices: torch.Tensor               # (B,) int64: start slot in its buffer
    source: torch.Tensor                # (B,) int64: Source of each row
    sink: PrioritySink | None = field(default=None, repr=False, compare=False)

    @property
    def batch_size(self) -> int:
        return int(self.weights.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.action.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        def move(x: torch.Tensor) -> torch.Tensor:
            return x.to(device, non_blocking=True)

        return Batch(
            obs={k: move(v) for k, v in self.obs.items()},
            next_obs={k: move(v) for k, v in self.next_obs.items()},
            action=move(self.action), reward=move(self.reward), mask=move(self.mask),
            done=move(self.done), weights=move(self.weights), indices=self.indices,
            source=self.source, sink=self.sink,
        )

    def write_priorities(self, priorities: np.ndarray | torch.Tensor) -> None:
        """Send new per-row priorities back to the buffer(s) the rows came from."""
        if self.sink is None:
            return
        if isinstance(priorities, torch.Tensor):
            priorities = priorities.detach().cpu().numpy()
        self.sink.write_priorities(self, np.asarray(priorities, dtype=np.float64).reshape(-1))


def obs_spec_for(model_cfg: ModelConfig) -> ObsSpec:
    """The stored observation keys for a model: 'state' float32 and/or 'rgb' uint8
    (docs/algorithm.md §2.1)."""
    spec: ObsSpec = {}
    if model_cfg.uses_state:
        spec["state"] = ((model_cfg.state_dim,), np.dtype(np.float32))
    if model_cfg.uses_rgb:
        size = model_cfg.img_size
        spec["rgb"] = ((3 * model_cfg.frame_stack, size, size), np.dtype(np.uint8))
    return spec


class ReplayBuffer:
    """A ring of ``capacity`` transitions with prioritized replay (α, β from ``cfg``)."""

    def __init__(self, capacity: int, horizon: int, cfg: ReplayConfig, obs_spec: ObsSpec,
                 *, action_dim: int | None = None, action_clip: float | None = None) -> None:
        if capacity < 1 or horizon < 1:
            msg = f"replay capacity={capacity}, horizon={horizon}: both must be >= 1"
            raise FowmError(msg)
        self.capacity, self.horizon, self.cfg = capacity, horizon, cfg
        self.obs_spec = {k: (tuple(shape), np.dtype(dt)) for k, (shape, dt) in obs_spec.items()}
        self.action_clip = action_clip
        spec = self.obs_spec.items()
        self._obs = {k: np.zeros((capacity, *shape), dt) for k, (shape, dt) in spec}
        self._final = {k: np.zeros((8, *shape), dt) for k, (shape, dt) in spec}
        self._free_finals: list[int] = list(range(7, -1, -1))
        self._final_ptr = np.full(capacity, -1, np.int64)
        self._action = np.zeros((capacity, action_dim), np.float32) if action_dim else None
        self._reward = np.zeros(capacity, np.float32)
        self._mask = np.zeros(capacity, np.float32)
        self._done = np.zeros(capacity, bool)
        self._priority = np.zeros(capacity, np.float64)
        self._priority_alpha = np.zeros(capacity, np.float64)   # cached p^α
        self._write = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def is_full(self) -> bool:
        return self._size == self.capacity

    @property
    def priorities(self) -> np.ndarray:
        """A copy of the stored transitions' priorities, by slot."""
        return self._priority[: self._size].copy()

    @property
    def max_priority(self) -> float:
        return float(self._priority[: self._size].max()) if self._size else 1.0

    # -- writing ----------------------------------------------------------------------------
    def add_episode(self, episode: Episode) -> None:
        """Append an episode at the current max priority (docs/algorithm.md §3.3), overwriting the
        oldest."""
        steps = len(episode)
        self._check_episode(episode)
        priority = self.max_priority
        slots = (self._write + np.arange(steps)) % self.capacity
        self._release_finals(slots[slots < self._size])
        for key in self.obs_spec:
            self._obs[key][slots] = episode.obs[key][:steps]
        action = episode.action
        if self.action_clip is not None:
            action = np.clip(action, -self.action_clip, self.action_clip)
        self._action[slots] = action
        self._reward[slots] = episode.reward
        # Spec §6/§13.6: mask = 0 only on a true terminal; every episode end is a boundary (done).
        self._mask[slots] = 1.0
        self._mask[slots[-1]] = 0.0 if episode.terminal else 1.0
        self._done[slots] = False
        self._done[slots[-1]] = True
        pointer = self._alloc_final()
        for key in self.obs_spec:
            self._final[key][pointer] = episode.obs[key][steps]
        self._final_ptr[slots[-1]] = pointer
        self._priority[slots] = priority
        self._priority_alpha[slots] = priority ** self.cfg.per_alpha
        self._write = int((self._write + steps) % self.capacity)
        self._size = min(self._size + steps, self.capacity)

    def add_episodes(self, episodes: Sequence[Episode]) -> None:
        for episode in episodes:
            self.add_episode(episode)

    def _check_episode(self, episode: Episode) -> None:
        steps = len(episode)
        if not 1 <= steps <= self.capacity:
            msg = (f"episode of {steps} steps does not fit a replay buffer of capacity "
                   f"{self.capacity}; episodes need 1..capacity steps")
            raise FowmError(msg)
        missing = sorted(set(self.obs_spec) - set(episode.obs))
        if missing:
            msg = (f"episode lacks observation key(s) {missing}; the buffer stores "
                   f"{sorted(self.obs_spec)}; record those keys or build the buffer for the keys "
                   "present")
            raise FowmError(msg)
        for key, (shape, _) in self.obs_spec.items():
            if tuple(episode.obs[key].shape[1:]) != shape:
                msg = (f"episode observation '{key}' has shape {episode.obs[key].shape[1:]}, "
                       f"the buffer expects {shape}")
                raise FowmError(msg)
        if self._action is None:
            self._action = np.zeros((self.capacity, episode.action.shape[1]), np.float32)
        if episode.action.shape[1:] != self._action.shape[1:]:
            msg = (f"episode actions have shape {episode.action.shape[1:]}, "
                   f"the buffer expects {self._action.shape[1:]}")
            raise FowmError(msg)

    def _release_finals(self, overwritten: np.ndarray) -> None:
        pointers = self._final_ptr[overwritten]
        self._free_finals.extend(int(p) for p in pointers[pointers >= 0])
        self._final_ptr[overwritten] = -1

    def _alloc_final(self) -> int:
        if not self._free_finals:   # grow the side store by doubling (one entry per live episode)
            old = len(next(iter(self._final.values())))
            for key, arr in self._final.items():
                self._final[key] = np.concatenate([arr, np.zeros_like(arr)])
            self._free_finals = list(range(2 * old - 1, old - 1, -1))
        return self._free_finals.pop()

    # -- prioritized sampling ---------------------------------------------------------------
    def probabilities(self) -> np.ndarray:
        """P(i) = p_i^α / Σ_j p_j^α over the stored transitions (uniform when per is off)."""
        if not self.cfg.per:
            return np.full(self._size, 1.0 / self._size)
        scaled = self._priority_alpha[: self._size]
        return scaled / scaled.sum()

    def sample_indices(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Start slots and IS weights (N·P(i))^-β / max (docs/algorithm.md §3.1).

        Like the reference, draws with replacement until the ring is full and without replacement
        after (an offline buffer sized to its dataset is full from the start).
        """
        if self._size == 0:
            msg = "cannot sample from an empty replay buffer; add episodes first"
            raise FowmError(msg)
        probs = self.probabilities()
        if not self.is_full:
            idx = rng.choice(self._size, size=n, p=probs if self.cfg.per else None)
        elif n > self._size:
            msg = f"cannot draw {n} distinct transitions from a buffer holding {self._size}"
            raise FowmError(msg)
        elif self.cfg.per:
            # Gumbel top-k: the same law as successive draws ∝ P without replacement.
            keys = np.log(probs) + rng.gumbel(size=self._size)
            idx = np.argpartition(-keys, n - 1)[:n]
        else:
            idx = rng.choice(self._size, size=n, replace=False)
        if not self.cfg.per:
            return idx, np.ones(n, np.float32)
        weights = (self._size * probs[idx]) ** (-self.cfg.per_beta)
        return idx, (weights / weights.max()).astype(np.float32)

    def update_priorities(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        """Write new priorities (+1e-6) for the given slots."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        priorities = np.asarray(priorities, dtype=np.float64).reshape(-1) + PRIORITY_EPS
        if indices.shape != priorities.shape:
            msg = f"got {indices.size} indices but {priorities.size} priorities; pass one per row"
            raise FowmError(msg)
        self._priority[indices] = priorities
        self._priority_alpha[indices] = priorities ** self.cfg.per_alpha

    def write_priorities(self, batch: Batch, priorities: np.ndarray) -> None:
        self.update_priorities(batch.indices.numpy(), priorities)

    # -- windows ----------------------------------------------------------------------------
    def window_slots(self, start: np.ndarray) -> np.ndarray:
        """(H, B) slots i, i+1, ... that stop advancing at the first episode boundary."""
        steps = np.empty((self.horizon, len(start)), np.int64)
        steps[0] = start
        for t in range(1, self.horizon):
            prev = steps[t - 1]
            steps[t] = np.where(self._done[prev], prev, (prev + 1) % self.capacity)
        return steps

    def gather(self, start: np.ndarray) -> dict[str, dict[str, np.ndarray] | np.ndarray]:
        """Numpy arrays of the windows starting at ``start`` (no copies beyond the gathers)."""
        slots = self.window_slots(start)
        done = self._done[slots]
        next_slots = (slots + 1) % self.capacity
        final_rows = self._final_ptr[slots[done]]
        next_obs = {}
        for key, arr in self._obs.items():
            gathered = arr[next_slots]
            gathered[done] = self._final[key][final_rows]
            next_obs[key] = gathered
        return {
            "obs": {key: arr[start] for key, arr in self._obs.items()},
            "next_obs": next_obs,
            "action": self._action[slots], "reward": self._reward[slots],
            "mask": self._mask[slots], "done": done.astype(np.float32),
        }

    def sample(self, n: int, generator: np.random.Generator) -> Batch:
        idx, weights = self.sample_indices(n, generator)
        return _to_batch(self.gather(idx), weights, idx, np.full(n, Source.OFFLINE), self)


class BalancedSampler:
    """Batches of ⌊fraction·B⌋ offline rows and the rest online, each drawn by its own PER
    (docs/algorithm.md §3.1, §6). Before any online episode exists, batches are offline only."""

    def __init__(self, offline: ReplayBuffer, online: ReplayBuffer,
                 offline_fraction: float = 0.5) -> None:
        if not 0 < offline_fraction < 1:
            msg = f"offline_fraction={offline_fraction} must be in (0, 1)"
            raise FowmError(msg)
        if offline.horizon != online.horizon:
            msg = f"offline horizon {offline.horizon} != online horizon {online.horizon}"
            raise FowmError(msg)
        self.offline, self.online, self.offline_fraction = offline, online, offline_fraction

    def sample(self, n: int, generator: np.random.Generator) -> Batch:
        if len(self.online) == 0:
            idx, weights = self.offline.sample_indices(n, generator)
            source = np.full(n, Source.OFFLINE)
            return _to_batch(self.offline.gather(idx), weights, idx, source, self)
        n_off = int(self.offline_fraction * n)
        idx_off, w_off = self.offline.sample_indices(n_off, generator)
        idx_on, w_on = self.online.sample_indices(n - n_off, generator)
        parts = [self.offline.gather(idx_off), self.online.gather(idx_on)]
        source = np.concatenate([np.full(n_off, Source.OFFLINE), np.full(n - n_off, Source.ONLINE)])
        return _to_batch(_concat(parts), np.concatenate([w_off, w_on]),
                         np.concatenate([idx_off, idx_on]), source, self)

    def update_priorities(self, indices: np.ndarray, priorities: np.ndarray,
                          source: np.ndarray) -> None:
        """Route each row's priority to the buffer named by ``source``."""
        source = np.asarray(source).reshape(-1)
        indices = np.asarray(indices).reshape(-1)
        priorities = np.asarray(priorities).reshape(-1)
        for buffer, which in ((self.offline, Source.OFFLINE), (self.online, Source.ONLINE)):
            rows = source == which
            if rows.any():
                buffer.update_priorities(indices[rows], priorities[rows])

    def write_priorities(self, batch: Batch, priorities: np.ndarray) -> None:
        self.update_priorities(batch.indices.numpy(), priorities, batch.source.numpy())


def _concat(parts: list[dict]) -> dict:
    """Join gathered windows along the batch axis (axis 0 for obs, 1 for (H, B, ...) arrays)."""
    out: dict = {"obs": {}, "next_obs": {}}
    for key in parts[0]["obs"]:
        out["obs"][key] = np.concatenate([p["obs"][key] for p in parts], axis=0)
        out["next_obs"][key] = np.concatenate([p["next_obs"][key] for p in parts], axis=1)
    for key in ("action", "reward", "mask", "done"):
        out[key] = np.concatenate([p[key] for p in parts], axis=1)
    return out


def _to_batch(data: dict, weights: np.ndarray, idx: np.ndarray, source: np.ndarray,
              sink: PrioritySink) -> Batch:
    tensor = torch.from_numpy
    return Batch(
        obs={k: tensor(v) for k, v in data["obs"].items()},
        next_obs={k: tensor(v) for k, v in data["next_obs"].items()},
        action=tensor(data["action"]), reward=tensor(data["reward"]), mask=tensor(data["mask"]),
        done=tensor(data["done"]), weights=tensor(np.asarray(weights, np.float32)),
        indices=tensor(np.asarray(idx, np.int64)), source=tensor(np.asarray(source, np.int64)),
        sink=sink,
    )


# -- the two buffers of the offline→online procedure (docs/algorithm.md §6) -----------------------
def offline_buffer(episodes: Sequence[Episode], cfg: FowmConfig,
                   obs_spec: ObsSpec | None = None) -> ReplayBuffer:
    """The dataset buffer: capacity max(|D|, online capacity); dataset actions clipped to
    ±(1 - 1e-5) when learner.is_data_clip (docs/algorithm.md §5.1)."""
    size = sum(len(ep) for ep in episodes)
    buffer = ReplayBuffer(
        max(size, cfg.replay.online_capacity), cfg.horizon, cfg.replay,
        obs_spec if obs_spec is not None else obs_spec_for(cfg.model),
        action_dim=cfg.model.action_dim,
        action_clip=DATA_CLIP if cfg.learner.is_data_clip else None,
    )
    buffer.add_episodes(episodes)
    return buffer


def online_buffer(cfg: FowmConfig, obs_spec: ObsSpec | None = None) -> ReplayBuffer:
    """The buffer of the agent's own episodes; its actions are stored as executed."""
    return ReplayBuffer(cfg.replay.online_capacity, cfg.horizon, cfg.replay,
                        obs_spec if obs_spec is not None else obs_spec_for(cfg.model),
                        action_dim=cfg.model.action_dim)
