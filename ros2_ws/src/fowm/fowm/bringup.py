"""The whole sim stack in one process, without ROS's launch (`fowm run --config config/sim.yaml`).

The same node classes as the launch files, composed in one executor (ros2/examples composed.py,
fowm.ros.spin), with parameters from the same YAML (--params-file). With a bag directory the
recorder joins them and the learner runs in its own process (``spawn_learner_process``).
SIGINT/SIGTERM end it cleanly: the first one stops the spin loop (fowm.ros.shutdown), later ones
are ignored (fowm.ros.spin, docs/platform.md §1.8). ``run_stack`` returns what the run did
(``StackResult``); `fowm run` and `fowm demo` (fowm.demo) print from it.

The planner's checkpoint goes to the twin and the episode manager too: they take the task and
observation mode from its sidecar (fowm.ros.checkpoint_task). No node imports this module.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter

from fowm.nodes.episode_manager import EpisodeManagerNode
from fowm.nodes.learner_node import LearnerNode
from fowm.nodes.planner_node import PlannerNode
from fowm.nodes.recorder_node import RecorderNode
from fowm.nodes.sim_node import SimNode
from fowm.nodes.tracker_node import TrackerNode
from fowm.ros import tracker_mode, twin_operator
from fowm.ros.lab_key import trust_overrides
from fowm.ros.spin import NodeFactory, spin_nodes
from fowm.ros.supervisor import Backoff, SupervisedProcess, SupervisorNode
from fowm.ros.supervisor import stop_process as stop_process
from fowm_core.errors import ConfigError, FowmError
from fowm_core.learning.checkpoints import read_meta
from fowm_core.runtime.ingest import TRAINED_KEY, latest_checkpoint
from fowm_core.runtime.ledger import BagLedger
from fowm_core.runtime.worklock import die_with_parent

Overrides = dict[str, dict[str, Any]]


@dataclass
class LearnerReport:
    """The learner process's trace in its work directory: ledger and newest checkpoint."""

    checkpoint: str | None = None          # newest valid checkpoint it wrote (None: none yet)
    step: int | None = None                # its update step
    trained_episodes: int = 0              # ledger entries whose updates it holds
    ingested: int = 0                      # bags in the ledger
    refused_bags: int = 0                  # bags it could not read
    exit_code: int | None = None           # the process's exit status once stopped
    restarts: int = 0                      # times the supervisor restarted it
    failures: list[int] = field(default_factory=list)   # exit codes of its unasked-for exits
    supervisor_state: str = ""             # running / restarting / given_up at the end


@dataclass
class StackResult:
    """What a run did: episode events, the planner's loop and swaps, recorder and learner."""

    events: list[dict[str, Any]] = field(default_factory=list)
    planner_timing: dict[str, float] = field(default_factory=dict)
    planner_holds: dict[str, int] = field(default_factory=dict)
    swaps: int = 0
    refused_swaps: list[tuple[str, str]] = field(default_factory=list)     # (path, why)
    rollbacks: list[tuple[str, str]] = field(default_factory=list)         # (path, why)
    live_weights: dict[str, Any] = field(default_factory=dict)            # {"path", "step"}
    bags: list[str] = field(default_factory=list)             # names of the bags recorded
    recorder_dropped: list[str] = field(default_factory=list)  # why episodes went unrecorded
    learner: LearnerReport | None = None                       # None: no bag directory
    started: bool = False                                      # every node came up

    @property
    def ends(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "end"]


def stack_factories(checkpoint: str, lockstep: bool | None = None,
                    overrides: Overrides | None = None,
                    tracker_extrinsics: str | None = None) -> list[NodeFactory]:
    """Factories of the twin, the planner and the episode manager with per-node overrides.
    All three get ``checkpoint``: the planner's weights, the others' task and obs mode. With
    ``tracker_extrinsics`` the twin runs in tracker mode and fowm_tracker joins them."""
    names = ("fowm_sim", "fowm_planner", "fowm_episode_manager",
             *(("fowm_tracker",) if tracker_extrinsics else ()))
    per_node: Overrides = {name: {"checkpoint": str(checkpoint)} for name in names}
    if tracker_extrinsics:
        per_node["fowm_sim"].update(tracker_mode.SIM_PARAMS)
        per_node["fowm_tracker"]["extrinsics_file"] = str(tracker_extrinsics)
    if lockstep is not None:
        for name, values in per_node.items():
            values["lockstep"] = lockstep
            if name != "fowm_sim":             # the twin owns /clock; the others follow it
                values["use_sim_time"] = lockstep
    per_node.get("fowm_tracker", {}).pop("lockstep", None)
    for name, values in (overrides or {}).items():
        per_node.setdefault(name, {}).update(values)
    tracker = ([_factory(TrackerNode, per_node["fowm_tracker"])] if tracker_extrinsics else [])
    return [_factory(SimNode, per_node["fowm_sim"]), *tracker,
            _factory(PlannerNode, per_node["fowm_planner"]),
            _factory(EpisodeManagerNode, per_node["fowm_episode_manager"])]


