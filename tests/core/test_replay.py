"""Replay: episode layout, windows, ring wrap, PER and balanced batches
(docs/algorithm.md §3.1, §6).

Every observation/action/reward in these episodes carries a unique id (its value), so a test can
tell exactly which step of which episode a sampled entry came from.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fowm_core.config import FowmConfig, LearnerConfig, ModelConfig, ReplayConfig
from fowm_core.data.episode import Episode
from fowm_core.errors import FowmError
from fowm_core.learning.learner import loss_mask
from fowm_core.learning.replay import (
    DATA_CLIP,
    BalancedSampler,
    ReplayBuffer,
    Source,
    offline_buffer,
    online_buffer,
)

SPEC = {"state": ((2,), np.dtype(np.float32))}
ALPHA, BETA = 0.6, 0.4


def episode(steps: int, first_id: int, terminal: bool = False) -> Episode:
    """Observation k has id first_id + k in every entry; step k's action and reward carry it too."""
    ids = first_id + np.arange(steps + 1, dtype=np.float32)
    return Episode(obs={"state": np.repeat(ids[:, None], 2, axis=1)},
                   action=np.repeat(ids[:steps, None], 2, axis=1) / 1000.0,
                   reward=ids[:steps], terminal=terminal)


def buffer(capacity: int, horizon: int = 5, per: bool = True) -> ReplayBuffer:
    cfg = ReplayConfig(per=per, per_alpha=ALPHA, per_beta=BETA)
    return ReplayBuffer(capacity, horizon, cfg, SPEC, action_dim=2)


def ids(x: np.ndarray) -> np.ndarray:
    return np.asarray(x)[..., 0]


def test_time_limit_end_is_a_boundary_not_a_terminal() -> None:
    buf = buffer(20)
    buf.add_episode(episode(3, 0, terminal=False))     # time-limit truncation
    buf.add_episode(episode(3, 100, terminal=True))    # true terminal
    data = buf.gather(np.arange(6))
    mask, done = data["mask"][0], data["done"][0]
    np.testing.assert_array_equal(done, [0, 0, 1, 0, 0, 1])
    # The truncated episode keeps the bootstrap (mask 1); only the true terminal's last step is 0.
    np.testing.assert_array_equal(mask, [1, 1, 1, 1, 1, 0])


def test_windows_stop_at_the_episode_boundary_and_use_the_final_observation() -> None:
    buf = buffer(20, horizon=5)
    buf.add_episode(episode(3, 0))
    buf.add_episode(episode(3, 100))
    data = buf.gather(np.array([1]))
    assert ids(data["obs"]["state"])[0] == 1
    # o'_{1}=2, o'_{2}=3 (the episode's final observation), then the window repeats the boundary
    # step: nothing of the next episode (ids >= 100) is ever read.
    np.testing.assert_array_equal(ids(data["next_obs"]["state"])[:, 0], [2, 3, 3, 3, 3])
    np.testing.assert_array_equal(data["reward"][:, 0], [1, 2, 2, 2, 2])
    np.testing.assert_array_equal(data["done"][:, 0], [0, 1, 1, 1, 1])
    # ...and the learner's loss mask zeroes every step after the boundary step.
    w = loss_mask(torch.from_numpy(data["done"]))[:, 0]
    np.testing.assert_array_equal(w.numpy(), [1, 1, 0, 0, 0])


def test_window_at_the_write_head_never_reads_unwritten_slots() -> None:
    buf = buffer(50, horizon=5)
    buf.add_episode(episode(4, 10))
    data = buf.gather(np.array([3]))   # last written transition; slots 4.. are unwritten zeros
    np.testing.assert_array_equal(ids(data["next_obs"]["state"])[:, 0], [14] * 5)
    np.testing.assert_array_equal(data["reward"][:, 0], [13] * 5)


