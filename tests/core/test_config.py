"""Config presets carry the reference hyperparameters (docs/algorithm.md §5) and reject bad values
clearly."""

from __future__ import annotations

import dataclasses

import pytest

from fowm_core import config
from fowm_core.errors import ConfigError


def test_paper_preset_matches_reference_hyperparameters() -> None:
    cfg = config.paper()
    p, lrn, rep = cfg.planner, cfg.learner, cfg.replay
    assert (p.iterations, p.num_samples, p.num_elites, p.num_pi_trajs) == (6, 512, 50, 51)
    assert (p.min_std, p.max_std, p.temperature, p.momentum, p.uncertainty_cost) == (
        0.05, 2.0, 0.5, 0.1, 1.0)
    assert (cfg.horizon, cfg.discount) == (5, 0.9)
    assert (lrn.batch_size, lrn.lr, lrn.consistency_coef, lrn.reward_coef, lrn.value_coef) == (
        256, 3e-4, 20.0, 0.5, 0.1)
    assert (lrn.rho, lrn.expectile, lrn.a_scaling, lrn.tau, lrn.update_freq) == (
        0.5, 0.9, 3.0, 0.01, 2)
    assert (rep.per_alpha, rep.per_beta, rep.offline_fraction) == (0.6, 0.4, 0.5)
    assert (cfg.model.latent_dim, cfg.model.mlp_dim, cfg.model.enc_dim, cfg.model.num_q) == (
        50, 512, 256, 5)


def test_cpu_preset_keeps_the_algorithm_rules() -> None:
    cpu, paper = config.cpu(), config.paper()
    assert cpu.model.num_q == paper.model.num_q
    assert cpu.planner.uncertainty_cost == paper.planner.uncertainty_cost
    assert cpu.replay == paper.replay
    assert cpu.horizon == paper.horizon and cpu.discount == paper.discount


def test_round_trip_through_dict_and_yaml(tmp_path) -> None:
    cfg = config.cpu(task="push")
    assert config.FowmConfig.from_dict(cfg.to_dict()) == cfg
    path = tmp_path / "c.yaml"
    path.write_text("preset: cpu\ntask: push\nplanner:\n  iterations: 2\n")
    loaded = config.FowmConfig.from_yaml(path)
    assert loaded.planner.iterations == 2
    expected = dataclasses.replace(cfg, planner=dataclasses.replace(cfg.planner, iterations=2))
    assert loaded == expected


def test_yaml_overrides_apply_to_a_given_base_preset(tmp_path) -> None:
    """`fowm pretrain --preset cpu --task push --config f.yaml`: the command line picks the
    preset, the file only overrides it (its preset key is ignored)."""
    base = config.cpu(task="push")
    path = tmp_path / "c.yaml"
    path.write_text("preset: paper\nplanner:\n  iterations: 2\n")
    loaded = config.FowmConfig.from_yaml(path, base=base)
    assert loaded == dataclasses.replace(base, planner=dataclasses.replace(base.planner,
                                                                           iterations=2))
    path.write_text("[1, 2]\n")
    with pytest.raises(ConfigError, match="must hold a mapping, found list"):
        config.FowmConfig.from_yaml(path, base=base)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"planner": {"iterations": 0}}, "planner.iterations=0"),
        ({"planner": {"itterations": 2}}, "planner.itterations"),
        ({"learner": {"expectile": 1.5}}, "learner.expectile=1.5"),
        ({"replay": {"offline_fraction": 0.0}}, "replay.offline_fraction"),
        ({"model": {"num_q": 1}}, "model.num_q=1"),
        ({"model": {"modality": "depth"}}, "depth"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(overrides, needle) -> None:
    with pytest.raises((ConfigError, ValueError)) as info:
        config.paper().with_overrides(overrides)
    assert needle in str(info.value)


def test_unknown_preset_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="paper, cpu"):
        config.preset("gpu")
