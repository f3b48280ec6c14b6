"""The success classifier on the twin (docs/rewards.md): prints and writes one JSON.

1. Datasets with images (`fowm collect --obs all`) of reach and lift: a training set (seed 0) and a
   held-out set (seed 1, other episodes).
2. `fowm classifier train --labels simulated` on each training set, `fowm classifier eval` on the
   held-out set: accuracy / precision / recall / AUC against the twin's true success per frame.
3. Online finetuning of a state-observation agent on one task (`fowm experiment`, cpu preset),
   twice from the same dataset: rewards from the simulator (true) and rewards from the classifier
   (`--reward-source classifier`, offline and online). Success is the simulator's in both.

Every step is a `fowm` command in its own process, skipped when its output exists, so an
interrupted run resumes. Run it niced with one thread per process:
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/classifier_rewards.py --work runs/clf
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def fowm(argv: list[str], log: Path, done: Path) -> dict[str, Any]:
    """Run `fowm ARGV` unless ``done`` exists; returns its command and wall time."""
    command = "fowm " + shlex.join(argv)
    if done.exists():
        return {"command": command, "seconds": None, "skipped": True}
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    print(f"[{time.strftime('%H:%M:%S')}] {command}", flush=True)
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-m", "fowm_core.jobs.cli", *argv], stdout=out,
                              stderr=subprocess.STDOUT, env=env, check=False)
    if proc.returncode != 0:
        msg = f"{command} failed (exit {proc.returncode}); see {log}"
        raise RuntimeError(msg)
    return {"command": command, "seconds": round(time.perf_counter() - start, 1)}


def datasets(args: argparse.Namespace, task: str) -> dict[str, Path]:
    root = args.work / "data" / task
    data = {"train": root / "train", "test": root / "test"}
    for split, seed, n in (("train", 0, args.train_episodes), ("test", 1, args.test_episodes)):
        fowm(["collect", "--task", task, "--episodes", str(n), "--obs", "all", "--seed", str(seed),
              "--out", str(data[split])], args.work / "logs" / f"collect_{task}_{split}.log",
             data[split] / "dataset.json")
    return data


def classifier(args: argparse.Namespace, task: str, data: dict[str, Path],
               labels: str = "simulated") -> dict[str, Any]:
    """Train on ``labels`` (per-frame true success, or one end-of-episode label per episode as an
    operator gives it); evaluate against the true success of every held-out frame."""
    name = task if labels == "simulated" else f"{task}_{labels}"
    out = args.work / "classifier" / name
    train = fowm(["classifier", "train", "--data", str(data["train"]), "--out", str(out),
                  "--labels", labels, "--steps", str(args.classifier_steps),
                  "--threads", "1"], args.work / "logs" / f"classifier_{name}.log",
                 out / "metrics.json")
    report = out / "eval_test.json"
    evaluation = fowm(["classifier", "eval", "--classifier", str(out), "--data",
                       str(data["test"]), "--labels", "simulated", "--threads", "1",
                       "--out", str(report)], args.work / "logs" / f"eval_{name}.log", report)
    metrics = json.loads((out / "metrics.json").read_text())
    held = json.loads(report.read_text())
    return {"labels": labels, "train": {k: metrics[k] for k in ("episodes_train", "frames_train",
                                              "positives_train", "steps", "seconds_train",
                                              "simulated_labels")},
            "held_out_episodes": held["episodes"], "frames": held["frames"],
            "episodes_any_success": held["episodes_any_success"],
            "commands": [train["command"], evaluation["command"]]}


def finetuning(args: argparse.Namespace, task: str, data: Path, clf: Path) -> dict[str, Any]:
    """Both reward sources through `fowm experiment` (the dataset is linked in, so it is not
    collected again), then the curves side by side."""
    runs: dict[str, Any] = {}
    for source in args.sources.split(","):
        work = args.work / f"finetune_{source}"
        link = work / "data" / task
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(data.resolve())
        out = work / "result.json"
        argv = ["experiment", "--tasks", task, "--seeds", ",".join(map(str, args.seeds)),
                "--lams", "1", "--preset", "cpu", "--obs", "state",
                "--episodes", str(args.online_episodes),
                "--eval-at", ",".join(map(str, args.eval_at)),
                "--eval-episodes", str(args.eval_episodes), "--jobs", str(args.jobs),
                "--work", str(work), "--out", str(out)]
        if args.offline_steps is not None:
            argv += ["--offline-steps", str(args.offline_steps)]
        if source == "classifier":
            argv += ["--reward-source", "classifier", "--classifier", str(clf)]
        run = fowm(argv, args.work / "logs" / f"finetune_{source}.log", out)
        result = json.loads(out.read_text())["tasks"][task]["lam=1"]
        online = []
        for seed in result["seeds"]:
            metrics = json.loads((work / task / f"seed{seed}" / "lam1" / "metrics.json")
                                 .read_text())
            online.append([e["success"] for e in metrics["online"]])
        runs[source] = {**result, "online_success_per_seed": online, "command": run["command"],
                        "seconds": run["seconds"]}
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/classifier_rewards"))
    parser.add_argument("--tasks", default="reach,lift", help="classifier accuracy on these")
    parser.add_argument("--finetune-task", default="lift")
    parser.add_argument("--train-episodes", type=int, default=400)
    parser.add_argument("--test-episodes", type=int, default=100)
    parser.add_argument("--classifier-steps", type=int, default=1500)
    parser.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")], default=[0, 1])
    parser.add_argument("--offline-steps", type=int, default=None)
    parser.add_argument("--online-episodes", type=int, default=30)
    parser.add_argument("--eval-at", type=lambda t: [int(x) for x in t.split(",")],
                        default=[0, 10, 20, 30])
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--skip-finetune", action="store_true")
    parser.add_argument("--episode-labels", action="store_true",
                        help="also train on one end-of-episode label per episode (as an operator "
                             "labels) and evaluate it against the true per-frame success")
    parser.add_argument("--sources", default="true,classifier",
                        help="reward sources of the finetuning runs (both for the comparison)")
    parser.add_argument("--out", type=Path, default=Path("docs/results/classifier_rewards.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    summary: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "labels": ("classifier: trained on the twin's true success of every frame; "
                   "classifier_episode_labels: on one end-of-episode label per episode (an "
                   "operator's kind of label, from the twin); both evaluated against the true "
                   "success of every frame of held-out episodes (another collection seed)"),
        "classifier": {}}
    tasks = [t for t in args.tasks.split(",") if t]
    data = {task: datasets(args, task) for task in {*tasks, args.finetune_task}}
    for task in tasks:
        summary["classifier"][task] = classifier(args, task, data[task])
        print(json.dumps({task: summary["classifier"][task]["frames"]}), flush=True)
    if args.episode_labels:
        summary["classifier_episode_labels"] = {
            task: classifier(args, task, data[task], "simulated-episode") for task in tasks}
    if not args.skip_finetune:
        task = args.finetune_task
        if task not in summary["classifier"] and "classifier" in args.sources:
            summary["classifier"][task] = classifier(args, task, data[task])
        summary["finetune"] = {"task": task, "obs": "state", "preset": "cpu", "lam": 1.0,
                               **finetuning(args, task, data[task]["train"],
                                            args.work / "classifier" / task)}
        from fowm_core.jobs import results

        ft = summary["finetune"]
        results.plot_success_curves(
            args.out.with_name(f"{args.out.stem}_{task}.png"),
            {f"{source} rewards": {"episodes": ft[source]["online_episodes"],
                                   "success": ft[source]["success_per_seed"]}
             for source in args.sources.split(",") if ft[source]["success_per_seed"]},
            f"{task} (cpu preset, state obs): classifier vs true rewards")
    summary["wall_clock_s_this_run"] = round(time.perf_counter() - start, 1)   # done steps skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary.get("finetune", {}), indent=1)[:4000])


if __name__ == "__main__":
    main()
