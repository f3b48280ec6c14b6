"""Exactly-once ingestion of episode bags and the live finetuning loop beside a running planner.

``BagLedger`` is the learner's memory of which bags it consumed: a JSON file, rewritten atomically
(temp file + fsync + rename) after every change, keyed by bag name + content SHA-256. A bag is
seen as complete only once it is visible under its final name (fowm's recorder writes to a hidden
temp directory and renames it; ``ros2 bag record`` writes metadata.yaml last).

``LiveLearner`` keeps the offline (dataset) and online buffers and runs the reference schedule
(docs/algorithm.md §6): every new episode buys len(episode)·utd balanced 50/50 updates. Its state
on disk is the ledger plus the newest checkpoint (model, target, both Adams), whose meta records
how many ledger entries it has trained on. So after a crash or restart:
  - every ingested bag is read again into the online buffer (nothing lost, nothing twice: the
    ledger lists each bag once);
  - entries past the checkpoint's count owe their updates again (their training died with the
    process); entries before it do not (their updates are inside the checkpoint).
Replay priorities and the sampling RNG are not restored: new rows start at max priority (§3.3).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fowm_core.config import FowmConfig
from fowm_core.contract.messages import WeightsAnnouncement
from fowm_core.data import bag_cache, bags
from fowm_core.data.episode import Episode
from fowm_core.errors import BagError, CheckpointError, ConfigError, FowmError
from fowm_core.learning import agent as agents
from fowm_core.learning import checkpoints, success, train
from fowm_core.learning.checkpoints import AgentFile, CheckpointInfo
from fowm_core.runtime import trust
from fowm_core.runtime.ledger import BagLedger, BagScanner, LedgerEntry

log = logging.getLogger(__name__)

TRAINED_KEY = "fowm.trained_entries"     # checkpoint meta: ledger entries whose updates it holds
CKPT_PREFIX = "step_"


# -- the live learner ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LiveLearnerConfig:
    bag_dir: Path                        # where the recorder (or ros2 bag record) puts bags
    work_dir: Path                       # ledger.json and checkpoints/ live here
    checkpoint: Path | None = None       # the pretrained start; ignored once work_dir has one
    dataset_dir: Path | None = None      # offline dataset (rosbag2 episodes), docs/algorithm.md §6
    recompute_reward: bool = True        # from fowm_core.tasks (True) or the logged /fowm/reward
    task: str | None = None              # relabel every bag for this task (needs recompute)
    checkpoint_every: int = 1            # write and announce after this many trained episodes
    keep_checkpoints: int = 3
    seed: int = 0
    device: str = "cpu"                  # auto | cpu | cuda[:N] (fowm_core.model.device)
    # A success classifier (learning.success) whose probability replaces every reward, offline
    # and online (docs/rewards.md); None: rewards as recompute_reward says.
    classifier: Path | None = None


@dataclass
class IngestReport:
    ingested: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)      # (name, why)


class LiveLearner:
    """Ingest bags → owe updates → train → checkpoint. Not thread-safe: one thread drives it."""

    def __init__(self, cfg: LiveLearnerConfig) -> None:
        self.cfg = cfg
        self.ckpt_dir = Path(cfg.work_dir) / "checkpoints"
        self.ledger = BagLedger(Path(cfg.work_dir) / "ledger.json")
        self.scanner = BagScanner(Path(cfg.bag_dir))
        remove_partial_writes(self.ckpt_dir)
        start, resumed = self._start_checkpoint()       # read once, restored from memory
        self.agent = agents.from_checkpoint(start, seed=cfg.seed, device=cfg.device)
        self.trained_entries = int(start.meta.get(TRAINED_KEY, 0)) if resumed else 0
        self.resumed_from = start.info.path if resumed else None
        self.classifier = None if cfg.classifier is None else success.load(cfg.classifier)
        if self.classifier is not None:
            success.check_task(self.classifier, cfg.task or self.agent.cfg.task)
        self.read_kwargs = self._read_kwargs()
        self.sampler = agents.make_sampler(self.agent.cfg, self._offline())
        self.queue: deque[tuple[int, int]] = deque()     # (ledger index, updates still owed)
        self.episodes_since_ckpt = 0
        self.last_checkpoint: CheckpointInfo | None = None
        self.updates = 0
        self._restore_online()

    # -- start-up ----------------------------------------------------------------------------------
    def _start_checkpoint(self) -> tuple[AgentFile, bool]:
        latest = latest_agent_file(self.ckpt_dir)
        if latest is not None:
            self._check_resumable(latest.info.path)
            return latest, True
        if self.cfg.checkpoint is None:
            msg = (f"no checkpoint to start from: {self.ckpt_dir} has none and no pretrained "
                   "checkpoint was given; pass the offline checkpoint (fowm pretrain)")
            raise ConfigError(msg)
        return checkpoints.read_agent(self.cfg.checkpoint), False

    def _check_resumable(self, latest: Path) -> None:
        """A work dir left by a run of another model (other sizes or observation layout) must not
        be resumed silently: its buffers and weights would fail later, mid-run."""
        if self.cfg.checkpoint is None:
            return
        ours, theirs = (_model_spec(Path(self.cfg.checkpoint)), _model_spec(latest))
        if ours != theirs:
            differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
            msg = (f"{latest} (to resume from) belongs to another model than "
                   f"{self.cfg.checkpoint}: {', '.join(differ)} differ; use a fresh work dir or "
                   f"delete {self.ckpt_dir}")
            raise ConfigError(msg)

    def _read_kwargs(self) -> dict[str, Any]:
        mcfg = self.agent.cfg.model
        task = self.cfg.task or self.agent.cfg.task
        if task != self.agent.cfg.task and not self.cfg.recompute_reward:
            msg = (f"task={task!r} relabels bags logged for {self.agent.cfg.task!r}: that needs "
                   "recompute_reward=True")
            raise ConfigError(msg)
        extra = {} if self.classifier is None else {"image_reward": self.classifier}
        return {"task": task, "obs_mode": agents.obs_mode(self.agent.cfg),
                "recompute_reward": self.cfg.recompute_reward, "img_size": mcfg.img_size,
                **extra}

    def _offline(self) -> list[Episode]:
        if self.cfg.dataset_dir is None:
            msg = ("no offline dataset: FOWM finetunes on 50/50 offline/online batches "
                   "(docs/algorithm.md §6); "
                   "pass the dataset directory the checkpoint was pretrained on")
            raise ConfigError(msg)
        return agents.load_dataset(self.cfg.dataset_dir, self.agent.cfg, progress=False,
                                   image_reward=self.classifier)

    def _restore_online(self) -> None:
        for index, entry in enumerate(self.ledger.entries):
            if entry.status != "ingested":
                continue
            path = Path(self.cfg.bag_dir) / entry.name
            try:
                if bag_cache.bag_hash(path) != entry.sha256:
                    msg = "its content changed since it was ingested"
                    raise BagError(msg)
                episode = bags.read_episode_bag(path, **self.read_kwargs)
            except (OSError, BagError) as err:
                log.error("ledger bag %s cannot be restored into the online buffer (%s); "
                          "training goes on without it", entry.name, err)
                continue
            self.sampler.online.add_episode(episode)
            if index >= self.trained_entries:
                self.queue.append((index, len(episode) * self.agent.cfg.schedule.utd))

    # -- ingestion ---------------------------------------------------------------------------------
    def poll(self) -> IngestReport:
        """Ingest every new complete bag once; a bad bag is recorded as failed and skipped."""
        report = IngestReport()
        for path, name, digest in self.scanner.new_bags(self.ledger):
            try:
                episode = bags.read_episode_bag(path, **self.read_kwargs)
                self.sampler.online.add_episode(episode)
            except (BagError, FowmError) as err:
                log.warning("skipping bag %s: %s", name, err)
                self.ledger.add(LedgerEntry(name, digest, "failed", detail=str(err),
                                            time_s=time.time()))
                report.failed.append((name, str(err)))
                continue
            self.ledger.add(LedgerEntry(name, digest, "ingested", steps=len(episode),
                                        success=bool(episode.success), time_s=time.time()))
            self.queue.append((len(self.ledger.entries) - 1,
                               len(episode) * self.agent.cfg.schedule.utd))
            report.ingested.append(name)
        return report

    # -- training --------------------------------------------------------------------------------
    @property
    def owed_updates(self) -> int:
        return sum(n for _, n in self.queue)

    def train_one(self) -> CheckpointInfo | None:
        """One balanced update if any is owed; returns a checkpoint when one was written."""
        if not self.queue:
            return None
        train.update_once(self.agent, self.sampler)
        self.updates += 1
        index, left = self.queue[0]
        if left > 1:
            self.queue[0] = (index, left - 1)
            return None
        self.queue.popleft()
        self.trained_entries = index + 1
        self.episodes_since_ckpt += 1
        if self.episodes_since_ckpt >= self.cfg.checkpoint_every:
            return self.checkpoint()
        return None

    def checkpoint(self) -> CheckpointInfo:
        """Write the full learner state atomically (checkpoints.py), then prune old ones."""
        agent = self.agent
        step = agent.learner.step
        path = self.ckpt_dir / f"{CKPT_PREFIX}{step:08d}{checkpoints.SUFFIX}"
        online = [e for e in self.ledger.entries[: self.trained_entries]
                  if e.status == "ingested"]
        info = agents.save(agent, path, {"online_episodes": float(len(online))},
                           extra_meta={TRAINED_KEY: self.trained_entries,
                                       "online_success": [e.success for e in online]})
        self.episodes_since_ckpt = 0
        self.last_checkpoint = info
        self._prune(keep=path)
        return info

    def _prune(self, keep: Path) -> None:
        old = sorted(self.ckpt_dir.glob(f"{CKPT_PREFIX}*{checkpoints.SUFFIX}"))
        for path in old[: max(0, len(old) - self.cfg.keep_checkpoints)]:
            if path != keep:
                checkpoints.sidecar_path(path).unlink(missing_ok=True)   # sidecar first
                path.unlink(missing_ok=True)


def _model_spec(path: Path) -> dict[str, Any]:
    """What must match to continue training one checkpoint from another: the model section of its
    config and its observation/action spec (read from the JSON sidecar only)."""
    meta = checkpoints.read_meta(path)
    spec = {f"model.{k}": v for k, v in meta.get("config", {}).get("model", {}).items()}
    spec.update(observation_spec=meta.get("observation_spec"), action_spec=meta.get("action_spec"),
                task=meta.get("task"))
    return spec


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint that loads and checks out (hash, sidecar, finite, config); a
    half-written or damaged one is skipped with a warning."""
    found = latest_agent_file(ckpt_dir)
    return None if found is None else found.info.path


