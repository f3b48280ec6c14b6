"""`fowm experiment`: the offline→online study of docs/results.md.

For every task: one dataset (scripted "medium" by default; ``--dataset-kind medium`` or
``medium-replay`` trains on what ``collect --source agent`` makes instead); for every seed: one
offline pretraining (λ does not enter training, so both λ runs start from the same checkpoint);
for every λ: the reference online loop with evaluations at the requested episode counts. Each job
is a `fowm` sub-command run in its own process with one torch thread, `--jobs` at a time, and is
skipped when its results exist, so an interrupted study resumes. The commands are written into
the results JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fowm_core.jobs import results


@dataclass
class Job:
    name: str
    argv: list[str]
    done_file: Path
    after: list[str] = field(default_factory=list)
    seconds: float | None = None

    @property
    def command(self) -> str:
        return "fowm " + shlex.join(self.argv)


def plan_jobs(args: argparse.Namespace) -> list[Job]:
    jobs: list[Job] = []
    tasks = [t for t in args.tasks.split(",") if t]
    for task in tasks:
        data = data_dir(args, task)
        # The classifier scores images, so its rewards need them in the dataset whatever the
        # agent observes.
        classified = getattr(args, "reward_source", "true") == "classifier"
        collect_obs = "all" if args.obs in ("rgb", "all") or classified else "state"
        jobs.append(_collect_job(args, task, collect_obs))
        for seed in args.seeds:
            run = run_dir(args, task, seed)
            pre = ["pretrain", "--task", task, "--preset", args.preset, "--obs", args.obs,
                   "--data", str(data), "--seed", str(seed), "--threads", "1",
                   *_device(args), "--out", str(run / "pretrain")]
            if args.offline_steps is not None:
                pre += ["--steps", str(args.offline_steps)]
            if args.config is not None:                          # e.g. other model sizes
                pre += ["--config", str(args.config)]
            pre += _rewards(args)
            jobs.append(Job(f"pretrain/{task}/{seed}", pre, run / "pretrain" / "metrics.json",
                            after=[f"collect/{task}"]))
            for lam in args.lams:
                jobs.append(Job(f"finetune/{task}/{seed}/{lam:g}", [
                    "finetune", "--checkpoint",
                    str(run / "pretrain" / "checkpoints" / "offline.safetensors"),
                    "--data", str(data), "--episodes", str(args.episodes),
                    "--eval-at", ",".join(map(str, args.eval_at)),
                    "--eval-episodes", str(args.eval_episodes), "--lam", f"{lam:g}",
                    "--seed", str(seed), "--threads", "1", *_device(args), *_rewards(args),
                    *([] if args.utd is None else ["--utd", str(args.utd)]),
                    "--out", str(run / f"lam{lam:g}")],
                    run / f"lam{lam:g}" / "metrics.json", after=[f"pretrain/{task}/{seed}"]))
    return jobs


def dataset_kind(args: argparse.Namespace) -> str:
    """scripted, medium or medium-replay; scripted where the caller's arguments predate kinds."""
    return getattr(args, "dataset_kind", "scripted")


def run_dir(args: argparse.Namespace, task: str, seed: int) -> Path:
    """Where one seed's runs go. Agent-made kinds get a folder each, so a study of ``medium``
    in the work directory of a ``medium-replay`` one trains anew instead of reporting the other
    kind's finished runs as its own; scripted runs keep the paths earlier studies recorded."""
    kind = dataset_kind(args)
    task_dir = args.work / task if kind == "scripted" else args.work / task / kind
    return task_dir / f"seed{seed}"


def data_dir(args: argparse.Namespace, task: str) -> Path:
    """The dataset the runs of ``task`` train on: the scripted collection, or one of the two an
    agent-made collection writes (``collect --source agent``: OUT/medium, OUT/medium-replay)."""
    root = args.work / "data" / task
    kind = dataset_kind(args)
    return root if kind == "scripted" else root / kind


def _collect_job(args: argparse.Namespace, task: str, obs: str) -> Job:
    out = args.work / "data" / task
    argv = ["collect", "--task", task, "--episodes", str(args.dataset_episodes),
            "--obs", obs, "--seed", "0", "--out", str(out)]
    if dataset_kind(args) == "scripted":
        return Job(f"collect/{task}", argv, out / "dataset.json")
    # The agent writes medium-replay, then medium; medium's record is the last thing written.
    argv[1:1] = ["--source", "agent", "--train-episodes", str(args.agent_train_episodes),
                 "--threads", "1"]
    return Job(f"collect/{task}", argv, out / "medium" / "dataset.json")


def _device(args: argparse.Namespace) -> list[str]:
    """--device for the training jobs; left out for the CPU (the default) so the commands of
    earlier studies, written into their JSON, read the same."""
    device = getattr(args, "device", "cpu")
    return [] if device == "cpu" else ["--device", device]


def _rewards(args: argparse.Namespace) -> list[str]:
    """--reward-source/--classifier for pretraining and finetuning; left out for true rewards
    (the default) so earlier studies' commands read the same."""
    if getattr(args, "reward_source", "true") == "true":
        return []
    return ["--reward-source", args.reward_source, "--classifier", str(args.classifier)]


