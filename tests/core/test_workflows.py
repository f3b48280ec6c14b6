"""collect → pretrain → finetune → eval through the `fowm` command on a tiny config."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fowm_core import tasks
from fowm_core.data import bags, convert
from fowm_core.jobs import cli, workflows
from fowm_core.sim import make_env
from fowm_core.sim.scripted import collect_episodes

TINY = """
model: {latent_dim: 8, mlp_dim: 32, enc_dim: 32}
planner: {iterations: 2, num_samples: 24, num_elites: 6}
learner: {batch_size: 16}
schedule: {offline_steps: 30}
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "reach"
    assert cli.main(["collect", "--task", "reach", "--episodes", "4", "--out", str(out)]) == 0
    return out


def test_collected_bags_read_back_as_the_episodes_the_twin_produced(dataset) -> None:
    read = bags.read_dataset(dataset, task="reach", obs_mode="state", cache=False)
    assert not read.failures and len(read.episodes) == 4
    ep = sorted(read.episodes, key=lambda e: e.info["seed"])[0]
    env = make_env("reach")
    obs, _ = env.reset(seed=ep.info["seed"])
    # The bag's state vector is the twin's observation (one layout for live and logged data).
    np.testing.assert_allclose(ep.obs["state"][0], obs["state"], atol=1e-5)
    for t in range(3):
        obs, reward, *_ = env.step(ep.action[t])
        np.testing.assert_allclose(ep.obs["state"][t + 1], obs["state"], atol=1e-5)
        assert ep.reward[t] == pytest.approx(reward, abs=1e-5)
    env.close()


def test_fowm_collect_and_collect_episodes_run_the_same_loop(dataset) -> None:
    """`fowm collect --seed 0` and collect_episodes(seed=0) reset with the same seeds and draw
    the same policy noise: the same episodes, one through bags, one in memory."""
    read = bags.read_dataset(dataset, task="reach", obs_mode="state", cache=False)
    logged = sorted(read.episodes, key=lambda e: e.info["seed"])
    direct = collect_episodes("reach", 4, noise=tasks.get("reach").medium_noise, seed=0,
                              obs_mode="state")
    for bag_ep, ep in zip(logged, direct, strict=True):
        np.testing.assert_allclose(bag_ep.action, ep.action, atol=1e-6)
        np.testing.assert_allclose(bag_ep.obs["state"], ep.obs["state"], atol=1e-5)
        assert bag_ep.success == ep.success


def test_state_layout_agrees_between_twin_and_bag_codec() -> None:
    for task in ("reach", "push", "lift"):
        env = make_env(task)
        obs, _ = env.reset(seed=3)
        s = env.task_state()
        built = convert.build_state(task, "state", s.eef, s.gripper, s.obj, s.goal)
        np.testing.assert_allclose(built, obs["state"], atol=1e-6)
        env.close()


def test_pretrain_finetune_eval_smoke(dataset, tmp_path, capsys) -> None:
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(TINY)
    pre = tmp_path / "pre"
    assert cli.main(["pretrain", "--task", "reach", "--data", str(dataset), "--config",
                     str(cfg_file), "--out", str(pre)]) == 0
    ckpt = pre / "checkpoints" / "offline.safetensors"
    assert ckpt.is_file() and (pre / "metrics.json").is_file()
    assert json.loads((pre / "config.json").read_text())["model"]["mlp_dim"] == 32

    ft = tmp_path / "ft"
    assert cli.main(["finetune", "--checkpoint", str(ckpt), "--data", str(dataset),
                     "--episodes", "2", "--eval-at", "0,2", "--eval-episodes", "2",
                     "--lam", "0", "--utd", "2", "--out", str(ft)]) == 0
    metrics = json.loads((ft / "metrics.json").read_text())
    assert metrics["lam"] == 0 and set(metrics["eval"]) == {"0", "2"}
    assert len(metrics["online"]) == 2
    assert (ft / "success.png").stat().st_size > 1000
    # 2 online episodes of 25 steps, 2 updates per step → 100 more on top of the 30 offline ones.
    agent = workflows.load(ft / "checkpoints" / "final.safetensors")
    assert agent.learner.step == 30 + 100
    assert json.loads((ft / "config.json").read_text())["schedule"]["utd"] == 2

    capsys.readouterr()
    assert cli.main(["eval", "--checkpoint", str(ckpt), "--episodes", "2"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["episodes"] == 2 and 0.0 <= line["success_rate"] <= 1.0


def test_a_config_file_that_is_not_a_mapping_is_a_clear_error(dataset, tmp_path, capsys) -> None:
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    assert cli.main(["pretrain", "--task", "reach", "--data", str(dataset), "--config", str(bad),
                     "--out", str(tmp_path / "pre")]) == 2
    assert "must hold a mapping" in capsys.readouterr().err


def test_bad_checkpoint_is_a_clear_error(tmp_path, capsys) -> None:
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x80\x02not weights")
    assert cli.main(["eval", "--checkpoint", str(bad)]) == 2
    assert "fowm eval: error" in capsys.readouterr().err
