"""Background validation and between-tick swap of planner weights."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.loop import tiny_config, tiny_model_checkpoint

from fowm_core.errors import CheckpointError, FowmError
from fowm_core.learning import checkpoint_file, checkpoints
from fowm_core.model import WorldModel
from fowm_core.planner.mppi import Planner
from fowm_core.runtime import hotswap
from fowm_core.runtime.hotswap import HotSwapper, Weights

torch.set_num_threads(1)


def _running(path: Path) -> tuple[Planner, Weights]:
    cfg = tiny_config()
    model, _ = checkpoints.load_validated_model(path, cfg.model)
    return Planner(model, cfg, torch.Generator().manual_seed(5)), Weights.of_checkpoint(path)


def _obs() -> dict[str, np.ndarray]:
    return {"state": np.linspace(-0.3, 0.3, tiny_config().model.state_dim).astype(np.float32)}


@pytest.fixture
def swapper(tmp_path: Path):
    live = tiny_model_checkpoint(tmp_path / "live.safetensors", seed=0, step=0)
    planner, weights = _running(live)
    logs: list[tuple[str, str]] = []
    sw = HotSwapper(tiny_config(), weights, log=lambda level, text: logs.append((level, text)))
    yield sw, planner, logs
    sw.close()


def test_a_valid_checkpoint_is_swapped_in_between_ticks_with_the_warm_start(
        swapper, tmp_path: Path) -> None:
    sw, planner, logs = swapper
    planner.plan(_obs(), t0=True, eval_mode=True)            # a warm start to carry over
    new = tiny_model_checkpoint(tmp_path / "new.safetensors", seed=1, step=40)
    assert sw.swap(planner) is None                          # nothing ready: tick unchanged
    assert sw.offer(Weights.of_checkpoint(new))
    assert sw.wait_idle()
    cand = sw.swap(planner)
    assert cand is not None and cand.weights.step == 40
    assert cand.weights.sha256 == Weights.of_checkpoint(new).sha256
    assert sw.live == cand.weights and sw.stats.swaps == 1
    assert sw.previous is not None and sw.previous[1] is planner        # kept for rollback
    assert torch.equal(cand.planner._prev_mean, planner._prev_mean)
    assert cand.planner.generator is planner.generator
    result = cand.planner.plan(_obs(), t0=False, eval_mode=True)
    assert np.isfinite(result.action).all()
    assert any("validated" in text for _, text in logs)
    assert not sw.offer(Weights.of_checkpoint(new))          # the live weights are not redone


def test_bad_checkpoints_are_refused_with_a_reason_and_the_live_weights_stay(
        swapper, tmp_path: Path) -> None:
    sw, planner, logs = swapper
    live = sw.live
    # 1. weights that are finite but make the model's outputs overflow to inf
    cfg = tiny_config()
    model = WorldModel(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1e30)
    checkpoints.save_agent(tmp_path / "huge.safetensors", model, cfg, step=1, metrics={})
    # 2. another architecture
    other = tiny_config().with_overrides({"model": {"latent_dim": 12}})
    checkpoints.save_agent(tmp_path / "other.safetensors", WorldModel(other.model), other, step=2,
                           metrics={})
    # 3. a truncated file
    good = tiny_model_checkpoint(tmp_path / "cut.safetensors", seed=3, step=3)
    good.write_bytes(good.read_bytes()[:100])
    # 4. a checkpoint replaced after it was announced (hash mismatch)
    fine = tiny_model_checkpoint(tmp_path / "fine.safetensors", seed=4, step=4)
    cases = [Weights(str(tmp_path / "huge.safetensors"), "", 1),
             Weights(str(tmp_path / "other.safetensors"), "", 2),
             Weights(str(good), "", 3),
             Weights(str(fine), "0" * 64, 4),
             Weights(str(tmp_path / "missing.safetensors"), "", 5)]
    for weights in cases:
        assert sw.offer(weights)
        assert sw.wait_idle()
        assert sw.swap(planner) is None
        assert sw.live == live
    reasons = [why for _, why in sw.stats.refused]
    assert len(reasons) == 5
    assert "non-finite" in reasons[0]
    assert "latent_dim" in reasons[1]
    assert "announced" in reasons[3]
    assert sum(level == "error" for level, _ in logs) == 5


def test_the_newest_offer_wins(swapper, tmp_path: Path) -> None:
    sw, planner, _ = swapper
    paths = [tiny_model_checkpoint(tmp_path / f"c{i}.safetensors", seed=10 + i, step=i)
             for i in range(1, 4)]
    for path in paths:
        sw.offer(Weights.of_checkpoint(path))
    assert sw.wait_idle()
    cand = sw.swap(planner)
    assert cand is not None and cand.weights.step == 3       # no backlog of stale weights
    assert sw.stats.swaps == 1


def test_announcements_parse_and_the_planners_own_live_messages_are_ignored() -> None:
    w = Weights("/x/step_1.safetensors", "ab" * 32, 7)
    assert hotswap.parse_announcement(json.dumps({"path": w.path, "sha256": w.sha256,
                                                  "step": 7})) == w
    assert hotswap.parse_announcement(w.message(live=True)) is None
    assert json.loads(w.message(live=True))["live"] is True
    with pytest.raises(FowmError, match="lacks"):
        hotswap.parse_announcement('{"sha256": "x"}')
    with pytest.raises(FowmError, match="not JSON"):
        hotswap.parse_announcement("step 4")
    with pytest.raises(CheckpointError, match="sidecar"):
        Weights.of_checkpoint("/nonexistent/a.safetensors")


def test_fifos_devices_and_oversize_files_are_refused_unread(swapper, tmp_path: Path) -> None:
    sw, _, logs = swapper
    fifo = tmp_path / "w.fifo"
    os.mkfifo(fifo)                      # opening it for reading would block forever
    for bad in (fifo, Path("/dev/zero")):
        sw.offer(Weights(str(bad), ""))
        assert sw.wait_idle(10.0)
        assert "not a regular file" in sw.stats.refused[-1][1]
    with pytest.raises(CheckpointError, match="expected at most 4 bytes"):
        checkpoint_file.read_regular_file(_write(tmp_path / "big", b"12345"), 4)
    assert checkpoint_file.read_regular_file(_write(tmp_path / "ok", b"1234"), 4) == b"1234"
    assert [level for level, _ in logs] == ["error", "error"]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_the_validator_survives_any_failure_and_a_dead_one_is_restarted(
        swapper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sw, planner, _ = swapper
    real = hotswap.validate
    monkeypatch.setattr(hotswap, "validate", lambda *a: [][1])          # an unexpected bug
    sw.offer(Weights(str(tmp_path / "a.safetensors"), ""))
    assert sw.wait_idle(10.0)
    assert "IndexError" in sw.stats.refused[-1][1] and sw._thread.is_alive()

    def die(*args: object) -> None:
        raise SystemExit                   # escapes every handler: the thread ends
    monkeypatch.setattr(hotswap, "validate", die)
    sw.offer(Weights(str(tmp_path / "b.safetensors"), ""))
    sw._thread.join(10.0)
    assert not sw._thread.is_alive()
    monkeypatch.setattr(hotswap, "validate", real)
    assert sw.ensure_running() and sw.stats.restarts == 1
    assert not sw.ensure_running()                                       # alive: nothing to do
    new = tiny_model_checkpoint(tmp_path / "new.safetensors", seed=3, step=9)
    sw.offer(Weights.of_checkpoint(new))
    assert sw.wait_idle(30.0)
    assert sw.swap(planner) is not None


def test_a_logger_that_raises_does_not_stop_the_validator(tmp_path: Path) -> None:
    live = tiny_model_checkpoint(tmp_path / "live.safetensors", seed=0, step=0)
    planner, weights = _running(live)

    def log(level: str, text: str) -> None:
        raise ValueError("Logger severity cannot be changed between calls.")
    sw = HotSwapper(tiny_config(), weights, log=log)
    try:
        sw.offer(Weights(str(tmp_path / "missing.safetensors"), ""))
        assert sw.wait_idle(10.0) and sw._thread.is_alive()
        sw.offer(Weights.of_checkpoint(tiny_model_checkpoint(tmp_path / "n.safetensors", seed=2)))
        assert sw.wait_idle(30.0) and sw.swap(planner) is not None
    finally:
        sw.close()