def test_ring_wraps_and_keeps_each_transition_paired_with_its_own_next_observation() -> None:
    buf = buffer(10, horizon=3)
    for k in range(3):
        buf.add_episode(episode(4, 100 * k))
    assert len(buf) == 10 and buf.is_full
    data = buf.gather(np.arange(10))
    obs = ids(data["obs"]["state"])
    # Episode 2 wrapped: its steps 2, 3 overwrote slots 0, 1 (episode 0's first two steps).
    np.testing.assert_array_equal(obs, [202, 203, 2, 3, 100, 101, 102, 103, 200, 201])
    nxt = ids(data["next_obs"]["state"])[0]
    np.testing.assert_array_equal(nxt, obs + 1)      # incl. 201→202 across the ring's end
    # Many more wraps with episodes of mixed lengths: every stored step still pairs with its own
    # next observation (final observations are recycled correctly).
    rng = np.random.default_rng(0)
    for k in range(3, 60):
        buf.add_episode(episode(int(rng.integers(1, 6)), 100 * k))
    data = buf.gather(np.arange(10))
    np.testing.assert_array_equal(ids(data["next_obs"]["state"])[0], ids(data["obs"]["state"]) + 1)
    np.testing.assert_array_equal(data["reward"][0], ids(data["obs"]["state"]))


def test_episode_longer_than_capacity_is_refused() -> None:
    with pytest.raises(FowmError, match="does not fit"):
        buffer(5).add_episode(episode(6, 0))


def test_new_episodes_get_the_current_max_priority() -> None:
    buf = buffer(100)
    buf.add_episode(episode(5, 0))
    np.testing.assert_array_equal(buf.priorities, np.ones(5))   # 1.0 in an empty buffer
    buf.update_priorities(np.array([1, 3]), np.array([7.0, 2.0]))
    buf.add_episode(episode(4, 100))
    np.testing.assert_allclose(buf.priorities[5:], 7.0 + 1e-6)
    np.testing.assert_allclose(buf.priorities[[1, 3]], [7.0 + 1e-6, 2.0 + 1e-6])


def test_per_probabilities_follow_p_to_the_alpha_and_is_weights() -> None:
    buf = buffer(1000, horizon=1)
    buf.add_episode(episode(8, 0))
    p = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 0.5, 3.0, 1.0])
    buf.update_priorities(np.arange(8), p)
    expected = (p + 1e-6) ** ALPHA / ((p + 1e-6) ** ALPHA).sum()
    np.testing.assert_allclose(buf.probabilities(), expected, rtol=1e-12)
    assert not np.allclose(expected, p / p.sum(), atol=1e-3)   # α matters
    rng = np.random.default_rng(1)
    batch = buf.sample(20_000, rng)   # not full: with replacement, like the reference
    counts = np.bincount(batch.indices.numpy(), minlength=8) / 20_000
    np.testing.assert_allclose(counts, expected, atol=0.012)
    idx = batch.indices.numpy()
    weights = (8 * expected[idx]) ** -BETA
    np.testing.assert_allclose(batch.weights.numpy(), weights / weights.max(), rtol=1e-5)
    assert batch.weights.max() == 1.0


def test_full_buffer_samples_without_replacement() -> None:
    buf = buffer(12, horizon=2)
    for k in range(3):
        buf.add_episode(episode(4, 100 * k))
    assert buf.is_full
    batch = buf.sample(12, np.random.default_rng(0))
    assert sorted(batch.indices.tolist()) == list(range(12))


def test_uniform_sampling_without_per_has_unit_weights() -> None:
    buf = buffer(100, per=False)
    buf.add_episode(episode(10, 0))
    buf.update_priorities(np.arange(10), np.arange(10.0) * 100)
    batch = buf.sample(5000, np.random.default_rng(0))
    np.testing.assert_array_equal(batch.weights.numpy(), 1.0)
    counts = np.bincount(batch.indices.numpy(), minlength=10) / 5000
    np.testing.assert_allclose(counts, 0.1, atol=0.02)


