"""fowm_learner: finetunes the world model on the episode bags of the running robot.

Watches ``bag_dir`` (fowm_recorder's one-bag-per-episode output, or any directory of episode bags)
and runs runtime.ingest.LiveLearner: every complete bag is ingested exactly once (ledger keyed
by bag name + content hash, rewritten atomically), rebuilt into exact transitions by
fowm_core.data.bags.read_episode_bag (the same reader as the offline dataset), and buys
len(episode)·utd balanced offline/online updates (docs/algorithm.md §6). Every
``checkpoint_every`` episodes it writes a checkpoint atomically (with optimizer state) and
announces it on /fowm/weights as {"path", "sha256", "step", task, obs mode, "role": "learner",
sender} signed with the lab key (``key_file``, docs/trust.md; transient-local, depth 1) for the
planner to validate and hot-swap.

Sharing 2 cores with a live planner: training runs on its own thread with ONE torch thread and
sleeps ``yield_s`` between updates, so the planner's control thread always finds a core and the
GIL. torch's intra-op thread count is per thread once a thread has run a parallel op (OpenMP), but
new threads copy a process-wide value: the training thread sets 1 for itself and the node then
puts the process-wide value back, so the planner's threads keep theirs in a one-process stack.
The ledger, the checkpoints and their state live in ``work_dir`` (default: bag_dir/.learner,
hidden so it is never taken for a bag); a restarted learner resumes from them.

Supervision (issue 11): one learner per work directory (an flock held for the process's life,
fowm_core.runtime.worklock; a second is refused at start naming the holder's pid); with
``parent_pid`` set (fowm.bringup does) it ends when that process is gone; when training stops on
an error the process exits non-zero, so fowm.bringup's supervisor restarts it with backoff. Its
health is on /diagnostics at 1 Hz: state, ingested/refused/ignored bags, step, last checkpoint,
updates per second.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rclpy
import torch
from rclpy.node import Node
from std_msgs.msg import String

from fowm.ros import qos
from fowm.ros.diagnostics import ERROR, OK, WARN, DiagnosticsReporter, Health
from fowm.ros.guard import InputGuard, SupervisedThread
from fowm.ros.params import declare_from_dataclass
from fowm.ros.spin import spin_nodes
from fowm.ros.transfer import WeightsShipper
from fowm_core.contract import topics
from fowm_core.errors import ConfigError, FowmError
from fowm_core.learning.checkpoints import CheckpointInfo
from fowm_core.runtime.control import param_meta as _p
from fowm_core.runtime.hotswap import Weights
from fowm_core.runtime.ingest import LiveLearner, LiveLearnerConfig, announcement, run_forever
from fowm_core.runtime.trust import load_key
from fowm_core.runtime.worklock import ParentWatch, WorkDirLock


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
    classifier: str = field(default="", metadata=_p(
        "success classifier (fowm classifier train) whose probability replaces every reward, "
        "offline and online (docs/rewards.md); empty: none"))
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
    key_file: str = field(default="", metadata=_p(
        "lab key that signs every announcement (the planner's trust.key_file; `fowm keygen "
        "PATH` makes one); empty: unsigned, refused by a planner that requires signatures"))
    weights_link: bool = field(default=False, metadata=_p(
        "true: the planner runs on another host; send each checkpoint's bytes on "
        "/fowm/weights_blob (announced by file name, docs/two_hosts.md) instead of its path on "
        "/fowm/weights"))
    parent_pid: int = field(default=0, metadata=_p(
        "end this process when the process with this pid is gone (fowm.bringup); 0: never",
        0, 2**31 - 1))


class LearnerNode(Node):
    """Node ``fowm_learner``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("fowm_learner", **kwargs)
        self._stop = threading.Event()
        self._thread: SupervisedThread | None = None
        self.parent_watch: ParentWatch | None = None
        self.lock: WorkDirLock | None = None     # a refused start still gets destroy_node()
        self.shipper: WeightsShipper | None = None
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
            device=p.device, classifier=Path(p.classifier) if p.classifier else None)
        # Loaded now: a key others may read, or none at all, is a startup error, not a quiet
        # stream of announcements the planner refuses.
        self.key = load_key(p.key_file) if p.key_file else None
        if self.key is None:
            self.get_logger().warning(
                "key_file is empty: checkpoints are announced unsigned and a planner that "
                "requires signatures (the default) refuses them (docs/trust.md)")
        self.sender = f"{self.get_name()}/{os.getpid()}"
        self.lock = WorkDirLock(self.config.work_dir)       # before anything touches it
        self.learner: LiveLearner | None = None
        self.announced: list[dict[str, Any]] = []
        self.error: str | None = None
        self.ready = threading.Event()
        self.weights_pub = self.create_publisher(String, topics.WEIGHTS, qos.LATCHED)
        self.shipper = WeightsShipper(self) if p.weights_link else None
        self.diag = DiagnosticsReporter(self, "fowm_learner: finetuning", "fowm_learner")
        self._rate = (time.monotonic(), 0)                  # (when, updates) at the last report
        self.diag.publish_every(health=self._health)
        self.parent_watch = (ParentWatch(p.parent_pid, self._orphaned) if p.parent_pid else None)
        threads_set = threading.Event()
        process_threads = torch.get_num_threads()
        # A training thread that dies of a bug is restarted: a new LiveLearner resumes from the
        # ledger and the newest checkpoint, as after a crash (runtime/ingest.py).
        self._thread = SupervisedThread("fowm_learner", lambda: self._main(threads_set),
                                        lambda text: self.get_logger().error(text))
        self._thread.start()
        threads_set.wait(10.0)
        torch.set_num_threads(process_threads)     # the process-wide value, for other threads
        self.create_timer(1.0, InputGuard(self).guard("watchdog", self._watchdog))

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
        except Exception as err:
            self.error = f"{type(err).__name__}: {err}"
            if self.context.ok():
                raise
        finally:
            self.ready.set()

    def _watchdog(self) -> None:
        if self._thread is not None and not self._stop.is_set() and self.context.ok():
            self._thread.check()

    def _report_start(self, learner: LiveLearner) -> None:
        ledger = learner.ledger
        self.get_logger().info(
            f"learning {learner.agent.cfg.task} from {self.config.bag_dir}: "
            f"{len(ledger.ingested)} bags in the ledger ({len(ledger.failed)} refused), "
            f"{learner.owed_updates} updates owed, step {learner.agent.learner.step}"
            + (f", resumed from {learner.resumed_from.name}" if learner.resumed_from else ""))
        if learner.resumed_from is not None:
            self._publish(Weights.of_checkpoint(learner.resumed_from), learner)

    def _announce(self, info: CheckpointInfo) -> None:
        assert self.learner is not None
        self._publish(info, self.learner)
        self.get_logger().info(f"new checkpoint {info.path.name} (step {info.step}) announced")

    def _publish(self, info: CheckpointInfo | Weights, learner: LiveLearner) -> None:
        """Announce a checkpoint: its path on /fowm/weights, or over the link (weights_link)
        its bytes, announced by bare file name (the robot resolves it in its own store)."""
        path = Path(info.path)
        if self.shipper is not None:
            info = Weights(path.name, info.sha256, info.step)
        note = announcement(info, learner.agent.cfg, key=self.key, sender=self.sender)
        self.announced.append(note.as_dict())
        if not self.context.ok():
            return
        if self.shipper is not None:
            self.shipper.offer(note.as_dict(), path)
        else:
            self.weights_pub.publish(String(data=note.to_json()))

    # -- health --------------------------------------------------------------------------------
    def _health(self) -> Health:
        """Once a second on /diagnostics: state, what was learned, the training rate."""
        learner, now = self.learner, time.monotonic()
        values: dict[str, Any] = {"work_dir": self.config.work_dir,
                                  "checkpoints_announced": len(self.announced),
                                  "thread_restarts": self._thread.restarts if self._thread else 0}
        if learner is not None:
            then, before = self._rate
            self._rate = (now, learner.updates)
            ledger = learner.ledger
            last = learner.last_checkpoint or None
            values.update(
                ingested=len(ledger.ingested), failed=len(ledger.failed),
                ignored=len(learner.scanner.ignored), step=learner.agent.learner.step,
                owed_updates=learner.owed_updates, updates=learner.updates,
                updates_per_s=f"{(learner.updates - before) / max(now - then, 1e-6):.2f}",
                last_checkpoint=last.path.name if last else (
                    learner.resumed_from.name if learner.resumed_from else "none"))
        if self.error is not None:
            level, state = ERROR, f"stopped: {self.error}"
        elif self._thread is None or not self._thread.is_alive():
            level, state = ERROR, "stopped: the training thread is not running; see the log"
        elif learner is None:
            level, state = OK, "starting"
        elif learner.owed_updates:
            level, state = OK, "training"
        else:
            level, state = (WARN if values.get("failed") else OK), "waiting for bags"
        values["state"] = state.split(":")[0]
        return level, state, values

    def _orphaned(self) -> None:
        """The parent is gone: end like on SIGTERM (rclpy's handler), hard after a grace."""
        self.get_logger().error(
            f"parent process {self.params.parent_pid} is gone: stopping, so no orphan learner "
            "outlives its stack")
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Timer(30.0, os._exit, args=(3,)).start()

    @property
    def failed(self) -> bool:
        """Training stopped on an error (the process's main exits non-zero on this)."""
        return (self.error is not None and self.ready.is_set() and self._thread is not None
                and not self._thread.is_alive())

    def destroy_node(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.stop(30.0)
        if self.parent_watch is not None:
            self.parent_watch.stop()
        if self.shipper is not None:
            self.shipper.sender.close()
        if self.lock is not None and not (self._thread and self._thread.is_alive()):
            self.lock.release()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Console script `ros2 run fowm learner_node`: this node until SIGINT/SIGTERM.

    Exit status: 0 on SIGINT/SIGTERM, 1 when training stopped on an error, 2 when it could not
    start (e.g. its work directory is locked by another learner): a supervisor restarts on both."""
    sys.exit(run_learner(args))


def run_learner(args: list[str] | None = None) -> int:
    nodes: list[Node] = []
    try:
        rclpy.init(args=args)
        nodes = spin_nodes([LearnerNode], until=lambda ns: bool(ns) and ns[0].failed)
    except FowmError as err:
        print(f"fowm_learner: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        rclpy.try_shutdown()
    return 1 if nodes and nodes[0].failed else 0


if __name__ == "__main__":
    main()
