"""The fast learner path computes the reference update (docs/algorithm.md §3), only faster
(docs/algorithm.md §9).

A tiny rgb + state model is trained by two learners from the same weights and seeds: ``fast=True``
(integer-crop shift, shared scaled next-observation images, batched reward head, 2-head target Q,
fused Adam) and ``fast=False`` (bilinear shift, per-step reward, all-K target Q, per-tensor Adam).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fowm_core.config import FowmConfig, LearnerConfig, ModelConfig, ReplayConfig
from fowm_core.learning.augment import (
    _crop_gather,
    augment_obs,
    draw_shifts,
    random_crop,
    random_shift_bilinear,
)
from fowm_core.learning.checkpoints import read_agent, restore_learner, save_learner
from fowm_core.learning.learner import FAST, REFERENCE, Learner, keep_freed_heap
from fowm_core.learning.replay import Batch
from fowm_core.model import WorldModel
from fowm_core.model.world_model import random_head_pair

H, B, S, A, IMG = 5, 8, 3, 2, 42


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/core/conftest.py


def rgb_cfg() -> FowmConfig:
    return FowmConfig(
        horizon=H, discount=0.9,
        model=ModelConfig(modality="all", state_dim=S, action_dim=A, latent_dim=8, mlp_dim=32,
                          enc_dim=32, num_channels=8, img_size=IMG, num_q=5),
        learner=LearnerConfig(batch_size=B),
        replay=ReplayConfig(online_capacity=200),
    )


def twin_learners(seed: int = 0) -> tuple[Learner, Learner]:
    """fast and reference learners with identical weights (noised, so no layer is trivially zero)
    and identically seeded generators."""
    cfg = rgb_cfg()
    torch.manual_seed(seed)
    model = WorldModel(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = []
    for fast in (True, False):
        twin = WorldModel(cfg.model)
        twin.load_state_dict(model.state_dict())
        out.append(Learner(twin, cfg, torch.Generator().manual_seed(seed), fast=fast))
    return out[0], out[1]


def rgb_batch(seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    done = torch.zeros(H, B)
    done[2, 1] = 1.0
    mask = 1.0 - done
    return Batch(
        obs={"state": torch.randn(B, S, generator=g),
             "rgb": torch.randint(0, 256, (B, 3, IMG, IMG), generator=g, dtype=torch.uint8)},
        next_obs={"state": torch.randn(H, B, S, generator=g),
                  "rgb": torch.randint(0, 256, (H, B, 3, IMG, IMG), generator=g,
                                       dtype=torch.uint8)},
        action=torch.rand(H, B, A, generator=g) * 2 - 1,
        reward=torch.randn(H, B, generator=g), mask=mask, done=done,
        weights=torch.rand(B, generator=g) * 0.9 + 0.1,
        indices=torch.arange(B), source=torch.zeros(B, dtype=torch.int64),
    )


# -- augmentation ---------------------------------------------------------------------------------
def test_crop_is_the_reference_bilinear_shift_with_the_same_draws() -> None:
    images = torch.randint(0, 256, (64, 3, 84, 84), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    crop = random_crop(images, 4, torch.Generator().manual_seed(1))
    bilinear = random_shift_bilinear(images, 4, torch.Generator().manual_seed(1))
    assert crop.dtype == torch.uint8
    assert crop.is_contiguous(memory_format=torch.channels_last)
    # grid_sample's rounding of the grid coordinates is the only difference (0..255 scale).
    torch.testing.assert_close(crop.float(), bilinear, rtol=0, atol=5e-3)
    shifts = draw_shifts(64, 4, torch.Generator().manual_seed(1)).view(64, 2)
    assert torch.equal(_crop_gather(images, 4, shifts), crop)
    assert len({tuple(s) for s in shifts.tolist()}) > 10


def test_augment_obs_keeps_uint8_and_the_layout_of_a_flattened_batch() -> None:
    batch = rgb_batch(0)
    out = augment_obs(batch.next_obs, 2, torch.Generator().manual_seed(3))
    assert out["rgb"].dtype == torch.uint8 and out["rgb"].shape == batch.next_obs["rgb"].shape
    assert out["state"] is batch.next_obs["state"]
    flat = random_crop(batch.next_obs["rgb"].flatten(0, 1), 2, torch.Generator().manual_seed(3))
    assert torch.equal(out["rgb"].flatten(0, 1), flat)


# -- pieces of the fast path ----------------------------------------------------------------------
def test_scaled_images_are_bit_identical_and_encode_like_the_model() -> None:
    learner, _ = twin_learners()
    obs = augment_obs(rgb_batch(1).obs, 2, torch.Generator().manual_seed(0))
    assert torch.equal(WorldModel.scale_obs(obs)["rgb"], obs["rgb"].float().div(255))
    with torch.no_grad():
        torch.testing.assert_close(learner.model.encode(WorldModel.scale_obs(obs), scaled=True),
                                   learner.model.encode(obs), rtol=0, atol=1e-6)


def test_forward_heads_equals_the_same_heads_of_the_full_ensemble() -> None:
    learner, _ = twin_learners()
    x = torch.randn(4, 7, 8 + A)
    heads = torch.tensor([3, 1])
    with torch.no_grad():
        full = learner.model._qs(x)
        torch.testing.assert_close(learner.model._qs.forward_heads(x, heads), full[heads],
                                   rtol=1e-6, atol=1e-6)


def test_value_target_draws_the_same_pair_and_value_as_the_reference() -> None:
    fast, ref = twin_learners()
    z, a = torch.rand(H, B, 8), torch.rand(H, B, A) * 2 - 1
    for _ in range(4):
        torch.testing.assert_close(fast.value_target(z, a), ref.value_target(z, a),
                                   rtol=1e-6, atol=1e-6)
    assert torch.equal(fast.generator.get_state(), ref.generator.get_state())
    pair = random_head_pair(5, torch.Generator().manual_seed(9))
    assert pair[0] != pair[1]


# -- the whole update -----------------------------------------------------------------------------
def test_fast_losses_and_gradients_equal_the_reference_on_the_same_prepared_batch() -> None:
    fast, ref = twin_learners()
    prepared = fast.prepare(rgb_batch(2))           # one augmentation for both
    ref.generator.set_state(fast.generator.get_state())
    got, want = fast.losses(prepared), ref.losses(prepared)
    for name in ("consistency", "reward", "q", "v", "total", "priority"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-5,
                                   atol=1e-6, msg=name)
    torch.testing.assert_close(got.latents, want.latents, rtol=1e-6, atol=1e-6)
    grads = [torch.autograd.grad(t.weighted, [p for p in m.parameters() if p.requires_grad],
                                 allow_unused=True)
             for t, m in ((got, fast.model), (want, ref.model))]
    names = [n for n, p in fast.model.named_parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads[0])
    for name, g_fast, g_ref in zip(names, *grads, strict=True):
        assert (g_fast is None) == (g_ref is None), name
        if g_fast is not None:
            torch.testing.assert_close(g_fast, g_ref, rtol=1e-4, atol=1e-6, msg=name)


def test_fast_updates_equal_the_reference_updates_without_the_shift() -> None:
    """Three full updates each (both optimiser steps, EMA every 2nd, priorities) with augmentation
    off, so both paths see the same pixels: equal to float rounding."""
    fast, ref = twin_learners()
    fast._pad = ref._pad = 0
    for k in range(3):
        got, want = fast.update(rgb_batch(10 + k)), ref.update(rgb_batch(10 + k))
        assert got.keys() == want.keys()
        for key in got:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-7, err_msg=key)
    assert torch.equal(fast.generator.get_state(), ref.generator.get_state())
    for (name, p), q in zip(fast.model.named_parameters(), ref.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-5, msg=name)
    for p, q in zip(fast.target.parameters(), ref.target.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_fast_updates_track_the_reference_updates_with_the_shift() -> None:
    """With the shift on, the reference's bilinear rounding (≤ 4e-3 of 255) is the only
    difference: metrics agree closely; a weight can differ by Adam's ±lr on a near-zero gradient."""
    fast, ref = twin_learners()
    for k in range(3):
        got, want = fast.update(rgb_batch(10 + k)), ref.update(rgb_batch(10 + k))
        for key in got:
            np.testing.assert_allclose(got[key], want[key], rtol=2e-3, atol=1e-4, err_msg=key)
    assert torch.equal(fast.generator.get_state(), ref.generator.get_state())
    for (name, p), q in zip(fast.model.named_parameters(), ref.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=3 * fast.cfg.learner.lr, msg=name)


def test_optimiser_kind_survives_a_checkpoint_round_trip_between_paths(tmp_path) -> None:
    fast, ref = twin_learners()
    fast.update(rgb_batch(20))
    save_learner(tmp_path / "fast.safetensors", fast, {})
    restore_learner(read_agent(tmp_path / "fast.safetensors"), ref)
    assert (fast.variant, ref.variant) == (FAST, REFERENCE)
    assert ref.optim.param_groups[0]["fused"] in (None, False)
    assert fast.optim.param_groups[0]["fused"] is True
    for p, q in zip(fast.model.parameters(), ref.model.parameters(), strict=True):
        assert torch.equal(p, q)
    ref.update(rgb_batch(21))      # the reference path trains on from a fast checkpoint
    assert ref.step == 2


def test_keep_freed_heap_is_idempotent() -> None:
    assert keep_freed_heap() == keep_freed_heap()
