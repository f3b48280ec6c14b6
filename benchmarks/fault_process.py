"""Fault rows against processes and the bag directory: the learner and `fowm run` killed at bad
moments, disk full, a second learner, junk in the bag directory. Used by
benchmarks/fault_suite.py; each row returns a fault_suite.Row."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fowm.bringup import spawn_learner_process
from fowm.ros.supervisor import Backoff, SupervisedProcess

from fowm_core.jobs import workflows
from fowm_core.learning import agent as agents
from fowm_core.learning.agent import Agent
from fowm_core.runtime.ingest import LiveLearner, LiveLearnerConfig, latest_checkpoint
from fowm_core.runtime.ledger import BagLedger
from fowm_core.runtime.worklock import WorkDirLock

REPO = Path(__file__).resolve().parents[1]
TINY = {"model": {"latent_dim": 8, "mlp_dim": 32, "enc_dim": 32},
        "planner": {"iterations": 2, "num_samples": 24, "num_elites": 6},
        "learner": {"batch_size": 16}, "replay": {"online_capacity": 2000},
        "schedule": {"offline_steps": 10}}


def _data(root: Path) -> dict[str, Path]:
    """A 1-episode dataset, 2 online bags and an untrained state-mode lift agent (cached)."""
    cache = root.parent / "_data"
    if not (cache / "pre.safetensors").exists():
        workflows.collect("lift", 1, cache / "dataset", seed=0, progress=False)
        workflows.collect("lift", 2, cache / "online", seed=5, progress=False)
        cfg = workflows.preset_for("cpu", "lift", "state").with_overrides(TINY)
        agents.save(Agent.create(cfg, seed=0), cache / "pre.safetensors", {})
    root.mkdir(parents=True, exist_ok=True)
    bags = sorted(p for p in (cache / "online").iterdir() if (p / "metadata.yaml").exists())
    return {"dataset": cache / "dataset", "ckpt": cache / "pre.safetensors", "b0": bags[0],
            "b1": bags[1]}


def _env() -> dict[str, str]:
    return {**os.environ, "ROS_DOMAIN_ID": str(200 + os.getpid() % 30),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "MUJOCO_GL": "egl"}


def _row(fault: str, expected: str, observed: str, holds: bool, **kw: Any) -> Any:
    from benchmarks.fault_suite import Row
    return Row(fault, expected, observed, holds, **kw)


def _wait(cond: Callable[[], bool], timeout_s: float, every: Callable[[], Any] | None = None
          ) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if every is not None:
            every()
        if cond():
            return True
        time.sleep(0.1)
    return False


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().split()[3]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


# -- rows ------------------------------------------------------------------------------------
def bag_dir_junk(root: Path) -> Any:
    t0, d = time.monotonic(), _data(root)
    bag_dir = root / "bags"
    bag_dir.mkdir()
    shutil.copy(d["b0"] / "metadata.yaml", bag_dir / "metadata.yaml")
    (bag_dir / "notes.txt").write_text("junk")
    (bag_dir / "half_written").mkdir()
    (bag_dir / "half_written" / "x.mcap").write_bytes(b"\0" * 32)
    learner = LiveLearner(LiveLearnerConfig(bag_dir=bag_dir, work_dir=bag_dir / ".learner",
                                            checkpoint=d["ckpt"], dataset_dir=d["dataset"]))
    for _ in range(3):
        learner.poll()
    shutil.copytree(d["b0"], bag_dir / "ep0")
    for _ in range(3):
        learner.poll()
    names = [e.name for e in learner.ledger.entries]
    lost = int("ep0" not in [e.name for e in learner.ledger.ingested])
    holds = names == ["ep0"] and len(learner.scanner.ignored) == 3 and not lost
    return _row("bag dir: stray top-level metadata.yaml, a file, a half-written dir",
                "each ignored once with a report; the real episode beside them is learned",
                f"ledger {names}; ignored {sorted(learner.scanner.ignored)}", holds,
                lost_episodes=lost, seconds=round(time.monotonic() - t0, 1))


def learner_killed_mid_write(root: Path) -> Any:
    t0, d = time.monotonic(), _data(root)
    bag_dir, work = root / "bags", root / "work"
    shutil.copytree(d["b0"], bag_dir / "ep0")
    cfg = LiveLearnerConfig(bag_dir=bag_dir, work_dir=work, checkpoint=d["ckpt"],
                            dataset_dir=d["dataset"])
    first = LiveLearner(cfg)
    first.poll()
    info = None
    while first.owed_updates:
        info = first.train_one() or info
    assert info is not None
    ckpts = work / "checkpoints"
    (ckpts / ".step_99999999.safetensors.123.tmp").write_bytes(b"partial")   # killed mid-write
    newer = ckpts / "step_99999999.safetensors"
    newer.write_bytes(info.path.read_bytes()[:1000])        # torn file under the final name
    again = LiveLearner(cfg)
    lost = len(first.ledger.ingested) - len(again.ledger.ingested)
    holds = (again.resumed_from == info.path and not list(ckpts.glob(".*.tmp"))
             and lost == 0 and again.owed_updates == 0)
    return _row("learner killed mid-checkpoint-write (temp file + torn newest file)",
                "restart resumes from the newest valid checkpoint, temp removed, nothing lost",
                f"resumed from {again.resumed_from.name if again.resumed_from else None}; "
                f"owed {again.owed_updates}; lost {lost}", holds, lost_episodes=lost,
                seconds=round(time.monotonic() - t0, 1))


def second_learner(root: Path) -> Any:
    t0, d = time.monotonic(), _data(root)
    work = root / "bags" / ".learner"
    lock = WorkDirLock(work)
    try:
        proc = subprocess.run([sys.executable, "-m", "fowm.nodes.learner_node", "--ros-args",
                               "-p", f"bag_dir:={root / 'bags'}", "-p", f"checkpoint:={d['ckpt']}",
                               "-p", f"dataset_dir:={d['dataset']}"],
                              env=_env(), capture_output=True, text=True, timeout=120)
    finally:
        lock.release()
    said = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    holds = proc.returncode == 2 and f"pid {os.getpid()}" in said
    return _row("second learner on one work directory",
                "refused at start (exit 2) naming the holder's pid",
                f"exit {proc.returncode}: {said[:160]}", holds, crashes=0,
                seconds=round(time.monotonic() - t0, 1))


def fowm_run_sigkill(root: Path) -> Any:
    t0, d = time.monotonic(), _data(root)
    from benchmarks.fault_planner import tiny_checkpoint  # the planner's (rgb) checkpoint
    ckpt = tiny_checkpoint(root / "plan.safetensors")
    argv = [str(Path(sys.executable).with_name("fowm")), "run", "--config",
            str(REPO / "config" / "sim.yaml"), "--checkpoint", str(ckpt),
            "--bag-dir", str(root / "bags"), "--dataset", str(d["dataset"]),
            "--duration", "300", "--realtime"]
    proc = subprocess.Popen(argv, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    learners: list[int] = []
    _wait(lambda: bool(learners), 120, lambda: learners.extend(
        p for p in _children(proc.pid) if b"learner_node" in Path(
            f"/proc/{p}/cmdline").read_bytes() and p not in learners))
    time.sleep(3.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gone = bool(learners) and _wait(lambda: not any(_alive(p) for p in learners), 20)
    for p in learners:
        if _alive(p):
            os.kill(p, signal.SIGKILL)
    return _row("`fowm run --bag-dir` SIGKILLed", "its learner ends too (no orphan)",
                f"learner pids {learners}: {'gone' if gone else 'STILL RUNNING (killed by suite)'}",
                gone, crashes=0, seconds=round(time.monotonic() - t0, 1))


def _supervised(root: Path, d: dict[str, Path], limit: list[int | None]) -> SupervisedProcess:
    def start() -> subprocess.Popen:
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        if limit[0] is not None:                 # the child inherits it: "disk full" for it
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit[0], hard))
        try:
            return spawn_learner_process(root / "bags", d["ckpt"], {
                "dataset_dir": str(d["dataset"]), "poll_s": 0.2})
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    return SupervisedProcess("fowm_learner", start, Backoff(initial_s=1.0, cap_s=4.0))


def learner_dies_and_disk_full(root: Path, disk_full: bool) -> Any:
    t0, d = time.monotonic(), _data(root)
    shutil.copytree(d["b0"], root / "bags" / "ep0")
    work = root / "bags" / ".learner"
    limit: list[int | None] = [20_000 if disk_full else None]
    sup = _supervised(root, d, limit)
    old = os.environ.get("ROS_DOMAIN_ID")
    os.environ.update(_env())
    sup.start()
    try:
        if disk_full:       # the checkpoint write fails, the process exits, is restarted...
            _wait(lambda: len(sup.exit_codes) >= 2, 120, sup.poll)
            limit[0] = None                      # ...the cause is gone: it resumes
        else:
            _wait(lambda: (work / "ledger.json").exists(), 120, sup.poll)
            os.kill(sup.pid, signal.SIGKILL)     # killed at a bad moment: mid-training
        ok = _wait(lambda: latest_checkpoint(work / "checkpoints") is not None, 180, sup.poll)
    finally:
        sup.stop()
        if old is not None:
            os.environ["ROS_DOMAIN_ID"] = old
    ledger = BagLedger(work / "ledger.json")
    lost = int("ep0" not in [e.name for e in ledger.ingested])
    holds = ok and sup.restarts >= 1 and lost == 0
    name = ("disk full while the learner writes a checkpoint (RLIMIT_FSIZE 20 kB)" if disk_full
            else "learner SIGKILLed mid-training")
    return _row(name, "restarted with backoff (reported), resumes, checkpoint written once the "
                "cause is gone; nothing lost",
                f"exit codes {sup.exit_codes}, {sup.restarts} restarts; checkpoint "
                f"{'written' if ok else 'NOT written'}; ledger {[e.name for e in ledger.ingested]}",
                holds, lost_episodes=lost, seconds=round(time.monotonic() - t0, 1))


PROCESS_ROWS: list[tuple[str, Callable[[Path], Any], bool]] = [
    ("bag dir junk", bag_dir_junk, True),
    ("learner killed mid-write", learner_killed_mid_write, True),
    ("second learner", second_learner, True),
    ("fowm run SIGKILL", fowm_run_sigkill, False),
    ("learner SIGKILL", lambda r: learner_dies_and_disk_full(r, False), False),
    ("disk full", lambda r: learner_dies_and_disk_full(r, True), False),
]
