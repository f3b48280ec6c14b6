"""The `fowm` command: wiring only; the jobs live in jobs.workflows and jobs.experiment.

    fowm collect    a dataset (scripted policy, or --source agent) → one rosbag2 (MCAP) per episode
    fowm pretrain   offline training on a bag dataset → checkpoint
    fowm finetune   the reference offline→online loop from a checkpoint, with evaluations
    fowm eval       success rate of a checkpoint (eval mode: no exploration noise)
    fowm experiment tasks × seeds × λ, the table of docs/results.md and its JSON
    fowm diagnose   model error along the planner's chosen sequences vs the data's (JSON)
    fowm dataset    stats of an episode-bag dataset: size, success, returns (JSON)
    fowm bench      plan | update | peak: one JSON line each
    fowm classifier train | eval: the success classifier from labelled bags (docs/rewards.md)
    fowm keygen     the lab key that signs weight announcements (docs/trust.md)
    fowm calibrate  camera extrinsics by hand-eye on the twin → YAML (docs/perception.md)

More verbs come from installed packages through the entry point group ``fowm.commands``, as
ros2cli finds its verbs: the ROS 2 package (ros2_ws/src/fowm) adds ``run`` (the stack from a YAML
config, all nodes in one process) and ``demo`` (the whole loop on the twin, README's main
command). Each gets the arguments after its name and returns an exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from fowm_core import tasks
from fowm_core.errors import FowmError
from fowm_core.jobs import cli_data

COMMAND_GROUP = "fowm.commands"
LABEL_SOURCES = ("operator", "simulated", "simulated-episode")     # data.labelled's (tested)
# Where the ROS verbs come from, for the message when one is asked for and not installed.
INSTALL_HINT = ("the ROS 2 verbs (run, demo) come with the ROS package in ros2_ws/src/fowm: run "
                "`make setup` (it pip-installs the package into .venv), or on a ROS install "
                "`colcon build` in ros2_ws and `source install/setup.bash`")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        msg = f"must be 1 or more, got {value}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device: auto | cpu | cuda | cuda:N "
                   "(auto: the first GPU if torch sees one, else the CPU)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="reach", choices=tasks.names())
    p.add_argument("--preset", default="cpu", choices=["cpu", "paper"])
    p.add_argument("--obs", default="state", choices=["state", "rgb", "all"],
                   help="what the model sees (state vector, image, or both)")
    p.add_argument("--config", type=Path, help="YAML overrides of the preset's values")


def _add_reward_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reward-source", default="true", choices=["true", "classifier"],
                   help="true: the bags' (and the twin's) task rewards; classifier: every reward "
                        "becomes the success classifier's probability (docs/rewards.md)")
    p.add_argument("--classifier", type=Path, default=None,
                   help="the classifier (fowm classifier train's --out) for --reward-source "
                        "classifier")


def _classifier(args: argparse.Namespace):
    from fowm_core.jobs import workflows

    return workflows.reward_classifier(args.reward_source, args.classifier)


def _config(args: argparse.Namespace):
    from fowm_core.config import FowmConfig
    from fowm_core.jobs import workflows

    cfg = workflows.preset_for(args.preset, args.task, args.obs)
    if args.config:
        cfg = FowmConfig.from_yaml(args.config, base=cfg)
    if getattr(args, "steps", None) is not None:
        cfg = cfg.with_overrides({"schedule": {"offline_steps": args.steps}})
    return cfg


def cmd_collect(args: argparse.Namespace) -> int:
    from fowm_core.jobs import workflows

    if args.source == "agent":
        return cli_data.cmd_collect_agent(args, _config)
    summary = workflows.collect(args.task, args.episodes, args.out, noise=args.noise,
                                seed=args.seed, obs_mode=args.obs)
    print(json.dumps(summary))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from fowm_core.jobs import workflows

    workflows.set_threads(args.threads)
    summary = workflows.run_pretrain(_config(args), args.data, args.out, seed=args.seed,
                                     device=args.device, classifier=_classifier(args))
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, default=str))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from fowm_core.jobs import workflows

    workflows.set_threads(args.threads)
    summary = workflows.run_finetune(args.checkpoint, args.data, args.out,
                                     episodes=args.episodes, eval_at=args.eval_at,
                                     eval_episodes=args.eval_episodes, lam=args.lam,
                                     utd=args.utd, seed=args.seed, device=args.device,
                                     classifier=_classifier(args))
    print(json.dumps({"eval": summary["eval"], "seconds": summary["seconds"]}))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from fowm_core.jobs import workflows

    workflows.set_threads(args.threads)
    overrides = {} if args.lam is None else {"planner": {"uncertainty_cost": args.lam}}
    agent = workflows.load(args.checkpoint, overrides, seed=args.seed, device=args.device)
    result = workflows.run_eval(agent, args.episodes, seed=args.eval_seed)
    print(json.dumps({"checkpoint": str(args.checkpoint), "task": agent.cfg.task,
                      "lam": agent.cfg.planner.uncertainty_cost, **result.to_dict()}))
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from fowm_core.jobs import experiment

    experiment.main(args)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from fowm_core.jobs import bench

    return bench.main(args.bench_args)


def cmd_keygen(args: argparse.Namespace) -> int:
    from fowm_core.runtime import trust

    path = trust.generate_key(args.path)
    print(f"wrote a {trust.KEY_BYTES}-byte key to {path} (mode 0600); give the same path to the "
          "learner (key_file) and the planner (trust.key_file), and to the recorder (key_file)")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from fowm_core.jobs import calibrate

    summary = calibrate.calibrate_twin(args.out, poses=args.poses, seed=args.seed,
                                       method=args.method, max_tilt_deg=args.max_tilt_deg,
                                       max_turn_deg=args.max_turn_deg, camera=args.camera)
    print(json.dumps(summary))
    return 0


def _add_classifier_parser(sub: Any) -> None:
    p = sub.add_parser("classifier", help="success classifier: train | eval (docs/rewards.md)")
    verbs = p.add_subparsers(dest="verb", required=True)
    t = verbs.add_parser("train", help="train from labelled episode bags")
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--labels", default="operator", choices=LABEL_SOURCES,
                   help="operator: the label_success answers; simulated: the twin's true "
                        "success of every step; simulated-episode: the twin's end-of-episode "
                        "success used as an operator's label (twin bags only)")
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--holdout", type=float, default=0.2, help="fraction of bags held out")
    t.add_argument("--positive-tail", type=int, default=3,
                   help="operator labels: frames at the end of a successful episode taken as 1")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=None)
    e = verbs.add_parser("eval", help="accuracy/precision/recall/AUC on labelled bags")
    e.add_argument("--classifier", type=Path, required=True)
    e.add_argument("--data", type=Path, required=True)
    e.add_argument("--labels", default="simulated", choices=LABEL_SOURCES)
    e.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    e.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_classifier)


def cmd_classifier(args: argparse.Namespace) -> int:
    from fowm_core.jobs import classifier

    return classifier.main(args)


def installed_commands(core: set[str] | frozenset[str] = frozenset()) -> dict[str, EntryPoint]:
    """Verbs that installed packages register under ``fowm.commands`` (core verbs win)."""
    return {ep.name: ep for ep in entry_points(group=COMMAND_GROUP) if ep.name not in core}


def run_installed(ep: EntryPoint, argv: list[str]) -> int:
    """Load a package's verb and run it with the arguments after its name."""
    try:
        func = ep.load()
    except ImportError as err:
        msg = (f"`fowm {ep.name}` ({ep.value}) is registered but does not import: {err}; "
               f"{INSTALL_HINT}")
        raise FowmError(msg) from err
    return int(func(argv) or 0)


