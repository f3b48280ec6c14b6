"""Processes SIGKILLed at bad moments (benchmarks/fault_suite.py): the planner mid-run, the twin
mid-episode, the recorder mid-episode, the learner while it writes checkpoints.

`fowm run` composes the nodes in one process, so the node to kill runs as its own process, as
`ros2 run fowm <node>` starts it: ``python -m fowm.nodes.<node> --ros-args -p ...`` (each node
module's ``main``). Its peers run in this process (real rclpy, fault_nodes.Context) and are
watched directly: what the twin executed, what the planner published, the bags on disk.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from fowm.ros import qos
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from benchmarks import fault_inputs as fi
from benchmarks import fault_planner as fp
from benchmarks.fault_nodes import Context
from fowm_core.contract import topics


def _row(*args: Any, **kw: Any) -> Any:
    from benchmarks.fault_suite import Row
    return Row(*args, **kw)


def node_process(module: str, log: Path | None = None, **params: Any) -> subprocess.Popen:
    """``ros2 run fowm <module>`` without the ros2 CLI: the node's own process (its log to
    ``log``)."""
    argv = [sys.executable, "-m", f"fowm.nodes.{module}", "--ros-args"]
    for k, v in params.items():
        argv += ["-p", f"{k}:={v}"]
    out = subprocess.DEVNULL if log is None else log.open("w")
    return subprocess.Popen(argv, env=dict(os.environ), stdout=out, stderr=out)


def _logged(log: Path, text: str) -> bool:
    return log.exists() and text in log.read_text(errors="replace")


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


class Diagnostics:
    def __init__(self, node: Node) -> None:
        self.statuses: list[Any] = []
        node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS,
                                 lambda m: self.statuses.extend(m.status), qos.DIAGNOSTICS)

    def said(self, prefix: str, words: str, since: int = 0) -> str:
        for s in self.statuses[since:]:
            if s.name.startswith(prefix) and s.level != 0 and words in s.message:
                return s.message
        return ""


def planner_killed(root: Path) -> Any:
    """The twin (here) executes the planner's (own process) commands; the planner is killed."""
    from fowm.nodes.sim_node import SimNode
    t0, ckpt = time.monotonic(), fp.tiny_checkpoint(root / "rgb.safetensors")
    ctx = Context()
    sim = SimNode(parameter_overrides=[Parameter("checkpoint", value=str(ckpt)),
                                       Parameter("episode_length", value=100000)])
    watcher = Node("fault_watch")
    diags = Diagnostics(watcher)
    executed: list[tuple[float, np.ndarray]] = []
    step = sim._step
    sim._step = lambda a: (executed.append((time.monotonic(), np.array(a))), step(a))[1]
    for n in (sim, watcher):
        ctx.executor.add_node(n)
    proc = node_process("planner_node", checkpoint=ckpt, rate_hz=6.25, max_obs_age_s=0.5)
    try:
        ctx.spin(120.0, until=lambda: sum(bool(np.any(a)) for _, a in executed) >= 3)
        moving = sum(bool(np.any(a)) for _, a in executed)
        time.sleep(random.uniform(0.0, 0.16))       # anywhere in the twin's tick
        t_kill, steps0, mark = time.monotonic(), sim.steps, len(diags.statuses)
        _kill(proc)
        ctx.spin(3.0)
        late = t_kill + sim.params.command_timeout_s + 0.2       # + one tick in flight
        stale = sum(1 for t, a in executed if t > late and np.any(a))
        published = sim.steps - steps0
        said = diags.said("fowm_sim", "no command", mark)
    finally:
        _kill(proc)
        ctx.close([watcher, sim])
    holds = moving >= 3 and stale == 0 and published >= 10 and bool(said)
    return _row("planner SIGKILLed mid-run (planner: python -m fowm.nodes.planner_node; twin "
                "in this process)",
                "the twin holds within command_timeout_s (no stale command executed), keeps "
                "publishing, /diagnostics says it holds",
                f"{moving} commands executed before; after the kill {stale} non-zero commands "
                f"executed later than timeout + 1 tick; {published} steps published in 3 s; "
                f"diagnostics: {said or 'NOTHING'}", holds, crashes=0, bad_commands=stale,
                seconds=round(time.monotonic() - t0, 1))


