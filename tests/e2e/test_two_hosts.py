"""Two hosts on one machine, no shared disk (docs/two_hosts.md): the robot PC (twin, planner,
episode manager, recorder, fowm_robot_link) in one network namespace, the workstation (learner,
fowm_learner_link) in another, joined by a veth pair, each with its own directories and its own
/dev/shm. Episodes recorded on the robot arrive on the workstation over DDS, a checkpoint trained
there travels back as bytes, and the robot's planner validates and hot-swaps it.

Needs root for `ip netns add`; where namespaces cannot be made the test is skipped with the exact
error (and says so on stderr)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import pytest
import yaml
from helpers.loop import collect, tiny_checkpoint

from benchmarks.netns import LEARNER, ROBOT, NetnsUnavailableError, TwoHosts
from fowm_core.runtime.trust import generate_key

REPO = Path(__file__).resolve().parents[2]
FOWM = str(Path(sys.executable).parent / "fowm")
EPISODES, LENGTH = 6, 8
CUT_S = 12.0             # past the ~11 s after which a blocking TCP send once froze the robot

pytestmark = pytest.mark.slow


def site_yaml(path: Path, dataset: Path | None = None) -> Path:
    values = {
        "fowm_sim": {"task": "lift", "obs_mode": "state", "episode_length": LENGTH},
        "fowm_planner": {"eval_mode": False},
        "fowm_episode_manager": {"task": "lift", "episode_length": LENGTH,
                                 "service_timeout_s": 30.0},
        "fowm_learner": {"poll_s": 0.1, **({"dataset_dir": str(dataset)} if dataset else {})},
        "fowm_recorder": {"grace_s": 0.3}}
    path.write_text(yaml.safe_dump({n: {"ros__parameters": v} for n, v in values.items()}))
    return path


def private_copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def wait_for(log: Path, text: str, timeout_s: float, count: int = 1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.is_file() and log.read_text().count(text) >= count:
            return True
        time.sleep(0.5)
    return False


def _env() -> dict[str, str]:
    # No FASTDDS_BUILTIN_TRANSPORTS: the roles choose the transports (fowm.roles).
    return {"ROS_DOMAIN_ID": str(1 + os.getpid() % 100), "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET",
            "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}


def test_episodes_and_weights_cross_between_two_hosts(tmp_path: Path) -> None:
    shared = tmp_path / "setup"
    pre = tiny_checkpoint(shared / "pre.safetensors")
    key = generate_key(shared / "lab.key")
    robot, work = tmp_path / "robot", tmp_path / "workstation"
    for side in (robot, work):             # each host its own copy of the key and weights
        private_copy(pre, side / "pre.safetensors")
        shutil.copy(key, side / "lab.key")
        os.chmod(side / "lab.key", 0o600)
    dataset = collect(work / "dataset", 3)
    config = str(REPO / "config" / "sim.yaml")
    try:
        hosts = TwoHosts().__enter__()
    except NetnsUnavailableError as err:
        warnings.warn(f"TWO-HOST TEST SKIPPED: {err}", stacklevel=1)
        print(f"\n*** two-host test skipped: network namespaces unavailable: {err}",
              file=sys.stderr)
        pytest.skip(f"network namespaces cannot be created here: {err}")
    try:
        with (work / "learner.log").open("w") as llog, (robot / "robot.log").open("w") as rlog:
            # The workstation stands for another machine: on a shared 2-core box it must not
            # take the robot's cores (nice), and it is up before the robot starts.
            learner = hosts.start(LEARNER, [
                "nice", "-n", "10", FOWM, "run", "--role", "learner", "--config", config,
                "--site-config", str(site_yaml(work / "site.yaml", dataset)),
                "--checkpoint", str(work / "pre.safetensors"), "--bag-dir", str(work / "bags"),
                "--dataset", str(dataset), "--key-file", str(work / "lab.key"),
                "--duration", "150", "--summary", str(work / "summary.json")], _env(), llog)
            wait_for(work / "learner.log", "learning lift from", 90.0)
            robot_proc = hosts.start(ROBOT, [
                FOWM, "run", "--role", "robot", "--config", config,
                "--site-config", str(site_yaml(robot / "site.yaml")),
                "--checkpoint", str(robot / "pre.safetensors"), "--bag-dir", str(robot / "bags"),
                "--key-file", str(robot / "lab.key"), "--episodes", str(EPISODES),
                "--swaps", "1", "--duration", "120", "--summary", str(robot / "summary.json")],
                _env(), rlog)
            # The link is cut once each side heard the other and the first bag crossed, and
            # comes back 12 s later.
            assert wait_for(work / "learner.log", "robot heard for the first time", 60.0)
            assert wait_for(robot / "robot.log", "acknowledged by the learner's host", 60.0)
            hosts.cut()
            time.sleep(CUT_S)
            hosts.restore()
            robot_proc.wait(150)
            ledger = work / "bags" / ".learner" / "ledger.json"
            wait_for(ledger, '"status": "ingested"', 60.0, count=EPISODES)
            hosts.stop(learner)
    finally:
        hosts.close()
    logs = "\n".join(f"--- {p.name}:\n{p.read_text()[-3000:]}"
                     for p in (robot / "robot.log", work / "learner.log") if p.exists())
    assert (robot / "summary.json").is_file() and (work / "summary.json").is_file(), logs
    r = json.loads((robot / "summary.json").read_text())
    w = json.loads((work / "summary.json").read_text())

    # Episodes recorded on the robot reached the workstation, each once, and were trained on,
    # those recorded during the cut included.
    assert len(r["success"]) == EPISODES and len(r["bags"]) == EPISODES, logs
    assert sorted(w["bags_received"]) == r["bags"], logs
    assert w["ingested_unique"] and w["ingested"] == r["bags"], w
    assert w["checkpoint"] is not None and w["trained_episodes"] >= 1, w
    assert all((work / "bags" / name).is_dir() for name in w["bags_received"])

    # A checkpoint trained there came back as bytes, was stored, validated and swapped in.
    assert r["weights_received"], logs
    got = r["weights_received"][-1]                 # the store keeps the newest 3
    assert "/" not in got["path"] and got["bytes"] > 0
    assert (robot / "bags" / ".weights" / got["path"]).is_file()
    assert r["swaps"] >= 1 and r["live_weights"]["step"] > 0, r
    assert r["weights_refused"] == [], r

    # The cut: both sides reported it on /diagnostics; control never stalled (a tick held up
    # by a blocked send took 10-20 s before non-blocking TCP + asynchronous publication).
    down, up = (e["wall_s"] for e in hosts.events)
    for side, name in ((r, "fowm_robot_link"), (w, "fowm_learner_link")):
        assert side["partitions"] >= 1, side
        assert any(d["name"].startswith(name) and d["level"] == 1 and "heard for" in
                   d["message"] and down <= d["wall_s"] <= up for d in side["diagnostics"]), side
    timing = r["planner_timing"]
    assert max(timing["latency_ms_max"], timing["lateness_ms_max"]) < 1000.0, r["missed_ticks"]
    # Receiving and storing weights never delayed a tick. Elsewhere a tick can miss on a loaded
    # 2-core machine (a slow plan, the bag written at an episode's end; seen with the robot side
    # alone too): not the link's (docs/two_hosts.md).
    assert r["ticks_during_transfers"]["during"]["deadline_misses"] == 0, r
    assert timing["deadline_misses"] <= 3, r["missed_ticks"]
