"""`fowm experiment`: the job graph, resuming, failures, the results JSON and the docs/results.md
table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fowm_core.jobs import cli, experiment


def study_args(tmp_path: Path, *extra: str):
    return cli.build_parser().parse_args([
        "experiment", "--tasks", "reach,lift", "--seeds", "0,1", "--lams", "1,0",
        "--eval-at", "0,10", "--eval-episodes", "20", "--work", str(tmp_path / "work"),
        "--out", str(tmp_path / "out" / "sim_cpu.json"), *extra])


def test_job_graph_one_pretrain_per_seed_shared_by_both_lambdas(tmp_path: Path) -> None:
    jobs = {j.name: j for j in experiment.plan_jobs(
        study_args(tmp_path, "--offline-steps", "77", "--config", "wide.yaml"))}
    assert len(jobs) == 2 * (1 + 2 * (1 + 2))      # per task: collect, per seed: pretrain + 2 λ
    pre = jobs["pretrain/lift/1"]
    assert pre.after == ["collect/lift"]
    assert pre.argv[pre.argv.index("--steps") + 1] == "77"
    assert pre.argv[pre.argv.index("--threads") + 1] == "1"
    assert pre.argv[pre.argv.index("--config") + 1] == "wide.yaml"
    ckpts = set()
    for lam in ("1", "0"):
        ft = jobs[f"finetune/lift/1/{lam}"]
        assert ft.after == ["pretrain/lift/1"]
        assert ft.argv[ft.argv.index("--lam") + 1] == lam
        ckpts.add(ft.argv[ft.argv.index("--checkpoint") + 1])
    assert ckpts == {str(tmp_path / "work/lift/seed1/pretrain/checkpoints/offline.safetensors")}
    assert all(j.command.startswith("fowm ") for j in jobs.values())
    assert all("--utd" not in j.argv for j in jobs.values())    # the checkpoint's own


def test_utd_reaches_every_finetuning_run_and_nothing_else(tmp_path: Path, capsys) -> None:
    jobs = experiment.plan_jobs(study_args(tmp_path, "--utd", "2"))
    for job in jobs:
        is_finetune = job.name.startswith("finetune/")
        assert ("--utd" in job.argv) == is_finetune
        if is_finetune:
            assert job.argv[job.argv.index("--utd") + 1] == "2"
    with pytest.raises(SystemExit):
        study_args(tmp_path, "--utd", "0")
    assert "--utd: must be 1 or more, got 0" in capsys.readouterr().err


def peak_job(name: str, done: Path, after: list[str] | None = None, size: str = "16"):
    return experiment.Job(name, ["bench", "peak", "--size", size, "--repeats", "1"], done,
                          after=after or [])


@pytest.mark.slow
def test_run_jobs_orders_skips_finished_and_reports_failures(tmp_path: Path, capsys) -> None:
    finished = tmp_path / "finished.json"
    finished.write_text("{}")
    jobs = [peak_job("b", tmp_path / "b.json", after=["a"]), peak_job("a", tmp_path / "a.json"),
            peak_job("skip", finished)]
    experiment.run_jobs(jobs, parallel=2, log_dir=tmp_path / "logs")
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    order = [ln.split("] ", 1)[1].split(":")[0].split(" in ")[0] for ln in lines]
    assert order == ["start a", "done a", "start b", "done b"]
    assert not (tmp_path / "logs" / "skip.log").exists()
    assert '"peak_gflops_per_s"' in (tmp_path / "logs" / "a.log").read_text()
    bad = [experiment.Job("bad", ["bench", "peak", "--size", "nope"], tmp_path / "x.json")]
    with pytest.raises(RuntimeError, match=r"job bad failed .*bad\.log"):
        experiment.run_jobs(bad, parallel=1, log_dir=tmp_path / "logs")


def write_run(work: Path, task: str, seed: int, lam: str, success: list[float]) -> None:
    run = work / task / f"seed{seed}"
    (run / "pretrain").mkdir(parents=True, exist_ok=True)
    (run / "pretrain" / "metrics.json").write_text(json.dumps({"seconds": 60.0}))
    (run / f"lam{lam}").mkdir(parents=True, exist_ok=True)
    evals = {str(n): {"success_rate": s} for n, s in zip((0, 10), success, strict=True)}
    (run / f"lam{lam}" / "metrics.json").write_text(json.dumps({"eval": evals, "seconds": 120.0}))


def test_report_holds_every_seed_and_the_table_says_what_is_missing(tmp_path: Path) -> None:
    args = study_args(tmp_path, "--report-only")
    work = args.work
    write_run(work, "reach", 0, "1", [1.0, 1.0])
    write_run(work, "reach", 1, "1", [0.5, 0.9])
    write_run(work, "reach", 0, "0", [0.4, 0.6])
    summary = experiment.collect_results(args, experiment.plan_jobs(args), wall_s=1.0)
    lam1 = summary["tasks"]["reach"]["lam=1"]
    assert lam1["success_per_seed"] == [[1.0, 1.0], [0.5, 0.9]]
    assert lam1["success_mean"] == [0.75, 0.95]
    assert lam1["seconds_per_seed"] == [180.0, 180.0]
    assert summary["tasks"]["reach"]["lam=0"]["seeds_not_finished"] == [1]
    assert summary["tasks"]["lift"]["lam=1"]["success_mean"] is None
    assert any("finetune" in c and "--lam 0" in c for c in summary["commands"])
    table = experiment.markdown_table(summary).splitlines()
    assert table[0].startswith("| task | λ | seeds done | 0 | 10 |")
    assert "| reach | 1 | 2 of 2 | 75 % | 95 % | 100,100 / 50,90 | 3 |" in table
    assert "| reach | 0 | 1 of 2 | 40 % | 60 % | 40,60 | 3 |" in table
    assert "| lift | 1 | 0 of 2 | — | — | — | — |" in table
    assert (tmp_path / "out" / "sim_cpu_reach.png").exists()


def test_classifier_rewards_reach_pretraining_and_finetuning(tmp_path: Path) -> None:
    jobs = {j.name: j for j in experiment.plan_jobs(study_args(
        tmp_path, "--reward-source", "classifier", "--classifier", "clf/lift"))}
    for name in ("pretrain/lift/0", "finetune/lift/0/1"):
        argv = jobs[name].argv
        assert argv[argv.index("--reward-source") + 1] == "classifier"
        assert argv[argv.index("--classifier") + 1] == "clf/lift"
    collect = jobs["collect/lift"].argv
    assert collect[collect.index("--obs") + 1] == "all"       # the classifier needs images
    plain = {j.name: j for j in experiment.plan_jobs(study_args(tmp_path))}
    assert "--reward-source" not in plain["pretrain/lift/0"].argv      # earlier commands unchanged
    assert plain["collect/lift"].argv[plain["collect/lift"].argv.index("--obs") + 1] == "state"


def test_agent_made_datasets_collect_once_and_train_on_the_chosen_kind(tmp_path: Path) -> None:
    jobs = {j.name: j for j in experiment.plan_jobs(study_args(
        tmp_path, "--dataset-kind", "medium-replay", "--dataset-episodes", "300",
        "--agent-train-episodes", "400"))}
    collect = jobs["collect/lift"]
    assert collect.argv[:3] == ["collect", "--source", "agent"]
    assert collect.argv[collect.argv.index("--train-episodes") + 1] == "400"
    assert collect.argv[collect.argv.index("--episodes") + 1] == "300"
    assert collect.done_file == tmp_path / "work/data/lift/medium/dataset.json"
    for name in ("pretrain/lift/0", "finetune/lift/0/1"):
        argv = jobs[name].argv
        assert argv[argv.index("--data") + 1] == str(tmp_path / "work/data/lift/medium-replay")
    assert jobs["pretrain/lift/0"].done_file == \
        tmp_path / "work/lift/medium-replay/seed0/pretrain/metrics.json"
    # The other kind in the same work directory shares the collection, never the runs.
    medium = {j.name: j for j in experiment.plan_jobs(study_args(
        tmp_path, "--dataset-kind", "medium"))}
    assert medium["collect/lift"].done_file == collect.done_file
    assert medium["finetune/lift/0/1"].done_file == \
        tmp_path / "work/lift/medium/seed0/lam1/metrics.json"
    # The default (scripted) commands are the ones earlier studies recorded.
    scripted = {j.name: j for j in experiment.plan_jobs(study_args(tmp_path))}
    assert scripted["pretrain/lift/0"].done_file == \
        tmp_path / "work/lift/seed0/pretrain/metrics.json"
    assert scripted["collect/lift"].argv[:3] == ["collect", "--task", "lift"]
    assert "--source" not in scripted["collect/lift"].argv