def twin_killed(root: Path) -> Any:
    """The planner (here) plans on the twin's (own process) observations; the twin is killed."""
    from fowm.nodes.planner_node import PlannerNode
    t0, ckpt = time.monotonic(), fp.tiny_checkpoint(root / "rgb.safetensors")
    ctx = Context()
    planner = PlannerNode(parameter_overrides=[Parameter("checkpoint", value=str(ckpt)),
                                               Parameter("rate_hz", value=6.25),
                                               Parameter("max_obs_age_s", value=0.5)])
    watcher = Node("fault_watch")
    diags = Diagnostics(watcher)
    actions: list[JointState] = []
    watcher.create_subscription(JointState, topics.ACTION, actions.append, qos.COMMAND)
    for n in (planner, watcher):
        ctx.executor.add_node(n)
    proc = node_process("sim_node", checkpoint=ckpt, episode_length=100000)
    try:
        ctx.spin(120.0, until=lambda: planner.counters.plans >= 5)
        c = planner.counters
        plans0, holds0, n0 = c.plans, dict(c.holds_by_reason), len(actions)
        mark = len(diags.statuses)
        _kill(proc)
        ctx.spin(0.5 + 0.4)                   # max_obs_age_s + one tick: then it must hold
        plans1 = c.plans
        ctx.spin(2.5)
        stale = c.holds_by_reason.get("stale", 0) - holds0.get("stale", 0)
        late_plans = c.plans - plans1
        bad = sum(1 for m in actions[n0:] if not all(
            np.isfinite(v) and -1.0 <= v <= 1.0 for v in m.position))
        said = diags.said("fowm_planner", "s old", mark)
        alive = planner.loop.is_running
    finally:
        _kill(proc)
        ctx.close([watcher, planner])
    holds = late_plans == 0 and stale >= 5 and bad == 0 and alive and bool(said)
    return _row("twin SIGKILLed mid-episode (twin: python -m fowm.nodes.sim_node; planner in "
                "this process)",
                "the planner holds on stale observations (no plan on them), keeps ticking, "
                "/diagnostics says how old (WARN)",
                f"{plans0} plans before; {late_plans} plans after max_obs_age_s + 1 tick; "
                f"{stale} stale holds; bad commands {bad}; diagnostics: "
                f"{said[:100] or 'NOTHING'}", holds, crashes=0, bad_commands=bad,
                seconds=round(time.monotonic() - t0, 1))


def _feed_episode(ctx: Context, pubs: dict[str, Any], events: Any, episode: int,
                  seconds: float, end: bool) -> None:
    """One episode as the stack publishes it: start, every stream at 10 Hz, end (if ``end``)."""
    node = pubs["node"]
    first = node.get_clock().now().nanoseconds
    events.publish(String(data=json.dumps({"event": "start", "task": "lift",
                                           "episode": episode, "seed": episode})))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ns = node.get_clock().now().nanoseconds
        for topic, pub in pubs.items():
            if topic != "node":
                pub.publish(NORMAL_MSGS[topic](ns))
        ctx.spin(0.1)
    if end:
        events.publish(String(data=json.dumps({
            "event": "end", "task": "lift", "episode": episode, "steps": 10,
            "first_stamp_ns": first, "final_stamp_ns": node.get_clock().now().nanoseconds})))


NORMAL_MSGS = {topics.JOINT_STATES: fi.joints, topics.EE_POSE: fi.pose,
               topics.COLOR_IMAGE: fi.image, topics.ACTION: fi.action}


