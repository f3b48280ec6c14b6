"""Input normalisation of the state (model.state_norm): off in both presets, an option to test."""

from __future__ import annotations

import numpy as np
import torch

from fowm_core.config import Modality, cpu
from fowm_core.jobs import cli
from fowm_core.learning.agent import Agent

TINY = """
model: {latent_dim: 8, mlp_dim: 32, enc_dim: 32}
planner: {iterations: 2, num_samples: 24, num_elites: 6}
learner: {batch_size: 16}
schedule: {offline_steps: 20}
"""


def _tiny_agent() -> Agent:
    cfg = cpu("push", Modality.STATE, state_dim=16)
    cfg = cfg.with_overrides({"model": {"latent_dim": 8, "mlp_dim": 32, "enc_dim": 32}})
    return Agent.create(cfg, seed=0)

def test_state_norm_is_off_in_the_presets_and_adds_nothing_there() -> None:
    from fowm_core.config import paper

    for cfg in (paper("push", Modality.STATE, 16), cpu("push", Modality.STATE, 16)):
        assert cfg.model.state_norm is False
    agent = _tiny_agent()
    assert not any("state_mean" in k for k in agent.model.state_dict())


def test_state_norm_standardises_before_the_encoder(one_thread) -> None:
    plain = _tiny_agent()
    cfg = plain.cfg.with_overrides({"model": {"state_norm": True}})
    normed = Agent.create(cfg, seed=0)
    normed.model.load_state_dict({**plain.model.state_dict(),
                                  "state_mean": normed.model.state_mean,
                                  "state_std": normed.model.state_std})
    x = torch.randn(4, 16)
    # Identity until the statistics are set.
    torch.testing.assert_close(normed.model.encode({"state": x}), plain.model.encode({"state": x}))
    mean, std = torch.randn(16), torch.rand(16) + 0.5
    normed.model.set_state_stats(mean, std)
    torch.testing.assert_close(normed.model.encode({"state": x}),
                               plain.model.encode({"state": (x - mean) / std}))


def test_pretrain_fits_the_state_statistics_and_the_checkpoint_keeps_them(tmp_path,
                                                                         one_thread) -> None:
    from fowm_core.data import bags
    from fowm_core.jobs import workflows

    data = tmp_path / "data"
    assert cli.main(["collect", "--task", "push", "--episodes", "2", "--out", str(data)]) == 0
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(TINY.replace("enc_dim: 32}", "enc_dim: 32, state_norm: true}"))
    assert cli.main(["pretrain", "--task", "push", "--data", str(data), "--config",
                     str(cfg_file), "--out", str(tmp_path / "pre")]) == 0
    states = np.concatenate([e.obs["state"] for e in bags.read_dataset(
        data, task="push", obs_mode="state").episodes])
    agent = workflows.load(tmp_path / "pre" / "checkpoints" / "offline.safetensors")
    assert agent.cfg.model.state_norm
    for model in (agent.model, agent.learner.target):
        np.testing.assert_allclose(model.state_mean.numpy(), states.mean(0), atol=1e-5)
        np.testing.assert_allclose(model.state_std.numpy(),
                                   np.maximum(states.std(0), 1e-2), rtol=1e-4)
