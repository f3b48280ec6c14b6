"""The learner and the robot on two hosts with no shared disk, on one machine (docs/two_hosts.md).

Two network namespaces joined by a veth pair (benchmarks/netns.py; needs root), each side with
its own directories and /dev/shm. Two parts, JSON to --out (docs/results/two_hosts.json):

1. ``transfers``: checkpoints as the learner writes them (full learner state) for the cpu state,
   cpu rgb and paper (rgb + state) presets, sent over /fowm/weights_blob with Fast DDS's
   LARGE_DATA and its DEFAULT builtin transports; the receiving side stores each as the robot
   does, while a control loop (the cpu preset's MPPI plan at 6.25 Hz) runs beside it: transfer
   time, size, and that loop's ticks during and outside transfers.
2. ``loop``: the demo's loop split in two (`fowm run --role robot|learner`): reach, a scripted
   dataset, pretraining, success before; online episodes with the link cut for --cut-s seconds
   (`ip link set DEV down`) in the middle; success after with the weights the robot swapped in.
   A robot-only run of the same episodes first is the deadline-miss baseline.

    sudo .venv/bin/python benchmarks/two_hosts.py --out docs/results/two_hosts.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

if __package__ in (None, ""):          # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.netns import LEARNER, ROBOT, TwoHosts

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
PRESETS = (("cpu", "state"), ("cpu", "rgb"), ("paper", "all"))
ENV = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1",
       "ROS_DOMAIN_ID": "42"}


def _log(text: str) -> None:
    print(f"[two_hosts {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- part 1: transfers ------------------------------------------------------------------------
def make_checkpoints(out: Path) -> list[Path]:
    from fowm_core.jobs import workflows
    from fowm_core.learning import agent as agents
    from fowm_core.learning.agent import Agent

    paths = []
    for preset, mode in PRESETS:
        agent = Agent.create(workflows.preset_for(preset, "reach", mode), seed=0)
        paths.append(agents.save(agent, out / f"{preset}_{mode}.safetensors", {}).path)
    return paths


def serve_receiver(out: Path, seconds: float) -> None:
    """Robot side: store every received checkpoint (as fowm_robot_link) and acknowledge it, with
    the cpu-preset planner ticking at 6.25 Hz in a control thread beside it."""
    import rclpy
    import torch
    from fowm.ros.timing import FixedRateLoop
    from fowm.ros.transfer import BlobReceiver
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    from fowm_core.contract import topics
    from fowm_core.jobs import bench, workflows
    from fowm_core.model import WorldModel
    from fowm_core.planner.mppi import Planner
    from fowm_core.runtime.remote import WeightsInbox

    torch.set_num_threads(1)
    cfg = workflows.preset_for("cpu", "reach", "state")
    gen = torch.Generator().manual_seed(0)
    planner = Planner(WorldModel(cfg.model).eval(), cfg, gen)
    obs = bench.random_obs(cfg, gen)
    rclpy.init()
    node = rclpy.create_node("bench_receiver")
    inbox = WeightsInbox(Path(tempfile.mkdtemp(prefix="store-")), None, keep=1)
    ack = node.create_publisher(String, "/bench/ack", 10)
    received: list[dict[str, Any]] = []
    ticks: list[tuple[float, float, float, bool]] = []

    def stored(done: Any) -> None:
        start = time.monotonic()
        inbox.accept(done.meta, done.payload)
        store_s = time.monotonic() - start
        received.append({"id": done.id, "bytes": len(done.payload), "transfer_s": done.seconds,
                         "store_s": store_s, "wall_s": time.time()})
        ack.publish(String(data=done.id))

    rx = BlobReceiver(node, topics.WEIGHTS_BLOB, "weights", 256 << 20, 30.0, stored)
    loop = FixedRateLoop(0.16, lambda t: planner.plan(obs, t0=False, eval_mode=False))
    loop.stats.listener = lambda t, end, missed: ticks.append(
        (time.time() - (time.monotonic() - t.started_s), t.started_s - t.scheduled_s,
         end - t.started_s, missed))
    loop.start()
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    stop = time.monotonic() + seconds
    while time.monotonic() < stop and not (out.parent / "sender.done").exists():
        ex.spin_once(timeout_sec=0.05)
    loop.stop()
    rx.close()
    out.write_text(json.dumps({"received": received, "ticks": ticks,
                               "refused": list(rx.refused)}))
    rclpy.try_shutdown()


def serve_sender(paths: list[Path], repeats: int, done_file: Path, chunk_kib: int) -> None:
    """Learner side: each checkpoint ``repeats`` times, the next once the last was stored."""
    import rclpy
    from fowm.ros.transfer import BlobSender
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    from fowm_core.contract import topics
    from fowm_core.runtime.remote import checkpoint_files

    rclpy.init()
    node = rclpy.create_node("bench_sender")
    acks: list[str] = []
    end_to_end: dict[str, float] = {}
    node.create_subscription(String, "/bench/ack", lambda m: acks.append(m.data), 10)
    tx = BlobSender(node, topics.WEIGHTS_BLOB, "weights", chunk_bytes=chunk_kib << 10)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    spin = threading.Thread(target=lambda: [ex.spin_once(timeout_sec=0.05)
                                            for _ in iter(lambda: done_file.exists(), True)],
                            daemon=True)
    spin.start()
    deadline = time.monotonic() + 60
    while tx.pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(3.0)                   # the receiver's loop warms up: idle ticks first
    for path in paths:
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        note = {"path": path.name, "sha256": sha, "step": 1}
        for i in range(repeats):
            tid = f"{path.stem}#{i}"
            start = time.monotonic()
            tx.send(lambda tid=tid, path=path, note=note: (tid, *checkpoint_files(path, note)))
            until = time.monotonic() + 90
            while tid not in acks and time.monotonic() < until:
                time.sleep(0.01)
            if tid in acks:        # read, framed, sent, rebuilt, stored and acknowledged
                end_to_end[tid] = time.monotonic() - start
            time.sleep(2.0)            # idle ticks between transfers
    time.sleep(2.0)
    done_file.with_suffix(".json").write_text(json.dumps(end_to_end))
    done_file.write_text("done")
    tx.close()
    rclpy.try_shutdown()


def transfers(work: Path, repeats: int, transports: list[str], chunk_kib: int) -> dict[str, Any]:
    ckpts = make_checkpoints(work / "ckpts")
    sizes = {p.stem: p.stat().st_size + p.with_suffix(".json").stat().st_size for p in ckpts}
    out: dict[str, Any] = {"checkpoint_bytes": sizes, "frame_kib": chunk_kib, "runs": {}}
    for transport in transports:
        run = work / f"tx_{transport.replace('?', '_').replace('=', '_')}"
        run.mkdir()
        env = {**ENV, "FASTDDS_BUILTIN_TRANSPORTS": transport}
        _log(f"transfers with {transport}")
        with TwoHosts() as hosts, (run / "rx.log").open("w") as rlog, \
                (run / "tx.log").open("w") as tlog:
            rx = hosts.start(ROBOT, [PY, __file__, "--receiver", str(run / "rx.json")], env, rlog)
            time.sleep(3.0)
            tx = hosts.start(LEARNER, ["nice", "-n", "10", PY, __file__, "--sender",
                                       str(run / "sender.done"), "--repeats", str(repeats),
                                       "--chunk-kib", str(chunk_kib),
                                       *map(str, ckpts)], env, tlog)
            tx.wait(600)
            rx.wait(120)
        data = json.loads((run / "rx.json").read_text())
        data["end_to_end"] = json.loads((run / "sender.json").read_text())
        out["runs"][transport] = summarize_transfers(data, sizes)
    return out


def summarize_transfers(data: dict[str, Any], sizes: dict[str, int]) -> dict[str, Any]:
    from fowm.roles import tick_windows

    rows: dict[str, list[dict[str, Any]]] = {}
    for rec in data["received"]:
        rows.setdefault(rec["id"].split("#")[0], []).append(rec)
    per = {name: {"bytes": sizes[name], "received": len(rs),
                  "transfer_s": [round(r["transfer_s"], 3) for r in rs],
                  "end_to_end_s": [round(data["end_to_end"].get(r["id"], -1), 3) for r in rs],
                  "store_s": [round(r["store_s"], 3) for r in rs],
                  "MB_per_s": [round(r["bytes"] / 1e6 / max(r["transfer_s"], 1e-6), 1)
                               for r in rs]} for name, rs in rows.items()}
    return {"per_checkpoint": per, "refused": data["refused"],
            "control_ticks": tick_windows(data["ticks"], data["received"])}


# -- part 2: the loop with a partition ----------------------------------------------------------
def run_loop(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from fowm_core.jobs import workflows
    from fowm_core.runtime.trust import generate_key

    workflows.set_threads(1)
    shared = work / "setup"
    data = shared / "data"
    _log(f"dataset ({args.offline_episodes} episodes) and pretraining ({args.offline_steps})")
    workflows.collect("reach", args.offline_episodes, data, noise=0.6, seed=0, progress=False)
    cfg = workflows.preset_for("cpu", "reach", "state").with_overrides(
        {"schedule": {"offline_steps": args.offline_steps}})
    pre = Path(workflows.run_pretrain(cfg, data, shared / "pretrain", seed=0)["checkpoint"])
    before = workflows.run_eval(workflows.load(pre, seed=0), args.eval_episodes, 10_000_000)
    key = generate_key(shared / "lab.key")
    robot, learner = work / "robot", work / "learner"
    for side in (robot, learner):
        side.mkdir()
        for src in (pre, pre.with_suffix(".json"), key):
            shutil.copy(src, side / src.name)
        os.chmod(side / key.name, 0o600)
    shutil.copytree(data, learner / "dataset")
    site = work / "site.yaml"
    site.write_text(yaml.safe_dump({
        "fowm_sim": {"ros__parameters": {"episode_length": 25}},
        "fowm_planner": {"ros__parameters": {"eval_mode": False, "max_obs_age_s": 0.48}},
        "fowm_episode_manager": {"ros__parameters": {"episode_length": 25,
                                                     "base_seed": 1_000_000,
                                                     "service_timeout_s": 60.0}}}))
    env = dict(ENV)                     # the roles choose the DDS transports (fowm.ros.transports)
    config = str(REPO / "config" / "sim.yaml")

    def robot_argv(bags: Path, episodes: int, summary: Path, *more: str) -> list[str]:
        return [*more, str(Path(PY).parent / "fowm"), "run", "--role", "robot", "--config", config,
                "--site-config", str(site), "--checkpoint", str(robot / pre.name),
                "--bag-dir", str(bags), "--key-file", str(robot / key.name), "--episodes",
                str(episodes), "--duration", "1200", "--summary", str(summary)]

    with TwoHosts() as hosts:
        _log(f"baseline: the robot alone, {args.baseline_episodes} episodes")
        with (robot / "baseline.log").open("w") as log:
            hosts.start(ROBOT, robot_argv(robot / "baseline_bags", args.baseline_episodes,
                                          robot / "baseline.json"), env, log).wait(900)
        _log(f"two hosts: {args.online_episodes} online episodes, link cut for {args.cut_s} s")
        with (learner / "learner.log").open("w") as llog, (robot / "robot.log").open("w") as rlog:
            lp = hosts.start(LEARNER, [
                "nice", "-n", "10", str(Path(PY).parent / "fowm"), "run", "--role", "learner",
                "--config", config, "--checkpoint", str(learner / pre.name),
                "--bag-dir", str(learner / "bags"), "--dataset", str(learner / "dataset"),
                "--key-file", str(learner / key.name), "--summary",
                str(learner / "summary.json")], env, llog)
            _wait_for(learner / "learner.log", "learning reach from", 180)
            rp = hosts.start(ROBOT, [*robot_argv(robot / "bags", args.online_episodes,
                                                 robot / "summary.json"), "--stay"], env, rlog)
            _wait_for(robot / "robot.log", f'"episode": {args.online_episodes // 3}, '
                      '"event": "start"', 600)
            hosts.cut()
            time.sleep(args.cut_s)
            hosts.restore()
            final = _wait_learner_done(learner / "bags" / ".learner", args.online_episodes, 900)
            _wait_for(robot / "robot.log", f"hot-swapped to {final}", 90)
            hosts.stop(rp)
            hosts.stop(lp)
        events = hosts.events
    r = json.loads((robot / "summary.json").read_text())
    w = json.loads((learner / "summary.json").read_text())
    base = json.loads((robot / "baseline.json").read_text())
    final = robot / "bags" / ".weights" / r["live_weights"]["path"]
    after = workflows.run_eval(workflows.load(final, seed=0), args.eval_episodes, 10_000_000) \
        if final.is_file() else None
    return loop_summary(r, w, base, events, before, after, args)


def _wait_for(log: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and text not in log.read_text():
        time.sleep(0.5)


def _wait_learner_done(work_dir: Path, episodes: int, timeout_s: float) -> str:
    """The file name of the learner's checkpoint that holds every episode."""
    from fowm.bringup import learner_report

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        report = learner_report(work_dir)
        if report.trained_episodes >= episodes and report.checkpoint:
            return Path(report.checkpoint).name
        time.sleep(2.0)
    return "(the learner did not finish in time)"