def loop_factories(bag_dir: str | Path, checkpoint: str | Path,
                   overrides: Overrides | None = None) -> list[NodeFactory]:
    """Factories of the recorder and the learner for a stack that learns while it runs
    (`fowm run --bag-dir DIR`): bags go to DIR, the learner starts from the planner's checkpoint.
    ``overrides`` ({node name: {parameter: value}}) win, e.g. the learner's dataset_dir."""
    per_node: Overrides = {
        "fowm_recorder": {"bag_dir": str(bag_dir)},
        "fowm_learner": {"bag_dir": str(bag_dir), "checkpoint": str(checkpoint)}}
    for name, values in (overrides or {}).items():
        if name in per_node:
            per_node[name].update(values)
    return [_factory(RecorderNode, per_node["fowm_recorder"]),
            _factory(LearnerNode, per_node["fowm_learner"])]


def merged(base: Overrides, over: Overrides) -> Overrides:
    """``over``'s values win, node by node."""
    out = {name: dict(values) for name, values in base.items()}
    for name, values in over.items():
        out.setdefault(name, {}).update(values)
    return out


def _factory(cls: type[Node], values: dict[str, Any]) -> NodeFactory:
    params = [Parameter(k, value=v) for k, v in values.items()]
    return lambda: cls(parameter_overrides=params)


def spawn_learner_process(bag_dir: str | Path, checkpoint: str | Path,
                          params: dict[str, Any] | None = None,
                          params_file: str | Path | Sequence[str | Path] | None = None
                          ) -> subprocess.Popen:
    """Start ``fowm_learner`` in its own process, below the control loop in the OS scheduler.

    In the planner's process the learner's Python work competes with the control thread for the
    GIL; in its own process at nice 10 it takes only idle cycles (docs/results.md "The demo"). It
    dies with this process: SIGTERM on our death (PR_SET_PDEATHSIG, Linux) and its own watch of
    ``parent_pid`` (anywhere), so a SIGKILLed `fowm run` leaves no orphan to share the work
    directory with the next one."""
    values = {"bag_dir": bag_dir, "checkpoint": checkpoint, "torch_threads": 1,
              "parent_pid": os.getpid(), **(params or {})}
    return spawn_node_process("fowm.nodes.learner_node", values, params_file,
                              {**os.environ, "OMP_NUM_THREADS": "1"}, nice=10)


def spawn_node_process(module: str, values: dict[str, Any],
                       params_file: str | Path | Sequence[str | Path] | None = None,
                       env: dict[str, str] | None = None, nice: int = 0) -> subprocess.Popen:
    """``python -m module --ros-args [--params-file F]… -p name:=value…`` as a child that gets
    SIGTERM when this process dies (PR_SET_PDEATHSIG, Linux)."""
    parent = os.getpid()
    argv = [sys.executable, "-m", module, "--ros-args"]
    files = [params_file] if isinstance(params_file, str | Path) else list(params_file or [])
    for file in files:
        argv += ["--params-file", str(file)]
    for name, value in values.items():
        argv += ["-p", f"{name}:={value}"]

    def in_child() -> None:           # between fork and exec
        if nice:
            os.nice(nice)
        die_with_parent(signal.SIGTERM, parent)

    return subprocess.Popen(argv, env=dict(os.environ if env is None else env),
                            preexec_fn=in_child)


def learner_report(work_dir: Path, exit_code: int | None = None,
                   supervised: SupervisedProcess | None = None) -> LearnerReport:
    """The learner's progress from its files (it runs in another process)."""
    report = LearnerReport(exit_code=exit_code)
    if supervised is not None:
        report.restarts, report.failures = supervised.restarts, list(supervised.exit_codes)
        report.supervisor_state = supervised.state
    path = latest_checkpoint(work_dir / "checkpoints")
    if path is not None:
        meta = read_meta(path)
        report.checkpoint, report.step = str(path), meta.get("step")
        report.trained_episodes = int(meta.get(TRAINED_KEY) or 0)
    ledger_path = work_dir / "ledger.json"
    if ledger_path.is_file():
        ledger = BagLedger(ledger_path)
        report.ingested, report.refused_bags = len(ledger.ingested), len(ledger.failed)
    return report


