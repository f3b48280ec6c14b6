"""Any torch device (issue 12): device spellings, device-independent checkpoints, the planner's
device handling and its CUDA-graph plumbing. Everything parameterised by device runs on "cpu"
here (and on "cuda" too where torch sees a GPU); the graph plumbing runs on the CPU through
``EagerBackend``, which replays a 'captured' decision by running it again."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from test_bench import tiny_cfg

from fowm_core.config import Modality
from fowm_core.errors import ConfigError
from fowm_core.jobs import cli
from fowm_core.learning import agent as agents
from fowm_core.learning.checkpoint_file import read_checkpoint
from fowm_core.model.device import cuda_count, generator_for, resolve_device
from fowm_core.planner import cuda_graph
from fowm_core.planner.mppi import Planner

DEVICES = ["cpu"] + (["cuda"] if cuda_count() else [])


def test_device_spellings_resolve_and_bad_ones_say_what_is_allowed() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    expected_auto = torch.device("cuda", 0) if cuda_count() else torch.device("cpu")
    assert resolve_device("auto") == expected_auto
    assert resolve_device(None) == expected_auto
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "mps", "cuda:-1"):
        with pytest.raises(ConfigError, match=r"auto \| cpu \| cuda \| cuda:N"):
            resolve_device(bad)


@pytest.mark.skipif(cuda_count() > 0, reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    for spec in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device(spec)


def test_cli_bench_on_a_missing_device_exits_with_the_message(capsys) -> None:
    if cuda_count():
        pytest.skip("a GPU is present: cuda:99 is the missing device here")
    assert cli.main(["bench", "update", "--preset", "cpu", "--obs", "state", "--repeats", "1",
                     "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("device", DEVICES)
def test_agent_trained_on_a_device_loads_on_cpu_bit_identically(device: str, tmp_path) -> None:
    cfg = tiny_cfg(modality=Modality.ALL)
    agent = agents.Agent.create(cfg, seed=3, device=device)
    assert agent.device.type == device
    assert next(agent.model.parameters()).device.type == device
    from fowm_core.jobs.bench import random_batch

    batch = random_batch(cfg, torch.Generator().manual_seed(0))
    for _ in range(2):
        agent.learner.update(batch)
    info = agents.save(agent, tmp_path / "a.safetensors", {"loss": 1.0})
    tensors, _ = read_checkpoint(info.path)
    assert all(t.device.type == "cpu" for t in tensors.values())
    loaded = agents.load(info.path, seed=3, device="cpu")
    trained = {k: v.cpu() for k, v in agent.model.state_dict().items()}
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(value, trained[name]), name
    assert loaded.learner.step == agent.learner.step
    # The restored Adam continues where it stopped: same moments, on the new device.
    for group in ("model", "pi"):
        saved = agent.learner.optimizers[group].state_dict()["state"]
        again = loaded.learner.optimizers[group].state_dict()["state"]
        for index, entry in saved.items():
            assert torch.equal(entry["exp_avg"].cpu(), again[index]["exp_avg"])


def test_initial_weights_do_not_depend_on_the_device() -> None:
    cfg = tiny_cfg()
    a = agents.Agent.create(cfg, seed=5, device="cpu").model.state_dict()
    b = agents.Agent.create(cfg, seed=5, device=DEVICES[-1]).model.state_dict()
    assert all(torch.equal(a[k], b[k].cpu()) for k in a)


@pytest.mark.parametrize("device", DEVICES)
def test_planner_runs_where_the_model_is(device: str) -> None:
    cfg = tiny_cfg(modality=Modality.ALL)
    agent = agents.Agent.create(cfg, seed=0, device=device)
    obs = {"state": np.zeros(3, np.float32),
           "rgb": np.zeros((3, cfg.model.img_size, cfg.model.img_size), np.uint8)}
    result = agent.planner.plan(obs, t0=True, eval_mode=False)
    assert result.action.shape == (cfg.model.action_dim,)
    assert np.isfinite(result.action).all() and np.isfinite(result.uncertainty)
    assert agent.planner.last_elites is not None
    assert agent.planner.last_elites.device.type == device


def test_cpu_planner_keeps_the_fused_scorer_and_takes_no_graph() -> None:
    from fowm_core.planner.scoring import FusedScorer

    planner = agents.Agent.create(tiny_cfg(), seed=0).planner
    assert isinstance(planner.scorer, FusedScorer)
    assert planner.graphs is None
    assert not cuda_graph.graph_supported(torch.device("cpu"))


def test_planner_refuses_a_generator_on_another_device() -> None:
    model = agents.Agent.create(tiny_cfg(), seed=0).model
    elsewhere = types.SimpleNamespace(device=torch.device("cuda", 0))
    with pytest.raises(ConfigError, match="generator is on cuda:0 but the model is on cpu"):
        Planner(model, tiny_cfg(), elsewhere)     # type: ignore[arg-type]


def _plans(planner: Planner, n: int, eval_mode: bool) -> list:
    obs = {"state": np.linspace(-0.3, 0.3, 3).astype(np.float32)}
    return [planner.plan(obs, t0=t == 0, eval_mode=eval_mode) for t in range(n)]


def _graphed(seed: int, backend: cuda_graph.GraphBackend) -> Planner:
    cfg = tiny_cfg()
    model = agents.Agent.create(cfg, seed=1).model
    planner = Planner(model, cfg, generator_for(torch.device("cpu"), seed), fast=False)
    planner.graphs = cuda_graph.GraphedDecision(planner.decide, cfg.model.latent_dim,
                                                cfg.horizon, cfg.model.action_dim,
                                                torch.device("cpu"), planner.generator,
                                                backend=backend)
    return planner


@pytest.mark.parametrize("eval_mode", [True, False])
def test_replayed_decisions_equal_eager_ones_draw_for_draw(eval_mode: bool) -> None:
    """The graph body (Planner.decide) with static inputs, warm-up runs undone by restoring the
    generator: every replayed decision equals the eager planner's with the same seed."""
    cfg = tiny_cfg()
    eager = Planner(agents.Agent.create(cfg, seed=1).model, cfg,
                    generator_for(torch.device("cpu"), 7), fast=False)
    graphed = _graphed(7, cuda_graph.EagerBackend())
    for a, b in zip(_plans(eager, 4, eval_mode), _plans(graphed, 4, eval_mode), strict=True):
        np.testing.assert_array_equal(a.action, b.action)
        np.testing.assert_array_equal(a.mean, b.mean)
        np.testing.assert_array_equal(a.std, b.std)
        assert (a.value, a.uncertainty) == (b.value, b.uncertainty)
    assert list(graphed.graphs.graphs) == [eval_mode]       # one capture per eval_mode
    # What the planner keeps outlives the next replay (a copy, not the static output).
    kept = graphed.last_elites.clone()
    _plans(graphed, 1, eval_mode)
    assert not torch.equal(kept, graphed.last_elites) or kept.numel() == 0


