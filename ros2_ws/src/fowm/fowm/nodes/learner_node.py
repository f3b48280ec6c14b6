"""fowm_learner: finetunes the world model on the episode bags of the running robot.

Watches ``bag_dir`` (fowm_recorder's one-bag-per-episode output, or any directory of episode bags)
and runs runtime.ingest.LiveLearner: every complete bag is ingested exactly once (ledger keyed
by bag name + content hash, rewritten atomically), rebuilt into exact transitions by
fowm_core.data.bags.read_episode_bag (the same reader as the offline dataset), and buys
len(episode)·utd balanced offline/online updates (docs/algorithm.md §6). Every
``checkpoint_every`` episodes it writes a checkpoint atomically (with optimizer state) and
announces it on /fowm/weights as {"path", "sha256", "step"} (transient-local, depth 1) for the
planner to validate and hot-swap.

Sharing 2 cores with a live planner: training runs on its own thread with ONE torch thread and
sleeps ``yield_s`` between updates, so the planner's control thread always finds a core and the
GIL. torch's intra-op thread count is per thread once a thread has run a parallel op (OpenMP), but
new threads copy a process-wide value: the training thread sets 1 for itself and the node then
puts the process-wide value back, so the planner's threads keep theirs in a one-process stack.
The ledger, the checkpoints and their state live in ``work_dir`` (default: bag_dir/.learner,
hidden so it is never taken for a bag); a restarted learner resumes from them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rclpy.node import Node
from std_msgs.msg import String

from fowm.ros import qos
from fowm.ros.diagnostics import ERROR, OK, WARN, DiagnosticsReporter, Health
from fowm.ros.guard import SupervisedThread
from fowm.ros.params import declare_from_dataclass
from fowm.ros.spin import run_nodes
from fowm_core.contract import topics
from fowm_core.contract.messages import WeightsAnnouncement
from fowm_core.errors import ConfigError, FowmError
from fowm_core.learning.checkpoints import CheckpointInfo
from fowm_core.runtime.control import param_meta as _p
from fowm_core.runtime.hotswap import Weights
from fowm_core.runtime.ingest import LiveLearner, LiveLearnerConfig, announcement, run_forever


@dataclass(frozen=True)
class LearnerNodeParams:
    bag_dir: str = field(default="", metadata=_p("directory of episode bags to learn from"))
    work_dir: str = field(default="", metadata=_p(
        "ledger and checkpoints; empty: <bag_dir>/.learner"))
    checkpoint: str = field(default="", metadata=_p(
        "pretrained checkpoint to start from (ignored once work_dir holds one)"))
    dataset_dir: str = field(default="", metadata=_p(
        "offline dataset (episode bags) for the offline half of every batch "
        "(docs/algorithm.md §6)"))
    recompute_reward: bool = field(default=True, metadata=_p(
        "recompute rewards from observations (fowm_core.tasks); false: logged rewards"))
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
    device: str = field(default="cpu", metadata=_p(
        "torch device of the training: auto | cpu | cuda | cuda:N (checkpoints stay "
        "device-independent)"))


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
            checkpoint_every=p.checkpoint_every, keep_checkpoints=p.keep_checkpoints, seed=p.seed,
            device=p.device)
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
        # A training thread that dies of a bug is restarted: a new LiveLearner resumes from the
        # ledger and the newest checkpoint, as after a crash (runtime/ingest.py).
        self._thread = SupervisedThread("fowm_learner", lambda: self._main(threads_set),
                                        lambda text: self.get_logger().error(text))
        self._thread.start()
        threads_set.wait(10.0)
        torch.set_num_threads(process_threads)     # the process-wide value, for other threads
        self.create_timer(1.0, self._watchdog)

    def _health(self) -> Health:
        learner = self.learner
        values: dict[str, object] = {"checkpoints_announced": len(self.announced),
                                     "thread_restarts": self._thread.restarts}
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

    def _watchdog(self) -> None:
        if not self._stop.is_set() and self.context.ok():
            self._thread.check()

    def _report_start(self, learner: LiveLearner) -> None:
        ledger = learner.ledger
        self.get_logger().info(
            f"learning {learner.agent.cfg.task} from {self.config.bag_dir}: "
            f"{len(ledger.ingested)} bags in the ledger ({len(ledger.failed)} refused), "
            f"{learner.owed_updates} updates owed, step {learner.agent.learner.step}"
            + (f", resumed from {learner.resumed_from.name}" if learner.resumed_from else ""))
        if learner.resumed_from is not None:
            self._publish(Weights.of_checkpoint(learner.resumed_from).announcement())

    def _announce(self, info: CheckpointInfo) -> None:
        self._publish(announcement(info))
        self.get_logger().info(f"new checkpoint {info.path.name} (step {info.step}) announced")

    def _publish(self, note: WeightsAnnouncement) -> None:
        text = note.to_json()
        self.announced.append(note.as_dict())
        if self.context.ok():
            self.weights_pub.publish(String(data=text))

    def destroy_node(self) -> None:
        self._stop.set()
        self._thread.stop(30.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Console script `ros2 run fowm learner_node`: this node until SIGINT/SIGTERM."""
    run_nodes([LearnerNode], args)


if __name__ == "__main__":
    main()