def latest_agent_file(ckpt_dir: Path) -> AgentFile | None:
    """``latest_checkpoint``, read: the caller restores from it without reading it again."""
    for path in sorted(Path(ckpt_dir).glob(f"{CKPT_PREFIX}*{checkpoints.SUFFIX}"), reverse=True):
        try:
            return checkpoints.read_agent(path)
        except CheckpointError as err:
            log.warning("skipping checkpoint %s: %s", path.name, err)
    return None


def remove_partial_writes(ckpt_dir: Path) -> list[Path]:
    """Delete temp files a killed writer left (checkpoints.atomic_write names them .*.tmp)."""
    removed = []
    for tmp in Path(ckpt_dir).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def announcement(info: CheckpointInfo | Any, cfg: FowmConfig, *, key: bytes | None = None,
                 sender: str = "fowm_learner") -> WeightsAnnouncement:
    """The /fowm/weights message for a checkpoint (``info``: path, sha256, step): with the lab
    key signed with role "learner" over path, SHA-256, step, task, obs mode and sender
    (runtime.trust); without one unsigned, which a planner that requires signatures refuses."""
    body = trust.announcement(key, path=info.path, sha256=info.sha256, step=info.step, cfg=cfg,
                              sender=sender)
    return WeightsAnnouncement.from_dict(body)


def run_forever(learner: LiveLearner, stop: Callable[[], bool],
                on_checkpoint: Callable[[CheckpointInfo], None], *, poll_s: float = 1.0,
                yield_s: float = 0.002) -> None:
    """The learner thread: poll bags, then train owed updates one at a time, sleeping
    ``yield_s`` between updates so the planner's thread gets the GIL and a core."""
    next_poll = 0.0
    while not stop():
        if time.monotonic() >= next_poll:
            learner.poll()
            next_poll = time.monotonic() + poll_s
        if learner.owed_updates == 0:
            time.sleep(min(poll_s, 0.1))
            continue
        info = learner.train_one()
        if info is not None:
            on_checkpoint(info)
        time.sleep(yield_s)