def build_parser(installed: dict[str, EntryPoint] | None = None) -> argparse.ArgumentParser:
    installed = installed_commands(CORE) if installed is None else installed
    epilog = (f"installed verbs ({COMMAND_GROUP}): {', '.join(sorted(installed))}" if installed
              else f"no {COMMAND_GROUP} verbs installed: {INSTALL_HINT}")
    parser = argparse.ArgumentParser(prog="fowm", description=__doc__, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="scripted-policy dataset as rosbag2 (MCAP)")
    p.add_argument("--task", default="reach", choices=tasks.names())
    p.add_argument("--episodes", type=int, default=800)
    p.add_argument("--noise", type=float, default=None,
                   help="behaviour noise (default: the task's 'medium' level)")
    p.add_argument("--obs", default="state", choices=["state", "all"],
                   help="'all' also records camera images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--source", default="scripted", choices=["scripted", "agent"],
                   help="agent: train an agent from scratch on the twin; write its replay "
                        "(OUT/medium-replay) and --episodes rollouts of it (OUT/medium)")
    cli_data.add_agent_args(p)
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("pretrain", help="offline training on a bag dataset")
    _add_model_args(p)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--steps", type=int, help="offline gradient steps (default: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    _add_device_arg(p)
    _add_reward_args(p)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="offline→online finetuning from a checkpoint")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="the offline dataset (50%% of batches)")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--eval-at", type=_ints, default=[0, 10, 20, 50, 100])
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--lam", type=float, default=None, help="uncertainty cost λ (default: config)")
    p.add_argument("--utd", type=_positive_int, default=None,
                   help="updates per online step (default: the checkpoint's schedule.utd)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    _add_device_arg(p)
    _add_reward_args(p)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("eval", help="evaluate a checkpoint without exploration noise")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--lam", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-seed", type=int, default=10_000_000)
    p.add_argument("--threads", type=int, default=None)
    _add_device_arg(p)
    p.set_defaults(func=cmd_eval)

    cli_data.add_parsers(sub, _add_device_arg)

    p = sub.add_parser("experiment", help="tasks × seeds × λ: collect, pretrain, finetune, table")
    p.add_argument("--tasks", default=",".join(tasks.names()))
    p.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    p.add_argument("--lams", type=_floats, default=[1.0, 0.0])
    p.add_argument("--preset", default="cpu", choices=["cpu", "paper"])
    p.add_argument("--obs", default="state", choices=["state", "rgb", "all"])
    p.add_argument("--dataset-episodes", type=int, default=800,
                   help="scripted: episodes; agent kinds: the medium rollouts")
    p.add_argument("--dataset-kind", default="scripted",
                   choices=["scripted", "medium", "medium-replay"],
                   help="which dataset the runs train on (medium, medium-replay: made by "
                        "`collect --source agent`, docs/sim.md)")
    p.add_argument("--agent-train-episodes", type=int, default=600,
                   help="agent kinds: the most episodes the data-making agent trains")
    p.add_argument("--offline-steps", type=int, default=None)
    p.add_argument("--config", type=Path, default=None,
                   help="YAML overrides for pretraining (model sizes, ...); finetuning and "
                        "evaluation take the checkpoint's config")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--utd", type=_positive_int, default=None,
                   help="updates per online step for the finetuning runs (default: the "
                        "checkpoint's schedule.utd)")
    p.add_argument("--eval-at", type=_ints, default=[0, 10, 20, 50, 100])
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (1 torch thread each)")
    _add_device_arg(p)
    _add_reward_args(p)
    p.add_argument("--work", type=Path, default=Path("runs/experiment"))
    p.add_argument("--out", type=Path, default=Path("docs/results/sim_cpu.json"))
    p.add_argument("--report-only", action="store_true",
                   help="run nothing; write the JSON and plots from the finished runs")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("bench", help="plan | update | peak speed, one JSON line each",
                       add_help=False)
    p.add_argument("bench_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench)

    _add_classifier_parser(sub)

    p = sub.add_parser("keygen", help="a new lab key (0600) for signed weight announcements")
    p.add_argument("path", type=Path, help="key file to create (never overwritten)")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("calibrate", help="camera extrinsics by hand-eye (eye-to-hand) on the twin")
    p.add_argument("--out", type=Path, required=True, help="extrinsics YAML for the tracker")
    p.add_argument("--poses", type=int, default=30, help="arm poses to visit")
    p.add_argument("--method", default="park", choices=["tsai", "park", "horaud", "andreff",
                                                          "daniilidis"])
    p.add_argument("--camera", default="tracker_cam", choices=["tracker_cam", "camera0"],
                   help="the twin's camera to calibrate (tracker_cam: the tracker's, across "
                        "the table; camera0: the model's view)")
    p.add_argument("--max-tilt-deg", type=float, default=30.0)
    p.add_argument("--max-turn-deg", type=float, default=40.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_calibrate)

    for name, ep in sorted(installed.items()):
        dist = ep.dist.name if ep.dist is not None else ep.value
        sub.add_parser(name, help=f"from {dist} ({ep.value}); `fowm {name} -h` for its options",
                       add_help=False)
    return parser


# Sub-commands with their own argument parsers: everything after the name is theirs (argparse's
# REMAINDER does not pass on arguments that start with "--").
PASSTHROUGH = {"bench": "bench_args"}
CORE = frozenset({"collect", "pretrain", "finetune", "eval", "diagnose", "dataset",
                  "experiment", "bench", "keygen", "calibrate", "classifier"})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    installed = installed_commands(CORE)
    parser = build_parser(installed)
    command = argv[0] if argv else ""
    if command and not command.startswith("-") and command not in CORE | set(installed):
        print(f"fowm: unknown command {command!r}: the core verbs are {', '.join(sorted(CORE))}; "
              f"{INSTALL_HINT}", file=sys.stderr)
        return 2
    if command in installed:
        args = argparse.Namespace(command=command, func=lambda _: run_installed(
            installed[command], argv[1:]))
    elif command in PASSTHROUGH:
        args = parser.parse_args(argv[:1])
        setattr(args, PASSTHROUGH[command], argv[1:])
    else:
        args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FowmError as err:
        print(f"fowm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fowm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