def loop_summary(r: dict[str, Any], w: dict[str, Any], base: dict[str, Any],
                 events: list[dict[str, Any]], before: Any, after: Any,
                 args: argparse.Namespace) -> dict[str, Any]:
    down = next(e["wall_s"] for e in events if e["event"] == "link down")
    up = next(e["wall_s"] for e in events if e["event"] == "link up")
    misses_in_cut = [m for m in r["missed_ticks"] if down <= m["wall_s"] <= up + 5]
    # Each side's own link status as seen on its /diagnostics during the cut.
    warn = {side: [d for d in s["diagnostics"] if d["level"] == 1 and down <= d["wall_s"] <= up
                   and d["name"].startswith(f"fowm_{side}_link")]
            for side, s in (("robot", r), ("learner", w))}
    return {
        "task": "reach", "online_episodes": args.online_episodes, "cut_s": args.cut_s,
        "success_before": before.success_rate,
        "success_after": after.success_rate if after is not None else None,
        "eval_episodes": args.eval_episodes, "swaps": r["swaps"], "refused": r["refused"],
        "rollbacks": r["rollbacks"], "live_weights": r["live_weights"],
        "deadline_misses": r["planner_timing"]["deadline_misses"],
        "ticks": r["planner_timing"]["ticks"], "planner_timing": r["planner_timing"],
        "missed_ticks": r["missed_ticks"], "deadline_misses_during_cut": len(misses_in_cut),
        "baseline_robot_alone": {"ticks": base["planner_timing"]["ticks"],
                                 "deadline_misses": base["planner_timing"]["deadline_misses"]},
        "episodes_recorded": len(r["bags"]), "episodes_received": len(w["bags_received"]),
        "episodes_ingested": len(w["ingested"]), "ingested_unique": w["ingested_unique"],
        "lost": sorted(set(r["bags"]) - set(w["ingested"])),
        "duplicated": len(w["ingested"]) - len(set(w["ingested"])),
        "bag_sends": r["bag_sends"], "bags_shipped": r["bags_shipped"],
        "partition_seen": {"robot": r["partitions"], "learner": w.get("partitions")},
        "partition_diagnostics": {side: [d["message"] for d in ds][:3]
                                  for side, ds in warn.items()},
        "link_events": events,
        "weights_received": r["weights_received"],
        "ticks_during_transfers": r["ticks_during_transfers"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/results/two_hosts.json")
    p.add_argument("--parts", default="transfers,loop")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--transports", default="LARGE_DATA?non_blocking=true,LARGE_DATA,DEFAULT",
                   help="transfers: FASTDDS_BUILTIN_TRANSPORTS values, comma-separated")
    p.add_argument("--chunk-kib", type=int, default=512, help="transfers: frame size")
    p.add_argument("--offline-episodes", type=int, default=30)
    p.add_argument("--offline-steps", type=int, default=600)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--baseline-episodes", type=int, default=3)
    p.add_argument("--online-episodes", type=int, default=12)
    p.add_argument("--cut-s", type=float, default=30.0)
    p.add_argument("--receiver", default=None, help=argparse.SUPPRESS)
    p.add_argument("--sender", default=None, help=argparse.SUPPRESS)
    p.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.receiver:
        serve_receiver(Path(args.receiver), 900.0)
        return 0
    if args.sender:
        serve_sender([Path(x) for x in args.paths], args.repeats, Path(args.sender),
                     args.chunk_kib)
        return 0
    work = Path(tempfile.mkdtemp(prefix="fowm-two-hosts-"))
    out: dict[str, Any] = {"uptime_start": _uptime(), "nice": os.nice(0),
                           "cpus": os.cpu_count()}
    start = time.monotonic()
    try:
        if "transfers" in args.parts:
            out["transfers"] = transfers(work, args.repeats, args.transports.split(","),
                                         args.chunk_kib)
        if "loop" in args.parts:
            out["loop"] = run_loop(work, args)
    finally:
        out["uptime_end"], out["seconds"] = _uptime(), round(time.monotonic() - start, 1)
        Path(args.out).write_text(json.dumps(out, indent=1, default=str) + "\n")
        _log(f"wrote {args.out}; work files in {work}")
    return 0


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
