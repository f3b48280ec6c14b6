"""`fowm collect --source agent` (jobs/agent_data.py), `fowm dataset stats` (jobs/datasets.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fowm_core.data import bags
from fowm_core.data.episode import Episode
from fowm_core.jobs import cli, datasets

TINY = """
model: {latent_dim: 8, mlp_dim: 32, enc_dim: 32}
planner: {iterations: 2, num_samples: 24, num_elites: 6}
learner: {batch_size: 16}
"""


@pytest.fixture(scope="module")
def agent_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("agent")
    cfg_file = root / "tiny.yaml"
    cfg_file.write_text(TINY)
    out = root / "reach"
    assert cli.main(["collect", "--source", "agent", "--task", "reach", "--episodes", "2",
                     "--train-episodes", "5", "--seed-episodes", "2", "--eval-every", "2",
                     "--eval-episodes", "1", "--target-success", "1.01", "--obs", "all",
                     "--config", str(cfg_file), "--out", str(out)]) == 0
    return out


def test_both_datasets_are_episode_bags_with_images(agent_data) -> None:
    replay = bags.read_dataset(agent_data / "medium-replay", task="reach", obs_mode="all",
                               cache=False)
    medium = bags.read_dataset(agent_data / "medium", task="reach", obs_mode="all", cache=False)
    assert not replay.failures and not medium.failures
    assert len(replay.episodes) == 5 and len(medium.episodes) == 2
    ep = replay.episodes[0]
    assert ep.obs["rgb"].shape == (26, 3, 84, 84) and len(ep) == 25
    assert (agent_data / "agent" / "medium.safetensors").is_file()


def test_the_metadata_says_how_each_dataset_was_made(agent_data) -> None:
    replay = json.loads((agent_data / "medium-replay" / "dataset.json").read_text())
    medium = json.loads((agent_data / "medium" / "dataset.json").read_text())
    assert replay["source"] == medium["source"] == "agent"
    assert (replay["kind"], medium["kind"]) == ("medium-replay", "medium")
    # The target (101 %) is never reached: the agent trains all 5 episodes; it is evaluated
    # after episodes 4 (the first multiple of 2 past the 2 random ones); 2·25 seed updates at
    # the end of the random episodes, then 25 after each planner episode.
    assert replay["train_episodes_played"] == 5 and replay["target_reached"] is False
    assert [h["episodes"] for h in replay["eval_history"]] == [4]
    assert replay["updates"] == 2 * 25 + 3 * 25
    assert replay["stats"]["episodes"] == 5 and medium["stats"]["episodes"] == 2
    assert medium["exploration_noise"] is True


def test_dataset_stats_reads_back_what_collect_recorded(agent_data, capsys) -> None:
    capsys.readouterr()
    assert cli.main(["dataset", "stats", str(agent_data / "medium-replay")]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    made = json.loads((agent_data / "medium-replay" / "dataset.json").read_text())
    assert stats["task"] == "reach" and stats["episodes"] == 5 and stats["transitions"] == 125
    assert stats["made"] == made
    assert stats["return"]["mean"] == pytest.approx(made["stats"]["return"]["mean"], abs=1e-4)
    assert stats["success_any"] >= stats["success_final"]   # a final success is one at a step


def test_success_at_any_step_and_at_the_end_differ_as_they_should() -> None:
    """reach succeeds within 5 cm of the goal: an episode that passes the goal and leaves
    counts at any step, not at the end."""
    goal = np.array([1.5, 0.3, 0.6])
    far, near = goal + np.array([0.3, 0, 0]), goal + np.array([0.01, 0, 0])

    def state(eef):
        return np.concatenate([eef, [0.0], goal, goal - eef]).astype(np.float32)

    passes = Episode({"state": np.stack([state(far), state(near), state(far)])},
                     np.zeros((2, 3)), np.array([-1.0, -2.0]), success=False)
    assert datasets.success_any("reach", passes)
    stays = Episode({"state": np.stack([state(far), state(far), state(far)])},
                    np.zeros((2, 3)), np.array([-1.0, -2.0]), success=False)
    assert not datasets.success_any("reach", stays)
    out = datasets.episode_stats("reach", [passes, stays])
    assert out["success_any"] == 0.5 and out["success_final"] == 0.0
    assert out["return"]["mean"] == pytest.approx(-3.0)
    assert out["discounted_return"]["mean"] == pytest.approx(-1.0 - 0.9 * 2.0)