def test_balanced_batches_are_split_exactly_and_priorities_routed_back() -> None:
    offline, online = buffer(200), buffer(200)
    for k in range(8):
        offline.add_episode(episode(5, 1000 + 100 * k))
    for k in range(4):
        online.add_episode(episode(5, 100 * k))
    sampler = BalancedSampler(offline, online, 0.5)
    rng = np.random.default_rng(0)
    for size in (16, 15, 256):
        batch = sampler.sample(size, rng)
        source = batch.source.numpy()
        assert (source == Source.OFFLINE).sum() == size // 2
        assert (source == Source.ONLINE).sum() == size - size // 2
        obs_id = ids(batch.obs["state"].numpy())
        assert (obs_id[source == Source.OFFLINE] >= 1000).all()
        assert (obs_id[source == Source.ONLINE] < 1000).all()
    batch = sampler.sample(16, rng)
    before_off, before_on = offline.priorities, online.priorities
    new = np.arange(16, dtype=np.float64) + 10.0
    batch.write_priorities(new)
    rows_off = batch.source.numpy() == Source.OFFLINE
    idx = batch.indices.numpy()
    expect_off, expect_on = before_off.copy(), before_on.copy()
    for row in range(16):   # rows in order, so a repeated index keeps its last write
        (expect_off if rows_off[row] else expect_on)[idx[row]] = new[row] + 1e-6
    after_off, after_on = offline.priorities, online.priorities
    np.testing.assert_allclose(after_off, expect_off)
    np.testing.assert_allclose(after_on, expect_on)


def test_empty_online_buffer_gives_offline_only_batches() -> None:
    offline, online = buffer(100), buffer(100)
    offline.add_episode(episode(20, 1000))
    batch = BalancedSampler(offline, online).sample(16, np.random.default_rng(0))
    assert (batch.source.numpy() == Source.OFFLINE).all() and batch.batch_size == 16


def test_dataset_actions_are_clipped_online_actions_are_not() -> None:
    cfg = FowmConfig(model=ModelConfig(modality="state", state_dim=2, action_dim=2),
                     replay=ReplayConfig(online_capacity=30))
    ep = episode(10, 0)
    ep.action[:] = np.array([1.0, -1.0])
    off = offline_buffer([ep] * 5, cfg)
    assert off.capacity == 50                       # max(|D| = 50, online capacity 30)
    clipped = np.float32(DATA_CLIP)
    np.testing.assert_array_equal(off.gather(np.arange(5))["action"][0], [[clipped, -clipped]] * 5)
    on = online_buffer(cfg)
    on.add_episode(ep)
    np.testing.assert_array_equal(on.gather(np.arange(5))["action"][0], [[1.0, -1.0]] * 5)
    no_clip = FowmConfig(model=cfg.model, learner=LearnerConfig(is_data_clip=False))
    raw = offline_buffer([ep], no_clip)
    np.testing.assert_array_equal(raw.gather(np.arange(2))["action"][0], [[1.0, -1.0]] * 2)


def test_batch_layout_with_rgb() -> None:
    spec = {"state": ((4,), np.dtype(np.float32)), "rgb": ((3, 84, 84), np.dtype(np.uint8))}
    buf = ReplayBuffer(300, 5, ReplayConfig(), spec, action_dim=4)
    rng = np.random.default_rng(0)
    for _ in range(10):
        buf.add_episode(Episode(obs={"state": rng.normal(size=(26, 4)),
                                     "rgb": rng.integers(0, 255, (26, 3, 84, 84), dtype=np.uint8)},
                                action=rng.uniform(-1, 1, (25, 4)), reward=rng.normal(size=25)))
    batch = buf.sample(256, rng)
    assert batch.obs["rgb"].shape == (256, 3, 84, 84)
    assert str(batch.obs["rgb"].dtype) == "torch.uint8"
    assert batch.next_obs["rgb"].shape == (5, 256, 3, 84, 84)
    assert batch.next_obs["state"].shape == (5, 256, 4)
    assert batch.action.shape == (5, 256, 4) and batch.reward.shape == (5, 256)
    assert batch.mask.shape == batch.done.shape == (5, 256) and batch.weights.shape == (256,)