def recorder_killed(root: Path) -> Any:
    """Episode 1 completes and is written; the recorder (own process) dies in episode 2; a new
    recorder records episode 3. Which bags would the learner take (scan_bag_dir)?"""
    from rosbags.rosbag2 import Reader

    from fowm_core.data.bag_cache import scan_bag_dir
    t0, bag_dir = time.monotonic(), root / "bags"
    root.mkdir(parents=True, exist_ok=True)
    ctx = Context()
    node = Node("fault_stack")
    types = {topics.JOINT_STATES: JointState, topics.EE_POSE: fi.PoseStamped,
             topics.COLOR_IMAGE: fi.Image, topics.ACTION: JointState}
    pubs: dict[str, Any] = {t: node.create_publisher(m, t, qos.COMMAND if t == topics.ACTION
                                                     else qos.SENSOR_PUB)
                            for t, m in types.items()}
    pubs["node"] = node
    events = node.create_publisher(String, topics.EPISODE, qos.EVENTS)
    ctx.executor.add_node(node)
    logs = [root / "recorder1.log", root / "recorder2.log"]
    procs = [node_process("recorder_node", logs[0], bag_dir=bag_dir, grace_s=0.2)]
    written = lambda: scan_bag_dir(bag_dir)[0] if bag_dir.is_dir() else []  # noqa: E731
    try:
        ctx.spin(120.0, until=lambda: _logged(logs[0], "recording"))
        ctx.spin(1.0)
        _feed_episode(ctx, pubs, events, 1, 1.5, end=True)
        ctx.spin(15.0, until=lambda: len(written()) >= 1)
        _feed_episode(ctx, pubs, events, 2, random.uniform(0.5, 1.5), end=False)
        _kill(procs[0])                                   # mid-episode 2
        after_kill = [p.name for p in written()]
        procs.append(node_process("recorder_node", logs[1], bag_dir=bag_dir, grace_s=0.2))
        # The killed one may linger in the graph (DDS lease): wait for the new one's own word.
        ctx.spin(120.0, until=lambda: _logged(logs[1], "recording"))
        ctx.spin(1.5)
        _feed_episode(ctx, pubs, events, 3, 1.5, end=True)
        ctx.spin(15.0, until=lambda: len(written()) >= 2)
    finally:
        for proc in procs:
            _kill(proc)
        ctx.close([node])
    found = written()
    names = [p.name for p in found]
    unreadable = 0
    for path in found:
        try:
            with Reader(path) as reader:
                unreadable += int(reader.message_count == 0)
        except Exception:              # a bag the learner would take but cannot read: torn
            unreadable += 1
    lost = sum(1 for k in ("ep00001", "ep00003") if not any(k in n for n in names))
    partial = sum("ep00002" in n for n in names)
    holds = (lost == 0 and partial == 0 and unreadable == 0 and len(after_kill) == 1
             and len(found) == 2)
    return _row("recorder SIGKILLed mid-episode (recorder: python -m fowm.nodes.recorder_node), "
                "then restarted",
                "completed episodes are not lost; the partial one never appears as a bag the "
                "learner takes; the restarted recorder records the next episode",
                f"bags after the kill {after_kill}; at the end {names}; partial bags {partial}; "
                f"unreadable {unreadable}",
                holds, crashes=0, lost_episodes=lost, seconds=round(time.monotonic() - t0, 1))


WRITER = """
import sys, torch
from fowm_core.config import cpu
from fowm_core.learning.checkpoints import save_agent
from fowm_core.model import WorldModel
cfg = cpu("lift", "all")
model = WorldModel(cfg.model)
step = int(sys.argv[2])
print("ready", flush=True)
while True:
    step += 1
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float(step))
    save_agent(f"{sys.argv[1]}/step_{step:08d}.safetensors", model, cfg, step=step, metrics={})
"""


def learner_killed_writing(root: Path, kills: int = 5) -> Any:
    """A process writing checkpoints as the learner does (checkpoints.save_agent: tensor file
    and sidecar, each temp + fsync + rename) is SIGKILLed at random moments, ``kills`` times.
    Every checkpoint a planner or a resuming learner could pick must be whole: its tensors all
    equal its step (torn = loads but differs; refused = the loader says no)."""
    from fowm_core.errors import FowmError
    from fowm_core.learning.checkpoints import load_agent
    from fowm_core.runtime.ingest import latest_checkpoint
    t0, ckpts = time.monotonic(), root / "checkpoints"
    ckpts.mkdir(parents=True, exist_ok=True)
    torn = refused = whole = temps = 0
    rng = random.Random(11)
    step = 0
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(ckpts), str(step)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        proc.stdout.readline()                           # imports done: writing from now on
        time.sleep(rng.uniform(0.2, 1.5))
        _kill(proc)
        temps += len(list(ckpts.glob(".*.tmp")))
        for path in sorted(ckpts.glob("step_*.safetensors")):
            k = int(path.stem.split("_")[1])
            step = max(step, k)
            try:
                model = load_agent(path).model
            except (FowmError, OSError, ValueError):
                refused += 1
                continue
            same = all(bool((p == float(k)).all()) for p in model.parameters())
            whole += int(same)
            torn += int(not same)
        newest = latest_checkpoint(ckpts)          # what a restarted learner resumes from
        if newest is not None:
            model = load_agent(newest).model
            torn += int(not all(bool((p == float(newest.stem.split("_")[1])).all())
                                for p in model.parameters()))
    holds = torn == 0 and whole >= 1
    return _row(f"learner SIGKILLed while writing checkpoints ({kills} kills at random moments; "
                "writer: python -c save_agent loop)",
                "no torn checkpoint ever loads: each one is whole or refused by the loader "
                "(so none can be swapped in or resumed from)",
                f"{whole} whole, {refused} refused, {torn} torn but loadable; {temps} temp files "
                "left (never a checkpoint name)", holds, crashes=0, untrusted_swaps=torn,
                seconds=round(time.monotonic() - t0, 1))


KILL_ROWS: list[tuple[str, Any, bool]] = [
    ("planner SIGKILL", planner_killed, False),
    ("twin SIGKILL", twin_killed, True),
    ("recorder SIGKILL", recorder_killed, False),
    ("learner SIGKILL writing", learner_killed_writing, False),
]
