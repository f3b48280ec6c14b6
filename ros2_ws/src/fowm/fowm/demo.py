"""`fowm demo`: the whole FOWM loop on the sim twin, in one command (README's main command).

  1. offline dataset: scripted-policy episodes as rosbag2 (workflows.collect)
  2. pretraining on it (workflows.run_pretrain), or --checkpoint to start from one
  3. success BEFORE: evaluation episodes without noise (workflows.run_eval)
  4. the ROS stack in real time (twin, planner, episode manager) without the learner for a few
     episodes: the planner's deadline misses with the planner alone
  5. the ROS stack with the recorder and the learner for N online episodes: every episode becomes
     a bag, the learner finetunes on it (len·utd balanced updates, docs/algorithm.md §6),
     announces a checkpoint, the planner validates and hot-swaps it between ticks
  6. success AFTER on the same evaluation seeds, with the learner's last checkpoint
  7. prints success before/after, swaps, tick misses with and without the learner; writes
     demo.json and demo.png under --out

The ROS part is fowm.bringup.run_stack, what `fowm run --bag-dir` runs (one process, one executor,
the learner in its own process), and the statistics come from its StackResult. The rest (dataset,
pretraining, evaluation, results JSON and plot) are calls into fowm_core.jobs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from fowm.bringup import StackResult, run_stack
from fowm.ros.checkpoint_task import checkpoint_values
from fowm_core import tasks
from fowm_core.errors import ConfigError, FowmError
from fowm_core.jobs import results, workflows

# The package's source tree (ros2_ws/src/fowm/fowm) and a colcon install
# (install/fowm/lib/pythonX.Y/site-packages/fowm) both sit four levels below where config/ is found.
_ROOT = Path(__file__).resolve().parents[4]
DEFAULT_CONFIG = next((c for c in (_ROOT / "config" / "sim.yaml",
                                   _ROOT / "share" / "fowm" / "config" / "sim.yaml")
                       if c.is_file()), Path("config/sim.yaml"))
EVAL_SEED = 10_000_000            # disjoint from collection (workflows) and online seeds
ONLINE_SEED = 1_000_000


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fowm demo", description=__doc__.splitlines()[0])
    # Defaults: a small, noisy reach dataset, so the pretrained model is imperfect and 20-30 online
    # episodes visibly raise it on 2 cores (docs/results.md "The demo").
    p.add_argument("--task", default="reach", choices=tasks.names())
    p.add_argument("--out", default="runs/demo", help="results folder")
    p.add_argument("--offline-episodes", type=int, default=30)
    p.add_argument("--noise", type=float, default=0.6,
                   help="behaviour noise of the scripted dataset (0.6 = mostly failures)")
    p.add_argument("--offline-steps", type=int, default=600, help="pretraining updates")
    p.add_argument("--checkpoint", default=None,
                   help="start from this pretrained checkpoint (skips pretraining)")
    p.add_argument("--online-episodes", type=int, default=30)
    p.add_argument("--baseline-episodes", type=int, default=2,
                   help="episodes of the stack without the learner (tick-miss baseline)")
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--episode-length", type=int, default=25)
    p.add_argument("--rate-hz", type=float, default=6.25,
                   help="control rate of twin and planner (the twin's agent step is 0.16 s of "
                        "sim time whatever the rate): lower it on a slow machine so a plan fits")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="ROS parameter YAML")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--key-file", default=None,
                   help="lab key for signed weight announcements (`fowm keygen PATH`); default: "
                        "a fresh 0600 key in the learner's work directory")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for pretrain and eval (2 threads on a busy 2-core "
                        "machine spin-wait and run far slower than 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if args.checkpoint:
        _check_task(Path(args.checkpoint), args.task)
    workflows.set_threads(args.threads)
    out = Path(args.out)
    start = time.monotonic()
    data = out / "data"
    _say(f"[1/6] offline dataset: {args.offline_episodes} scripted {args.task} episodes → {data}")
    workflows.collect(args.task, args.offline_episodes, data, noise=args.noise, seed=args.seed)
    ckpt = Path(args.checkpoint) if args.checkpoint else _pretrain(args, data, out)
    _say("[3/6] success before online finetuning")
    before = workflows.run_eval(workflows.load(ckpt, seed=args.seed), args.eval_episodes,
                                EVAL_SEED)
    _say(f"      success {before.success_rate:.2f} over {args.eval_episodes} episodes")
    _say(f"[4/6] ROS stack without the learner: {args.baseline_episodes} episodes (baseline)")
    baseline = run_online(args, ckpt, data, out / "baseline_bags", args.baseline_episodes,
                          learn=False)
    _say(f"[5/6] ROS stack with recorder + learner: {args.online_episodes} online episodes")
    online = run_online(args, ckpt, data, out / "bags", args.online_episodes, learn=True)
    final = Path(online["final_checkpoint"])
    _say(f"[6/6] success after finetuning ({final.name})")
    workflows.set_threads(args.threads)
    after = workflows.run_eval(workflows.load(final, seed=args.seed), args.eval_episodes,
                               EVAL_SEED)
    summary = _summary(args, ckpt, before, after, baseline, online, time.monotonic() - start)
    results.write_json(out / "demo.json", summary)
    results.plot_demo(out / "demo.png", summary)
    _print_summary(summary, out)
    return 0


def _check_task(ckpt: Path, task: str) -> None:
    """The dataset is collected for --task and the stack runs the checkpoint's: they must agree."""
    saved = checkpoint_values(str(ckpt))["task"]
    if saved != task:
        msg = (f"--checkpoint {ckpt} was trained for task {saved!r} but --task is {task!r}: "
               f"pass --task {saved} or a checkpoint trained for {task}")
        raise ConfigError(msg)


