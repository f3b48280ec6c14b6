"""`fowm run --role robot|learner`: the loop on two hosts that share no disk (docs/two_hosts.md).

- ``--role robot`` (the PC next to the arm): twin (or arm) + planner + episode manager and the
  recorder writing one bag per episode locally, in one process that uses shared memory only and
  so reaches this host only; and fowm_robot_link in a process of its own, the one that talks to
  the learner's host: it ships the bags there and stores received checkpoints in ``--store``
  (the planner's trusted directory). A send to a host behind a cut link can block inside DDS;
  then it stalls the link, never the control loop (fowm.ros.transports).
- ``--role learner`` (the GPU workstation): fowm_learner_link receiving bags into ``--bag-dir``
  and the learner (its own process, supervised, nice 10) training on them and sending each
  checkpoint's bytes to the robot (``weights_link``).
Without ``--role`` (or ``--role all``) it is the one-host `fowm run` of fowm.bringup. Both roles
need the same lab key (``--key-file``; `fowm keygen` on one host, copied 0600 to the other).
``--summary FILE`` writes what the run did as JSON (the two-host test and benchmark read it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node

from fowm import bringup
from fowm.nodes.learner_link import LearnerLinkNode
from fowm.nodes.planner_node import PlannerNode
from fowm.ros import qos, transports
from fowm.ros.spin import spin_nodes
from fowm.ros.supervisor import SupervisedProcess, SupervisorNode
from fowm_core.contract import topics
from fowm_core.errors import ConfigError, FowmError
from fowm_core.runtime.ledger import BagLedger

ROLES = ("all", "robot", "learner")
LINK_STATUS = ("fowm_robot_link", "fowm_learner_link")


class DiagnosticsLog(Node):
    """Node ``fowm_role_watch``: each change of a link status seen on /diagnostics, for --summary
    (what an operator's rqt_robot_monitor would show)."""

    def __init__(self) -> None:
        super().__init__("fowm_role_watch")
        self.changes: list[dict[str, Any]] = []
        self._last: dict[str, tuple[int, str]] = {}
        self.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on, qos.DIAGNOSTICS)

    def _on(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if not status.name.startswith(LINK_STATUS):
                continue
            level = int.from_bytes(status.level, "little") if isinstance(
                status.level, bytes) else int(status.level)
            state = (level, status.message.split(";")[0])
            if self._last.get(status.name, (None, None))[0] != level:
                self.changes.append({"wall_s": time.time(), "name": status.name,
                                     "level": level, "message": status.message})
            self._last[status.name] = state


def _check_key(key_file: str | None, role: str) -> str:
    if not key_file or not Path(key_file).is_file():
        msg = (f"--role {role} needs --key-file, the lab key both hosts share (got "
               f"{key_file!r}): create it with `fowm keygen PATH` on one host and copy it "
               "(mode 0600) to the same path on the other")
        raise ConfigError(msg)
    return str(Path(key_file).resolve())


def run_robot(args: argparse.Namespace) -> dict[str, Any]:
    """The robot PC's stack until --duration, or --episodes and --swaps are reached."""
    key = _check_key(args.key_file, "robot")
    bag_dir = Path(args.bag_dir)
    store = Path(args.store or bag_dir / ".weights")
    overrides: bringup.Overrides = {
        "fowm_planner": {"trust.key_file": key, "trust.trusted_dir": str(store)}}
    if args.episodes is not None:
        overrides["fowm_episode_manager"] = {"num_episodes": args.episodes}
    # fowm_robot_link is the one process here that talks to the other host; this one (control)
    # reaches this host only, so no send of its own can wait on the link (fowm.ros.transports).
    link_env = {**os.environ, **transports.link_env(os.environ), "OMP_NUM_THREADS": "1"}
    _replace_env(transports.CONTROL_ENV)
    os.environ.pop(transports.PEERS, None)
    report_file = bag_dir / ".robot_link.json"
    report_file.unlink(missing_ok=True)
    link_values = {"bag_dir": bag_dir, "store_dir": store, "key_file": key,
                   "report_file": report_file, **_link_params(args)}
    files = [f for f in (args.config, args.site_config) if f]
    link = SupervisedProcess("fowm_robot_link", lambda: bringup.spawn_node_process(
        "fowm.nodes.robot_link", link_values, files, link_env))
    rclpy.init(args=_ros_args(args))
    link.start()
    ticks: list[tuple[float, float, float, bool]] = []
    watch: list[DiagnosticsLog] = []

    def planner() -> Node:
        node = bringup.stack_factories(args.checkpoint, args.lockstep, overrides)[1]()
        assert isinstance(node, PlannerNode)
        node.loop.stats.listener = lambda t, end, missed: ticks.append(
            (time.time() - (time.monotonic() - t.started_s), t.started_s - t.scheduled_s,
             end - t.started_s, missed))
        return node

    sim, _, manager = bringup.stack_factories(args.checkpoint, args.lockstep, overrides)
    recorder = bringup.loop_factories(bag_dir, args.checkpoint,
                                      {"fowm_recorder": {"key_file": key}})[0]
    # The recorder first, so it hears every episode event.
    factories = [lambda: watch.append(DiagnosticsLog()) or watch[0], recorder, sim, planner,
                 manager, lambda: SupervisorNode(link)]

    def done(nodes: list[Node]) -> bool:
        if len(nodes) < len(factories) or args.episodes is None or args.stay:
            return False
        result = bringup._result(nodes, True)
        if len(result.ends) < args.episodes or result.swaps < args.swaps:
            return False
        # When swaps are awaited (a learner is there): every bag acknowledged by its host too.
        return args.swaps == 0 or read_report(report_file).get("bags_shipped", 0) >= args.episodes

    try:
        nodes = spin_nodes(factories, args.duration, done)
    finally:
        link_exit = link.stop()
    result = bringup._result(nodes, started=len(nodes) == len(factories))
    out: dict[str, Any] = {
        "role": "robot", "started": result.started,
        "success": [bool(e["success"]) for e in result.ends],
        "planner_timing": result.planner_timing, "planner_holds": result.planner_holds,
        "swaps": result.swaps, "refused": result.refused_swaps, "rollbacks": result.rollbacks,
        "live_weights": result.live_weights, "bags": sorted(result.bags),
        "recorder_dropped": result.recorder_dropped,
        "diagnostics": watch[0].changes if watch else [],
        "link_exit_code": link_exit, "link_restarts": link.restarts}
    report = read_report(report_file)
    out.update(report)
    out["ticks_during_transfers"] = tick_windows(ticks, report.get("weights_received", []))
    out["missed_ticks"] = [{"wall_s": t[0], "lateness_ms": t[1] * 1e3, "work_ms": t[2] * 1e3,
                            "index": i} for i, t in enumerate(ticks) if t[3]]
    out["first_tick_wall_s"] = ticks[0][0] if ticks else None
    return out


def read_report(path: Path) -> dict[str, Any]:
    """The robot link's report (written atomically by its process); {} before the first one."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def tick_windows(ticks: list[tuple[float, float, float, bool]],
                 transfers: list[dict[str, Any]]) -> dict[str, Any]:
    """Tick latency and misses inside the windows where a checkpoint was received and stored,
    and outside them (wall clock of this host)."""
    windows = [(t["wall_s"] - t["transfer_s"] - t["store_s"], t["wall_s"]) for t in transfers]

    def summary(rows: list[tuple[float, float, float, bool]]) -> dict[str, Any]:
        work = np.array([r[2] for r in rows]) * 1e3
        late = np.array([r[1] for r in rows]) * 1e3
        return {"ticks": len(rows), "deadline_misses": sum(r[3] for r in rows),
                "latency_ms_median": float(np.median(work)) if len(work) else None,
                "latency_ms_max": float(work.max()) if len(work) else None,
                "lateness_ms_max": float(late.max()) if len(late) else None}

    inside = [r for r in ticks if any(a - 0.2 <= r[0] <= b + 0.2 for a, b in windows)]
    outside = [r for r in ticks if r not in inside]
    return {"during": summary(inside), "otherwise": summary(outside)}


def run_learner(args: argparse.Namespace) -> dict[str, Any]:
    """The learner's host until --duration or SIGINT/SIGTERM."""
    key = _check_key(args.key_file, "learner")
    if not args.dataset:
        msg = "--role learner needs --dataset DIR, the offline dataset the checkpoint came from"
        raise ConfigError(msg)
    bag_dir = Path(args.bag_dir)
    work_dir = Path(args.work_dir or bag_dir / ".learner")
    params = {"key_file": key, "weights_link": True, "dataset_dir": str(args.dataset),
              "work_dir": str(work_dir)}
    files = [f for f in (args.config, args.site_config) if f]
    learner = SupervisedProcess("fowm_learner", lambda: bringup.spawn_learner_process(
        bag_dir, args.checkpoint, params, files))
    _replace_env(transports.link_env(os.environ))    # before the learner process inherits it
    rclpy.init(args=_ros_args(args))
    learner.start()
    watch: list[DiagnosticsLog] = []
    factories = [lambda: watch.append(DiagnosticsLog()) or watch[0],
                 lambda: SupervisorNode(learner),
                 bringup._factory(LearnerLinkNode, {"bag_dir": str(bag_dir),
                                                    **_link_params(args, robot=False)})]
    try:
        nodes = spin_nodes(factories, args.duration)
    finally:
        exit_code = learner.stop()
    link = next((n for n in nodes if isinstance(n, LearnerLinkNode)), None)
    report = bringup.learner_report(work_dir, exit_code, learner)
    ledger = BagLedger(work_dir / "ledger.json") if (work_dir / "ledger.json").is_file() else None
    names = [e.name for e in ledger.ingested] if ledger else []
    out: dict[str, Any] = {
        "role": "learner", "checkpoint": report.checkpoint, "step": report.step,
        "ingested": sorted(names), "ingested_unique": len(set(names)) == len(names),
        "trained_episodes": report.trained_episodes, "exit_code": exit_code,
        "restarts": report.restarts, "diagnostics": watch[0].changes if watch else []}
    if link is not None:
        w = link.link.watch
        out.update(bags_received=sorted(link.inbox.received), acks=len(link.acked),
                   refused=list(link.episodes.refused), partitions=w.partitions,
                   longest_partition_s=w.longest_s)
    return out


def _replace_env(values: dict[str, str]) -> None:
    """Set the two-host roles' DDS variables, saying so where they replace the user's."""
    for name, value in values.items():
        old = os.environ.get(name)
        if old and old != value:
            print(f"fowm run: {name}={old} replaced by {value} in this process (two-host "
                  "roles, docs/two_hosts.md)", file=sys.stderr)
        os.environ[name] = value


def _link_params(args: argparse.Namespace, robot: bool = True) -> dict[str, Any]:
    values: dict[str, Any] = {"peer_timeout_s": args.peer_timeout}
    if robot and args.chunk_kib:
        values["chunk_bytes"] = args.chunk_kib << 10
    return values


def _ros_args(args: argparse.Namespace) -> list[str]:
    out = ["--ros-args"]
    for file in (args.config, args.site_config):
        if file:
            if not Path(file).is_file():
                msg = f"parameter file {file} does not exist; pass e.g. --config config/sim.yaml"
                raise ConfigError(msg)
            out += ["--params-file", str(file)]
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fowm run --role", description=__doc__.splitlines()[0])
    p.add_argument("--role", choices=ROLES, required=True)
    p.add_argument("--config", default="config/sim.yaml", help="ROS parameter YAML")
    p.add_argument("--site-config", default=None, help="YAML layered over --config")
    p.add_argument("--checkpoint", required=True, help="pretrained checkpoint (.safetensors)")
    p.add_argument("--bag-dir", required=True,
                   help="robot: where the recorder writes bags; learner: where they arrive")
    p.add_argument("--store", default=None, help="robot: received checkpoints (the planner's "
                   "trusted dir); default <bag-dir>/.weights")
    p.add_argument("--work-dir", default=None, help="learner: default <bag-dir>/.learner")
    p.add_argument("--dataset", default=None, help="learner: the offline dataset")
    p.add_argument("--key-file", default=None, help="the lab key, the same on both hosts")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: forever)")
    p.add_argument("--episodes", type=int, default=None, help="robot: stop after N episodes")
    p.add_argument("--swaps", type=int, default=0,
                   help="robot: and after K hot-swaps and every bag acknowledged")
    p.add_argument("--stay", action="store_true",
                   help="robot: keep running after --episodes (until --duration or SIGINT)")
    p.add_argument("--peer-timeout", type=float, default=3.0,
                   help="seconds without the other host's heartbeat before a partition is reported")
    p.add_argument("--chunk-kib", type=int, default=0, help="robot link frame size (KiB)")
    p.add_argument("--summary", default=None, help="write what the run did as JSON here")
    clock = p.add_mutually_exclusive_group()
    clock.add_argument("--lockstep", dest="lockstep", action="store_true", default=None)
    clock.add_argument("--realtime", dest="lockstep", action="store_false")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """`fowm run` (entry point group fowm.commands): ``--role robot|learner``, else fowm.bringup."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--role", default="all")
    known, _ = pre.parse_known_args(argv)
    if known.role == "all":
        return bringup.main([a for a in argv if a not in ("--role", "all", "--role=all")])
    args = build_parser().parse_args(argv)
    try:
        out = run_robot(args) if args.role == "robot" else run_learner(args)
    except FowmError as err:
        print(f"fowm run: {err}", file=sys.stderr)
        return 2
    if args.summary:
        Path(args.summary).write_text(json.dumps(out, indent=1, default=str))
    print(json.dumps({k: v for k, v in out.items() if not isinstance(v, list | dict)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
