"""The cpu preset's pixel encoder and the camera resize (issue 12)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_bench import tiny_cfg

from fowm_core.config import CPU_PIXEL_ENCODER, FowmConfig, Modality, ModelConfig, cpu, paper
from fowm_core.data import convert
from fowm_core.errors import ConfigError
from fowm_core.jobs import bench
from fowm_core.model import WorldModel


def test_paper_keeps_the_reference_encoder_and_cpu_pixels_get_the_light_one() -> None:
    ref = paper(task="reach", modality="all").model
    assert (ref.num_channels, ref.conv_kernels, ref.conv_strides) == (32, (7, 5, 3, 3),
                                                                      (2, 2, 2, 2))
    assert ref.conv_out_size == 3
    for modality in ("rgb", "all"):
        cfg = cpu(task="reach", modality=modality)
        assert cfg.model.conv_kernels == CPU_PIXEL_ENCODER["conv_kernels"]
        assert cfg.model.num_channels == 16 and cfg.learner.batch_size == 64
        assert cfg.model.img_size == 84 and cfg.model.conv_out_size == 7
        assert cfg.schedule.utd == 2               # the pixel lift study's schedule
    state = cpu(task="reach")
    assert (state.model.conv_kernels, state.learner.batch_size) == ((7, 5, 3, 3), 128)
    assert state.schedule.utd == 1 and paper(task="lift", modality="all").schedule.utd == 1


def test_the_encoder_study_changes_the_encoder_only() -> None:
    """config/studies/paper_encoder.yaml, the heavier encoder the pixel study is compared with:
    the paper's conv stack on the cpu pixel preset, every other value (batch included) kept."""
    light = cpu(task="lift", modality="all")
    path = Path(__file__).resolve().parents[2] / "config" / "studies" / "paper_encoder.yaml"
    heavy = FowmConfig.from_yaml(path, base=light)
    ref = paper(task="lift", modality="all").model
    assert (heavy.model.num_channels, heavy.model.conv_kernels, heavy.model.conv_strides) == (
        ref.num_channels, ref.conv_kernels, ref.conv_strides)
    encoder = {"num_channels": ref.num_channels, "conv_kernels": ref.conv_kernels,
               "conv_strides": ref.conv_strides}
    assert heavy == dataclasses.replace(light, model=dataclasses.replace(light.model, **encoder))


def test_encoder_layers_follow_the_config() -> None:
    cfg = cpu(task="reach", modality="all").model
    convs = [m for m in WorldModel(cfg)._encoder["rgb"] if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size[0], c.stride[0]) for c in convs] == [(8, 4), (4, 2), (3, 1)]
    z = WorldModel(cfg).encode({"rgb": torch.zeros(2, 3, 84, 84, dtype=torch.uint8),
                                "state": torch.zeros(2, cfg.state_dim)})
    assert z.shape == (2, cfg.latent_dim)


def test_conv_lists_from_yaml_become_tuples_and_bad_stacks_are_refused() -> None:
    cfg = FowmConfig.from_dict({"model": {"conv_kernels": [8, 4], "conv_strides": [4, 2]}})
    assert cfg.model.conv_kernels == (8, 4) and cfg.model.conv_strides == (4, 2)
    assert FowmConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="one stride per kernel"):
        ModelConfig(conv_kernels=(8, 4), conv_strides=(4,))
    with pytest.raises(ConfigError, match=r"model\.img_size=36"):
        ModelConfig(img_size=36)
    with pytest.raises(ConfigError, match="kernels and strides >= 1"):
        ModelConfig(conv_kernels=(3, 0), conv_strides=(1, 1))


def test_update_flops_count_the_light_encoder() -> None:
    light = cpu(task="reach", modality="all")
    heavy = light.with_overrides({"model": {"num_channels": 32, "conv_kernels": [7, 5, 3, 3],
                                            "conv_strides": [2, 2, 2, 2]}})
    # 84 → 20 → 9 → 7 with 16 channels: 1.2 M + 0.33 M + 0.11 M MACs, plus the linear layer.
    assert bench.encoder_macs(light) - bench.encoder_macs(cpu(task="reach")) == (
        20 * 20 * 16 * 3 * 64 + 9 * 9 * 16 * 16 * 16 + 7 * 7 * 16 * 16 * 9 + 16 * 49 * 32)
    assert bench.encoder_macs(heavy) > 8 * bench.encoder_macs(light)


def test_bench_update_reports_device_encoder_and_the_same_run_peak() -> None:
    out = bench.bench_update(tiny_cfg(modality=Modality.ALL), repeats=1, peak_size=64)
    assert out["device"] == "cpu" and out["peak_gflops_per_s"] > 0
    assert out["encoder"] == {"channels": 2, "kernels": [7, 5, 3, 3], "strides": [2, 2, 2, 2]}
    assert out["fraction_of_peak"] == pytest.approx(out["gflops_per_s"] / out["peak_gflops_per_s"])


@pytest.mark.parametrize("shape", [(480, 640), (100, 90), (84, 84)])
def test_resize_is_area_averaging_and_the_live_path_equals_the_bag_path(shape) -> None:
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))[None]
    bag = convert.resize_rgb(chw, 84)
    if shape == (84, 84):
        assert bag is chw                        # twin images are not touched
    else:
        expected = cv2.resize(hwc, (84, 84), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
        np.testing.assert_array_equal(bag[0], expected)
    for encoding in ("rgb8", "bgr8"):
        msg = convert.image_msg(hwc, 0)
        msg.encoding = encoding
        live = convert.model_image(msg, 84)
        assert live.shape == (3, 84, 84) and live.flags.c_contiguous
        np.testing.assert_array_equal(live, convert.resize_rgb(convert.image_array(msg)[None],
                                                               84)[0])


def test_resize_of_a_flat_image_keeps_its_value() -> None:
    flat = np.full((2, 3, 480, 640), 77, np.uint8)
    assert np.unique(convert.resize_rgb(flat, 64)).tolist() == [77]
    assert convert.resize_rgb(flat, 64).shape == (2, 3, 64, 64)