def run_stack(config_path: str | Path, checkpoint: str | Path, duration_s: float | None = None,
              bag_dir: str | Path | None = None, *, lockstep: bool | None = None,
              episodes: int | None = None, overrides: Overrides | None = None,
              wait_for_learner: bool = False,
              on_episode: Callable[[dict[str, Any]], None] | None = None,
              key_file: str | Path | None = None,
              backoff: Backoff | None = None,
              tracker_extrinsics: str | Path | None = None,
              real_mode: bool = False) -> StackResult:
    """Run twin + planner + episode manager with ``config_path``'s parameters.

    Args:
        config_path: ROS parameter YAML (config/sim.yaml).
        checkpoint: the planner's .safetensors checkpoint (it also sets the task and obs mode).
        duration_s: stop after this many seconds (None: until SIGINT).
        bag_dir: record every episode as rosbag2 there and finetune on them live (recorder in
            this process, learner in its own).
        lockstep: force the clock mode for every node (None: as the YAML says).
        episodes: stop after this many finished episodes.
        overrides: {node name: {parameter: value}} applied over the YAML.
        wait_for_learner: with ``bag_dir`` and ``episodes``, also wait until the learner has
            trained on every episode (or its process has ended).
        on_episode: called with each "end" event as it arrives.
        key_file: with ``bag_dir``, the lab key (docs/trust.md); None: ``<learner work
            dir>/lab.key``, created if missing (``trust_overrides``).
        backoff: the learner's restart policy (fowm.ros.supervisor.Backoff's defaults if None).
        tracker_extrinsics: run the twin in tracker mode (fowm.ros.tracker_mode) with
            fowm_tracker using these camera extrinsics (`fowm calibrate --out FILE`).
        real_mode: with ``tracker_extrinsics``, the episode manager in ``mode: real`` (rewards
            from the tracker, else the label) and the twin as its operator: resets, confirms
            and labels from its truth (fowm.ros.twin_operator, docs/rewards.md).
    """
    config_path = Path(config_path)
    if not config_path.is_file():
        msg = f"config {config_path} does not exist; pass e.g. --config config/sim.yaml"
        raise ConfigError(msg)
    # 640×480 images between participants need Fast DDS's large-data transport
    # (docs/platform.md §1.7).
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    overrides = dict(overrides or {})
    if real_mode:
        if tracker_extrinsics is None:
            msg = ("real_mode needs tracker_extrinsics (`fowm run --tracker FILE --real-mode`): "
                   "without the tracker nothing would publish the object and goal poses")
            raise ConfigError(msg)
        overrides = merged({"fowm_episode_manager": {"mode": "real"}}, overrides)
    if episodes is not None:
        overrides.setdefault("fowm_episode_manager", {})["num_episodes"] = episodes
    work_dir: Path | None = None
    if bag_dir is not None:          # the learner signs, the planner verifies (docs/trust.md)
        work_dir = Path(overrides.get("fowm_learner", {}).get("work_dir")
                        or Path(bag_dir) / ".learner")
        overrides = merged(trust_overrides(work_dir, key_file), overrides)
    learner_params = overrides.get("fowm_learner", {})
    rclpy.init(args=["--ros-args", "--params-file", str(config_path)])
    factories = stack_factories(str(checkpoint), lockstep, overrides,
                                None if tracker_extrinsics is None else str(tracker_extrinsics))
    if real_mode:
        factories = twin_operator.with_twin_operator(factories, episodes or 10**9)
    learner: SupervisedProcess | None = None
    if bag_dir is not None:          # record every episode and learn; built first: hear every event
        assert work_dir is not None
        # The recorder only copies bytes and stays here; the learner gets its own process,
        # restarted with backoff when it dies (fowm.ros.supervisor).
        learner = SupervisedProcess("fowm_learner", lambda: spawn_learner_process(
            bag_dir, checkpoint, learner_params, config_path), backoff)
        learner.start()
        supervised = learner
        recorder = loop_factories(bag_dir, checkpoint, overrides)[0]
        factories = [lambda: SupervisorNode(supervised), recorder, *factories]
    seen = [0]

    def finished(nodes: list[Node]) -> bool:
        if len(nodes) < len(factories):
            return False
        manager = next(n for n in nodes if isinstance(n, EpisodeManagerNode))
        ends = [e for e in manager.events if e["event"] == "end"]
        for event in ends[seen[0]:]:
            if on_episode is not None:
                on_episode(event)
        seen[0] = len(ends)
        if episodes is None or len(ends) < episodes:
            return False
        if not (wait_for_learner and learner is not None and work_dir is not None):
            return True
        return (learner_report(work_dir).trained_episodes >= episodes
                or learner.state == "given_up")

    try:
        nodes = spin_nodes(factories, duration_s, finished)
    finally:
        exit_code = learner.stop() if learner is not None else None
    result = _result(nodes, started=len(nodes) == len(factories))
    if work_dir is not None:
        result.learner = learner_report(work_dir, exit_code, learner)
    return result