def _pretrain(args: argparse.Namespace, data: Path, out: Path) -> Path:
    cfg = workflows.preset_for("cpu", args.task, "state").with_overrides(
        {"schedule": {"offline_steps": args.offline_steps}})
    _say(f"[2/6] pretraining: {args.offline_steps} offline updates (cpu preset)")
    return Path(workflows.run_pretrain(cfg, data, out / "pretrain", seed=args.seed)["checkpoint"])


def run_online(args: argparse.Namespace, ckpt: Path, dataset: Path, bag_dir: Path,
               episodes: int, *, learn: bool) -> dict[str, Any]:
    """The real-time stack for ``episodes`` episodes; with ``learn`` also recorder + learner,
    and it waits until the learner has trained on every recorded episode."""
    # Each demo run's online phase is self-contained: bags and learner state left by an earlier
    # run (possibly of another model) would be ingested or resumed.
    shutil.rmtree(bag_dir, ignore_errors=True)
    period = 1.0 / args.rate_hz
    overrides = {            # task and obs mode: the checkpoint's (fowm.ros.checkpoint_task)
        "fowm_sim": {"rate_hz": args.rate_hz, "episode_length": args.episode_length,
                     "command_timeout_s": 2.5 * period},
        "fowm_planner": {"eval_mode": False,          # exploration noise while collecting
                         "rate_hz": args.rate_hz, "max_obs_age_s": 3.0 * period},
        "fowm_episode_manager": {"episode_length": args.episode_length,
                                 "base_seed": ONLINE_SEED, "service_timeout_s": 60.0},
        "fowm_learner": {"dataset_dir": str(dataset), "seed": args.seed},
    }

    done = [0]

    def progress(event: dict[str, Any]) -> None:
        done[0] += 1
        _say(f"      episode {done[0]}/{episodes}: success={event['success']} "
             f"return={event['return']:.2f}")

    # The recorder shares the stack's process (it only copies bytes); the learner gets its own
    # process, as on a robot: in-process, its Python work competes with the control thread for
    # the GIL (docs/results.md "The demo", docs/platform.md §15).
    # With the learner, run_stack signs its checkpoints with a fresh 0600 key in its work dir
    # (bag_dir/.learner/lab.key) and the planner accepts only those (docs/trust.md).
    result = run_stack(args.config, ckpt, 120.0 + 30.0 * episodes, bag_dir if learn else None,
                       lockstep=False, episodes=episodes, overrides=overrides,
                       wait_for_learner=learn, on_episode=progress, key_file=args.key_file)
    if not result.started:
        msg = "the ROS stack stopped before all its nodes were up; see the log above"
        raise FowmError(msg)
    out = _stats(result, ckpt)
    if learn:
        out["key_file"] = args.key_file or str(bag_dir / ".learner" / "lab.key")
    return out


def _stats(result: StackResult, ckpt: Path) -> dict[str, Any]:
    """demo.json's record of one stack run."""
    ends = result.ends
    out: dict[str, Any] = {
        "episodes": len(ends), "success": [bool(e["success"]) for e in ends],
        "returns": [float(e["return"]) for e in ends],
        "planner_timing": result.planner_timing, "planner_holds": result.planner_holds,
        "swaps": result.swaps, "refused": result.refused_swaps, "rollbacks": result.rollbacks,
        "live_weights": result.live_weights, "final_checkpoint": str(ckpt),
    }
    learner = result.learner
    if learner is not None:
        out.update(bags=result.bags, recorder_dropped=result.recorder_dropped,
                   ingested=learner.ingested, refused_bags=learner.refused_bags,
                   learner_step=learner.step, learner_exit=learner.exit_code)
        if learner.checkpoint is not None:
            out["final_checkpoint"] = learner.checkpoint
    return out


def _summary(args: argparse.Namespace, ckpt: Path, before: Any, after: Any,
             baseline: dict[str, Any], online: dict[str, Any], seconds: float) -> dict[str, Any]:
    return {
        "task": args.task, "pretrained": str(ckpt), "seconds": round(seconds, 1),
        "success_before": before.success_rate, "success_after": after.success_rate,
        "eval_episodes": args.eval_episodes, "eval_before": before.to_dict(),
        "eval_after": after.to_dict(), "swaps": online["swaps"],
        "tick_misses_without_learner": baseline["planner_timing"].get("deadline_misses", 0),
        "ticks_without_learner": baseline["planner_timing"].get("ticks", 0),
        "tick_misses_with_learner": online["planner_timing"].get("deadline_misses", 0),
        "ticks_with_learner": online["planner_timing"].get("ticks", 0),
        "baseline": baseline, "online": online,
    }


def _print_summary(s: dict[str, Any], out: Path) -> None:
    _say("")
    _say(f"FOWM demo ({s['task']}), {s['seconds'] / 60:.1f} min")
    _say(f"  success before online finetuning: {s['success_before']:.2f}")
    _say(f"  success after  online finetuning: {s['success_after']:.2f} "
         f"({s['online']['episodes']} online episodes)")
    _say(f"  hot-swaps: {s['swaps']} (refused: {len(s['online']['refused'])}, rolled back: "
         f"{len(s['online']['rollbacks'])}; signed with {s['online'].get('key_file')})")
    _say(f"  planner deadline misses: {s['tick_misses_without_learner']}/"
         f"{s['ticks_without_learner']} ticks without the learner, "
         f"{s['tick_misses_with_learner']}/{s['ticks_with_learner']} with it")
    _say(f"  results: {out / 'demo.json'}, plot: {out / 'demo.png'}")


def _say(text: str) -> None:
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