def run_jobs(jobs: list[Job], parallel: int, log_dir: Path) -> None:
    """Run jobs respecting their order constraints, `parallel` processes at a time."""
    log_dir.mkdir(parents=True, exist_ok=True)
    pending = {j.name: j for j in jobs}
    finished = {j.name for j in jobs if j.done_file.exists()}
    for name in finished:
        pending.pop(name)
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    while pending or running:
        for name, (proc, start) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            job = next(j for j in jobs if j.name == name)
            job.seconds = time.perf_counter() - start
            if proc.returncode != 0:
                msg = f"job {name} failed (exit {proc.returncode}); see {log_dir / _log(name)}"
                raise RuntimeError(msg)
            finished.add(name)
            print(f"[{time.strftime('%H:%M:%S')}] done {name} in {job.seconds:.0f} s", flush=True)
        ready = [j for j in pending.values() if all(a in finished for a in j.after)]
        while ready and len(running) < parallel:
            job = ready.pop(0)
            del pending[job.name]
            log = open(log_dir / _log(job.name), "w")  # noqa: SIM115 - lives as long as the job
            proc = subprocess.Popen([sys.executable, "-m", "fowm_core.jobs.cli", *job.argv],
                                    stdout=log, stderr=subprocess.STDOUT, env=env)
            running[job.name] = (proc, time.perf_counter())
            print(f"[{time.strftime('%H:%M:%S')}] start {job.name}: {job.command}", flush=True)
        time.sleep(0.5)


def _log(name: str) -> str:
    return name.replace("/", "_") + ".log"


def collect_results(args: argparse.Namespace, jobs: list[Job], wall_s: float) -> dict[str, Any]:
    tasks = [t for t in args.tasks.split(",") if t]
    out: dict[str, Any] = {
        "preset": args.preset, "obs": args.obs, "seeds": args.seeds,
        "eval_episodes": args.eval_episodes, "online_episodes": args.eval_at,
        "threads_per_job": 1, "parallel_jobs": args.jobs,
        # Wall-clock of this invocation (None when it only reported); per-run seconds are below.
        "wall_clock_s": None if args.report_only else round(wall_s, 1),
        "commands": [j.command for j in jobs], "tasks": {},
    }
    for task in tasks:
        dataset = data_dir(args, task) / "dataset.json"          # absent until collected
        entry: dict[str, Any] = {"dataset": _read(dataset) if dataset.exists() else None}
        for lam in args.lams:
            per_seed, seconds, missing = [], [], []
            for seed in args.seeds:
                run = run_dir(args, task, seed)
                finished = run / f"lam{lam:g}" / "metrics.json"
                if not finished.exists():      # an interrupted study reports what it has
                    missing.append(seed)
                    continue
                metrics = _read(finished)
                pre = _read(run / "pretrain" / "metrics.json")
                per_seed.append([metrics["eval"][str(n)]["success_rate"] for n in args.eval_at])
                seconds.append(pre.get("seconds", 0) + metrics.get("seconds", 0))
            entry[f"lam={lam:g}"] = {
                "online_episodes": args.eval_at,
                "seeds": [s for s in args.seeds if s not in missing],
                "seeds_not_finished": missing,
                "success_per_seed": per_seed,
                "success_mean": ([sum(c) / len(c) for c in zip(*per_seed, strict=True)]
                                 if per_seed else None),
                "seconds_per_seed": seconds,
            }
        out["tasks"][task] = entry
        curves = {k: {"episodes": v["online_episodes"], "success": v["success_per_seed"]}
                  for k, v in entry.items() if k.startswith("lam=") and v["success_per_seed"]}
        if not curves:
            continue
        results.plot_success_curves(
            args.out.parent / f"{args.out.stem}_{task}.png", curves,
            f"{task} ({args.preset} preset, {args.obs}): λ=1 vs λ=0")
    return out


def markdown_table(summary: dict[str, Any]) -> str:
    """The results table of docs/results.md: mean success over the finished seeds at every count,
    with the per-seed values underneath, and the median wall-clock of one seed (pretrain +
    finetune)."""
    counts = summary["online_episodes"]
    head = ("| task | λ | seeds done | " + " | ".join(str(n) for n in counts)
            + " | per seed (in seed order) | minutes per seed |")
    rows = [head, "|" + "---|" * (len(counts) + 5)]
    for task, entry in summary["tasks"].items():
        for key, run in entry.items():
            if not key.startswith("lam="):
                continue
            done, total = len(run["seeds"]), len(run["seeds"]) + len(run["seeds_not_finished"])
            mean = run["success_mean"] or [None] * len(counts)
            cells = ["—" if m is None else f"{100 * m:.0f} %" for m in mean]
            per_seed = " / ".join(",".join(f"{100 * v:.0f}" for v in seed)
                                  for seed in run["success_per_seed"]) or "—"
            secs = sorted(run["seconds_per_seed"])
            minutes = f"{secs[len(secs) // 2] / 60:.0f}" if secs else "—"
            rows.append(f"| {task} | {key[4:]} | {done} of {total} | " + " | ".join(cells)
                        + f" | {per_seed} | {minutes} |")
    return "\n".join(rows)


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def main(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    jobs = plan_jobs(args)
    if not args.report_only:
        run_jobs(jobs, max(1, args.jobs), args.work / "logs")
    summary = collect_results(args, jobs, time.perf_counter() - start)
    results.write_json(args.out, summary)
    print(json.dumps({t: {k: v["success_mean"] for k, v in e.items() if k.startswith("lam=")}
                      for t, e in summary["tasks"].items()}))
    print(markdown_table(summary))