def _result(nodes: list[Node], started: bool) -> StackResult:
    result = StackResult(started=started)
    for node in nodes:
        if isinstance(node, EpisodeManagerNode):
            result.events = list(node.events)
        elif isinstance(node, PlannerNode):
            stats = node.stats()
            result.planner_timing, result.planner_holds = stats.timing, stats.holds
            result.swaps, result.refused_swaps = stats.swaps, stats.refused
            result.rollbacks = list(node.weights.swapper.stats.rollbacks)
            result.live_weights = {"path": stats.live_path, "step": stats.live_step}
        elif isinstance(node, RecorderNode):
            recorded = node.stats()
            result.bags = [p.name for p in recorded.written]
            result.recorder_dropped = recorded.dropped
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """`fowm run` (entry point group fowm.commands) and the console script ``stack``."""
    parser = argparse.ArgumentParser(
        prog="fowm run", description=__doc__.splitlines()[0],
        epilog="Two hosts without a shared disk: fowm run --role robot|learner --help "
               "(fowm.roles, docs/two_hosts.md).")
    parser.add_argument("--config", default="config/sim.yaml", help="ROS parameter YAML")
    parser.add_argument("--checkpoint", required=True,
                        help="planner checkpoint (.safetensors); also sets task and obs mode")
    parser.add_argument("--duration", type=float, default=None, help="seconds (default: forever)")
    parser.add_argument("--episodes", type=int, default=None, help="stop after N episodes")
    parser.add_argument("--bag-dir", default=None,
                        help="record one rosbag2 per episode here and finetune on them live")
    parser.add_argument("--dataset", default=None,
                        help="offline dataset for the learner's offline half (with --bag-dir)")
    parser.add_argument("--key-file", default=None,
                        help="lab key signing weight announcements (with --bag-dir; `fowm keygen "
                             "PATH` makes one); default: <bag-dir>/.learner/lab.key, created")
    parser.add_argument("--tracker", default=None, metavar="EXTRINSICS",
                        help="twin in tracker mode: object/goal poses from fowm_tracker's ArUco "
                             "markers, with the extrinsics `fowm calibrate --out FILE` wrote")
    parser.add_argument("--real-mode", action="store_true",
                        help="with --tracker: the episode manager in real mode (rewards from the "
                             "tracker, else the label), the twin as its operator (resets, "
                             "confirms, labels from its truth; docs/rewards.md)")
    clock = parser.add_mutually_exclusive_group()
    clock.add_argument("--lockstep", dest="lockstep", action="store_true", default=None,
                       help="sim owns /clock and waits for each answer (reproducible)")
    clock.add_argument("--realtime", dest="lockstep", action="store_false",
                       help="step the twin at the control rate on the wall clock")
    args = parser.parse_args(argv)
    try:
        result = run_stack(args.config, args.checkpoint, args.duration, args.bag_dir,
                           lockstep=args.lockstep, episodes=args.episodes,
                           overrides={"fowm_learner": {"dataset_dir": args.dataset}}
                           if args.dataset else None, key_file=args.key_file,
                           tracker_extrinsics=args.tracker, real_mode=args.real_mode)
    except FowmError as err:
        print(f"fowm run: {err}", file=sys.stderr)
        return 2
    _print_result(result)
    return 0


def _print_result(result: StackResult) -> None:
    ends = result.ends
    if ends:
        rate = sum(e["success"] for e in ends) / len(ends)
        print(f"{len(ends)} episodes, success rate {rate:.2f}")
    timing = result.planner_timing
    if timing:
        print(f"planner: {timing.get('deadline_misses', 0)} of {timing.get('ticks', 0)} ticks "
              f"missed at {timing.get('rate_hz', 0):.2f} Hz, plan latency median "
              f"{timing.get('latency_ms_median', 0):.0f} ms, p95 "
              f"{timing.get('latency_ms_p95', 0):.0f} ms; holds {result.planner_holds}")
    if result.learner is not None:
        print(f"learner: {len(result.bags)} bags recorded, {result.learner.ingested} trained on, "
              f"step {result.learner.step}; {result.swaps} hot-swaps, "
              f"{len(result.refused_swaps)} refused, {len(result.rollbacks)} rolled back"
              + (f"; restarted {result.learner.restarts} times (exit codes "
                 f"{result.learner.failures})" if result.learner.failures else ""))


if __name__ == "__main__":
    sys.exit(main())