class _FailingBackend(cuda_graph.EagerBackend):
    def capture(self, graph, fn):
        msg = "operation not permitted when stream is capturing"
        raise RuntimeError(msg)


def test_a_failed_capture_falls_back_to_eager_with_the_reason() -> None:
    cfg = tiny_cfg()
    eager = Planner(agents.Agent.create(cfg, seed=1).model, cfg,
                    generator_for(torch.device("cpu"), 7), fast=False)
    graphed = _graphed(7, _FailingBackend())
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed"):
        results = _plans(graphed, 3, eval_mode=True)
    assert graphed.graphs is None
    assert "stream is capturing" in graphed.graph_error
    for a, b in zip(_plans(eager, 3, eval_mode=True), results, strict=True):
        np.testing.assert_array_equal(a.action, b.action)


def test_cuda_backend_builds_without_touching_a_gpu() -> None:
    """Construction only: the capture itself needs a GPU (benchmarks/gpu_check.sh)."""
    cfg = tiny_cfg()
    planner = Planner(agents.Agent.create(cfg, seed=1).model, cfg, fast=False)
    graphed = cuda_graph.GraphedDecision(planner.decide, cfg.model.latent_dim, cfg.horizon,
                                         cfg.model.action_dim, torch.device("cpu"), None)
    assert isinstance(graphed.backend, cuda_graph.CudaBackend)
    assert graphed.static_z.shape == (1, cfg.model.latent_dim)
    assert graphed.static_mean.shape == (cfg.horizon, cfg.model.action_dim)
    assert graphed.graphs == {} and graphed.error == ""


def test_experiment_passes_the_device_to_training_jobs_only_when_not_cpu(tmp_path) -> None:
    from fowm_core.jobs import experiment

    parser = cli.build_parser({})
    args = parser.parse_args(["experiment", "--tasks", "reach", "--seeds", "0", "--lams", "1",
                              "--work", str(tmp_path), "--device", "cuda:1"])
    jobs = {j.name: j.argv for j in experiment.plan_jobs(args)}
    assert "--device" not in jobs["collect/reach"]
    for name in ("pretrain/reach/0", "finetune/reach/0/1"):
        argv = jobs[name]
        assert argv[argv.index("--device") + 1] == "cuda:1"
    args = parser.parse_args(["experiment", "--tasks", "reach", "--work", str(tmp_path)])
    assert all("--device" not in j.argv for j in experiment.plan_jobs(args))


def test_gpu_check_script_stops_with_a_clear_message_without_cuda(tmp_path) -> None:
    import subprocess
    from pathlib import Path

    if cuda_count():
        pytest.skip("a GPU is present: the script would measure it")
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(["bash", str(root / "benchmarks" / "gpu_check.sh"), str(tmp_path / "o")],
                         cwd=root, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 3
    assert "no CUDA device" in run.stderr
    assert not (tmp_path / "o").exists()
