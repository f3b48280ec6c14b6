"""fowm_learner: finetunes the world model on the episode bags of the running robot.

Watches ``bag_dir`` (fowm_recorder's one-bag-per-episode output, or any directory of episode bags)
and runs runtime.ingest.LiveLearner: every complete bag is ingested exactly once (ledger keyed
by bag name + content hash, rewritten atomically), rebuilt into exact transitions by
fowm_core.data.bags.read_episode_bag (the same reader as the offline dataset), and buys
len(episode)·utd balanced offline/online updates (docs/algorithm.md §6). Every ``checkpoint_every`` episodes
it writes a checkpoint atomically (with optimizer state) and announces it on /fowm/weights as
{"path", "sha256", "step"} (transient-local, depth 1) for the planner to validate and hot-swap.

Sharing 2 cores with a live planner: training runs on its own thread with ONE torch thread and
sleeps ``yield_s`` between updates, so the planner's control thread always finds a core and the
GIL. torch's intra-op thread count is per thread once a thread has run a parallel op (OpenMP), but
new threads copy a process-wide value: the training thread sets 1 for itself and the node then
puts the process-wide value back, so the planner's threads keep theirs in a one-process stack.
The ledger, the checkpoints and their state live in ``work_dir`` (default: bag_dir/.learner,
hidden so it is never taken for a bag); a restarted learner resumes from them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rclpy
import torch
from rclpy.node import Node
from std_msgs.msg import String

from fowm.ros import qos
from fowm.ros.diagnostics import ERROR, OK, WARN, DiagnosticsReporter, Health
from fowm.ros.params import declare_from_dataclass
from fowm_core.contract import topics
from fowm_core.errors import ConfigError, FowmError
from fowm_core.learning.checkpoints import CheckpointInfo
from fowm_core.runtime.control import param_meta as _p
from fowm_core.runtime.ingest import LiveLearner, LiveLearnerConfig, announcement, run_forever


@dataclass(frozen=True)
class LearnerNodeParams:
    bag_dir: str = field(default="", metadata=_p("directory of episode bags to learn from"))
    work_dir: str = field(default="", metadata=_p(
        "ledger and checkpoints; empty: <bag_dir>/.learner"))
    checkpoint: str = field(default="", metadata=_p(
        "pretrained checkpoint to start from (ignored once work_dir holds one)"))
    dataset_dir: str = field(default="", metadata=_p(
        "offline dataset (episode bags) for the offline half of every batch (docs/algorithm.md §6)"))
    recompute_reward: bool = field(default=True, metadata=_p(
        "recompute rewards from observations (fowm_core.tasks.rewards); false: logged rewards"))
    task: str = field(default="", metadata=_p(
        "relabel bags for this task (needs recompute_reward); empty: the checkpoint's task"))
    checkpoint_every: int = field(default=1, metadata=_p(
        "write and announce a checkpoint after this many trained episodes", 1, 100000))
    keep_checkpoints: int = field(default=3, metadata=_p("checkpoints kept on disk", 1, 1000))
    poll_s: float = field(default=0.5, metadata=_p("seconds between bag-directory scans",
                                                   0.01, 60.0))
    yield_s: float = field(default=0.005, metadata=_p(
        "sleep between updates, so the planner gets the GIL and a core", 0.0, 10.0))
    torch_threads: int = field(default=1, metadata=_p("torch threads of the training thread",
                                                      1, 256))
    seed: int = field(default=0, metadata=_p("sampling and learner seed", 0, 2**31 - 1))


class LearnerNode(Node):
    """Node ``fowm_learner``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("fowm_learner", **kwargs)
        self.params = p = declare_from_dataclass(self, "", LearnerNodeParams)
        if not p.bag_dir:
            msg = "parameter bag_dir is empty: set it to the recorder's bag directory"
            raise ConfigError(msg)
        self.config = LiveLearnerConfig(
            bag_dir=Path(p.bag_dir), work_dir=Path(p.work_dir or Path(p.bag_dir) / ".learner"),
            checkpoint=Path(p.checkpoint) if p.checkpoint else None,
            dataset_dir=Path(p.dataset_dir) if p.dataset_dir else None,
            recompute_reward=p.recompute_reward, task=p.task or None,
            checkpoint_every=p.checkpoint_every, keep_checkpoints=p.keep_checkpoints, seed=p.seed)
        self.learner: LiveLearner | None = None
        self.announced: list[dict[str, Any]] = []
        self.error: str | None = None
        self.ready = threading.Event()
        self._stop = threading.Event()
        self.weights_pub = self.create_publisher(String, topics.WEIGHTS, qos.LATCHED)
        self.diag = DiagnosticsReporter(self, "fowm_learner: finetuning", p.bag_dir)
        self.diag.publish_every(health=self._health)
        threads_set = threading.Event()
        process_threads = torch.get_num_threads()
        self._thread = threading.Thread(target=self._main, args=(threads_set,),
                                        name="fowm_learner", daemon=True)
        self._thread.start()
        threads_set.wait(10.0)
        torch.set_num_threads(process_threads)     # the process-wide value, for other threads

    def _health(self) -> Health:
        learner = self.learner
        values: dict[str, object] = {"checkpoints_announced": len(self.announced)}
        if learner is not None:
            values.update(step=learner.agent.learner.step, owed_updates=learner.owed_updates,
                          bags_ingested=len(learner.ledger.ingested),
                          bags_refused=len(learner.ledger.failed))
        if self.error:
            return ERROR, f"learner stopped: {self.error}", values
        if not self._thread.is_alive():
            return ERROR, "the training thread stopped; see the log", values
        if learner is None:
            return WARN, "starting (loading the checkpoint and the dataset)", values
        return OK, f"learning from {self.config.bag_dir}", values

    # -- training thread -------------------------------------------------------------------------
    def _main(self, threads_set: threading.Event) -> None:
        torch.set_num_threads(self.params.torch_threads)
        torch.ones(2, 2) @ torch.ones(2, 2)        # fix this thread's count (module docstring)
        threads_set.set()
        try:
            self.learner = LiveLearner(self.config)
            self._report_start(self.learner)
            self.ready.set()
            run_forever(self.learner, self._stop.is_set, self._announce,
                        poll_s=self.params.poll_s, yield_s=self.params.yield_s)
        except (FowmError, OSError) as err:
            self.error = str(err)
            self.get_logger().error(f"learner stopped: {err}")
        except Exception:
            if self.context.ok():
                raise
        finally:
            self.ready.set()

    def _report_start(self, learner: LiveLearner) -> None:
        ledger = learner.ledger
        self.get_logger().info(
            f"learning {learner.agent.cfg.task} from {self.config.bag_dir}: "
            f"{len(ledger.ingested)} bags in the ledger ({len(ledger.failed)} refused), "
            f"{learner.owed_updates} updates owed, step {learner.agent.learner.step}"
            + (f", resumed from {learner.resumed_from.name}" if learner.resumed_from else ""))
        if learner.resumed_from is not None:
            from fowm_core.runtime.hotswap import Weights

            w = Weights.of_checkpoint(learner.resumed_from)
            self._publish({"path": w.path, "sha256": w.sha256, "step": w.step})

    def _announce(self, info: CheckpointInfo) -> None:
        self._publish(announcement(info))
        self.get_logger().info(f"new checkpoint {info.path.name} (step {info.step}) announced")

    def _publish(self, body: dict[str, Any]) -> None:
        self.announced.append(body)
        if self.context.ok():
            self.weights_pub.publish(String(data=json.dumps(body, sort_keys=True)))

    def destroy_node(self) -> None:
        self._stop.set()
        self._thread.join(30.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    from fowm.bringup import spin_nodes

    rclpy.init(args=args)
    spin_nodes([LearnerNode])


if __name__ == "__main__":
    main()


def loop_factories(bag_dir: str | Path, checkpoint: str | Path,
                   overrides: dict[str, dict[str, Any]] | None = None) -> list[Any]:
    """Factories of the recorder and the learner for a stack that learns while it runs
    (`fowm run --bag-dir DIR`): bags go to DIR, the learner starts from the planner's checkpoint.
    ``overrides`` ({node name: {parameter: value}}) win, e.g. the learner's dataset_dir."""
    from rclpy.parameter import Parameter

    from fowm.nodes.recorder_node import RecorderNode

    per_node: dict[str, dict[str, Any]] = {
        "fowm_recorder": {"bag_dir": str(bag_dir)},
        "fowm_learner": {"bag_dir": str(bag_dir), "checkpoint": str(checkpoint)}}
    for name, values in (overrides or {}).items():
        if name in per_node:
            per_node[name].update(values)

    def make(cls: type[Node], name: str) -> Any:
        params = [Parameter(k, value=v) for k, v in per_node[name].items()]
        return lambda: cls(parameter_overrides=params)

    return [make(RecorderNode, "fowm_recorder"), make(LearnerNode, "fowm_learner")]


def spawn_learner_process(bag_dir: str | Path, checkpoint: str | Path,
                          params: dict[str, Any] | None = None,
                          params_file: str | Path | None = None) -> subprocess.Popen:
    """Start ``fowm_learner`` in its own process, below the control loop in the OS scheduler.

    In the planner's process the learner's Python work competes with the control thread for the
    GIL (the planner missed ~1 % of its ticks that way); in its own process at nice 10 it takes
    only idle cycles (0 misses in the demo's measurement)."""
    values = {"bag_dir": bag_dir, "checkpoint": checkpoint, "torch_threads": 1, **(params or {})}
    argv = [sys.executable, "-c", "from fowm.nodes.learner_node import main; main()", "--ros-args"]
    if params_file is not None:
        argv += ["--params-file", str(params_file)]
    for name, value in values.items():
        argv += ["-p", f"{name}:={value}"]
    package_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH"))
                                         if p)}
    return subprocess.Popen(argv, env=env, preexec_fn=lambda: os.nice(10))


def stop_process(proc: subprocess.Popen, timeout_s: float = 20.0) -> int:
    """SIGINT first (rclpy shuts down cleanly and frees its /dev/shm segments), SIGKILL last."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
