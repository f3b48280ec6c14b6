"""Exactly-once bag ingestion, the live learner's schedule, and resuming after a crash."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.loop import collect, tiny_checkpoint

from fowm_core.contract.messages import ABSENT
from fowm_core.errors import FowmError
from fowm_core.learning import checkpoint_file, checkpoints
from fowm_core.runtime import ingest, trust
from fowm_core.runtime.ingest import LiveLearner, LiveLearnerConfig
from fowm_core.runtime.ledger import BagLedger, LedgerEntry

REPO = Path(__file__).resolve().parents[2]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loop")
    return {"dataset": collect(root / "dataset", 3, seed=0),
            "online": collect(root / "online", 3, seed=7),
            "ckpt": tiny_checkpoint(root / "pre.safetensors")}


def _bags(src: Path) -> list[Path]:
    return sorted(p for p in src.iterdir() if (p / "metadata.yaml").exists())


def _learner(data: dict[str, Path], bag_dir: Path, work: Path, **kw: object) -> LiveLearner:
    cfg = LiveLearnerConfig(bag_dir=bag_dir, work_dir=work, checkpoint=data["ckpt"],
                            dataset_dir=data["dataset"], **kw)
    return LiveLearner(cfg)


def test_ledger_round_trips_and_refuses_a_damaged_file(tmp_path: Path) -> None:
    ledger = BagLedger(tmp_path / "ledger.json")
    ledger.add(LedgerEntry("a", "11", "ingested", steps=25))
    ledger.add(LedgerEntry("b", "22", "failed", detail="truncated"))
    with pytest.raises(FowmError, match="already"):
        ledger.add(LedgerEntry("a", "11", "ingested"))
    again = BagLedger(tmp_path / "ledger.json")
    assert again.has("a", "11") and again.has("b", "22") and not again.has("a", "33")
    assert [e.name for e in again.ingested] == ["a"] and [e.name for e in again.failed] == ["b"]
    assert not list(tmp_path.glob(".*.tmp"))            # the atomic write left no temp file
    (tmp_path / "ledger.json").write_text("{not json")
    with pytest.raises(FowmError, match="cannot be read"):
        BagLedger(tmp_path / "ledger.json")


def test_each_bag_is_ingested_once_and_a_corrupt_bag_is_reported_and_skipped(
        data: dict[str, Path], tmp_path: Path) -> None:
    bag_dir = tmp_path / "bags"
    bag_dir.mkdir()
    good = _bags(data["online"])
    for bag in good:
        shutil.copytree(bag, bag_dir / bag.name)
    broken = bag_dir / "zz_truncated"
    shutil.copytree(good[0], broken)
    mcap = next(broken.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 3])
    (bag_dir / ".hidden_in_progress").mkdir()           # a recorder's temp dir: never read
    shutil.copy(good[0] / "metadata.yaml", bag_dir / ".hidden_in_progress")

    learner = _learner(data, bag_dir, tmp_path / "work")
    report = learner.poll()
    assert report.ingested == [b.name for b in good]
    assert [name for name, _ in report.failed] == ["zz_truncated"]
    assert "corrupted or truncated" in report.failed[0][1] or "cannot" in report.failed[0][1]
    assert len(learner.sampler.online) == 3 * 25
    assert learner.owed_updates == 3 * 25 * learner.agent.cfg.schedule.utd
    second = learner.poll()                             # nothing new: nothing twice
    assert second.ingested == [] and second.failed == []
    assert len(learner.sampler.online) == 3 * 25
    ledger = json.loads((tmp_path / "work" / "ledger.json").read_text())
    assert [(e["name"], e["status"]) for e in ledger["entries"]] == [
        *((b.name, "ingested") for b in good), ("zz_truncated", "failed")]


def test_training_follows_the_schedule_and_checkpoints_announce_step_and_hash(
        data: dict[str, Path], tmp_path: Path) -> None:
    bag_dir = tmp_path / "bags"
    shutil.copytree(_bags(data["online"])[0], bag_dir / "ep0")
    learner = _learner(data, bag_dir, tmp_path / "work")
    step0 = learner.agent.learner.step
    learner.poll()
    infos = [info for _ in range(25) if (info := learner.train_one()) is not None]
    assert learner.agent.learner.step == step0 + 25 and learner.owed_updates == 0
    assert len(infos) == 1 and infos[0].step == step0 + 25
    note = ingest.announcement(infos[0], learner.agent.cfg)
    assert note.sha256 == infos[0].sha256 and Path(note.path).exists()
    assert note.step == infos[0].step and not note.is_live and note.signature is ABSENT
    key = trust.load_key(trust.generate_key(tmp_path / "lab.key"))
    signed = ingest.announcement(infos[0], learner.agent.cfg, key=key, sender="fowm_learner/7")
    assert (signed.role, signed.sender, signed.task) == ("learner", "fowm_learner/7",
                                                          learner.agent.cfg.task)
    assert trust.verify(key, signed.as_dict(), signed.signature)
    _, meta = checkpoints.load_checkpoint(note.path)
    assert meta[ingest.TRAINED_KEY] == 1
    assert learner.train_one() is None                  # nothing owed: no update


def test_restart_resumes_from_ledger_and_checkpoint_without_loss_or_duplicates(
        data: dict[str, Path], tmp_path: Path) -> None:
    bag_dir, work = tmp_path / "bags", tmp_path / "work"
    bags_ = _bags(data["online"])
    shutil.copytree(bags_[0], bag_dir / "ep0")
    first = _learner(data, bag_dir, work)
    first.poll()
    while first.owed_updates:
        first.train_one()                               # ep0 trained and checkpointed
    saved_step = first.agent.learner.step
    adam = first.agent.learner.optim.state_dict()["state"][0]
    saved_adam = {k: v.clone() for k, v in adam.items()}
    shutil.copytree(bags_[1], bag_dir / "ep1")
    first.poll()                                        # ep1 in the ledger ...
    for _ in range(5):
        first.train_one()                               # ... but its training dies with us
    del first

    again = _learner(data, bag_dir, work)
    assert again.resumed_from is not None and again.agent.learner.step == saved_step
    restored = again.agent.learner.optim.state_dict()["state"][0]
    for key, value in saved_adam.items():
        assert torch.equal(restored[key], value), key   # Adam moments came back exactly
    assert len(again.sampler.online) == 2 * 25          # both episodes, once each
    assert again.owed_updates == 25                     # ep1's updates are owed again
    assert again.poll().ingested == []                  # and neither bag is read as new


def test_starting_and_resuming_read_each_checkpoint_file_once(
        data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    read_file = checkpoint_file.read_regular_file       # every checkpoint byte is read here

    def counting(path: Path, max_bytes: int) -> bytes:
        if Path(path).suffix == checkpoints.SUFFIX:
            reads.append(Path(path).name)
        return read_file(path, max_bytes)

    monkeypatch.setattr(checkpoint_file, "read_regular_file", counting)
    bag_dir, work = tmp_path / "bags", tmp_path / "work"
    shutil.copytree(_bags(data["online"])[0], bag_dir / "ep0")
    first = _learner(data, bag_dir, work)
    assert reads == [data["ckpt"].name]                 # the pretrained start, once
    first.poll()
    while first.owed_updates:
        first.train_one()
    assert first.last_checkpoint is not None
    reads.clear()
    again = _learner(data, bag_dir, work)
    assert again.resumed_from == first.last_checkpoint.path
    assert reads == [first.last_checkpoint.path.name]   # found, checked and restored: one read
    assert again.trained_entries == 1 and again.owed_updates == 0


def test_the_live_learner_imports_nothing_from_jobs() -> None:
    """runtime sits below jobs: the learner node must not pull in the CLI's workflows."""
    code = ("import sys, fowm_core.runtime.ingest, fowm_core.runtime.hotswap; "
            "print(sorted(m for m in sys.modules if m.startswith('fowm_core.jobs')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_half_written_checkpoints_are_never_picked_and_temp_files_are_cleaned(
        data: dict[str, Path], tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "checkpoints"
    good = tiny_checkpoint(ckpt_dir / "step_00000010.safetensors", step=10)
    # What a kill between the tensor write and the sidecar write leaves: a newer tensor file
    # whose sidecar is missing, and one whose sidecar describes other bytes; plus a temp file.
    shutil.copy(good, ckpt_dir / "step_00000020.safetensors")
    tiny_checkpoint(ckpt_dir / "step_00000030.safetensors", step=30, seed=1)
    data30 = (ckpt_dir / "step_00000030.safetensors").read_bytes()
    (ckpt_dir / "step_00000030.safetensors").write_bytes(data30[: len(data30) // 2])
    (ckpt_dir / ".step_00000040.safetensors.abc.tmp").write_bytes(b"partial")
    assert ingest.latest_checkpoint(ckpt_dir) == good
    assert len(ingest.remove_partial_writes(ckpt_dir)) == 1
    assert not list(ckpt_dir.glob(".*.tmp"))


_WORKER = """
import sys, torch
from pathlib import Path
from fowm_core.runtime.ingest import LiveLearner, LiveLearnerConfig, run_forever
torch.set_num_threads(1)
bag_dir, work, ckpt, dataset = map(Path, sys.argv[1:5])
learner = LiveLearner(LiveLearnerConfig(bag_dir=bag_dir, work_dir=work, checkpoint=ckpt,
                                        dataset_dir=dataset, checkpoint_every=1))
print("ready", flush=True)
run_forever(learner, lambda: False, lambda info: print("ckpt", info.step, flush=True),
            poll_s=0.05, yield_s=0.0)
"""


def test_a_work_dir_of_another_model_is_refused_not_resumed(
        data: dict[str, Path], tmp_path: Path) -> None:
    bag_dir, work = tmp_path / "bags", tmp_path / "work"
    shutil.copytree(_bags(data["online"])[0], bag_dir / "ep0")
    first = _learner(data, bag_dir, work)
    first.poll()
    while first.owed_updates:
        first.train_one()
    # Same work dir, another pretrained model (a reach model: other state size and action size).
    other = tiny_checkpoint(tmp_path / "reach.safetensors", task="reach")
    cfg = LiveLearnerConfig(bag_dir=bag_dir, work_dir=work, checkpoint=other,
                            dataset_dir=data["dataset"])
    with pytest.raises(FowmError, match=r"belongs to another model .*differ; use a fresh work dir"):
        LiveLearner(cfg)


@pytest.mark.slow
def test_a_learner_killed_mid_training_restarts_from_a_whole_checkpoint(
        data: dict[str, Path], tmp_path: Path) -> None:
    bag_dir, work = tmp_path / "bags", tmp_path / "work"
    for i, bag in enumerate(_bags(data["online"])):
        shutil.copytree(bag, bag_dir / f"ep{i}")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(bag_dir), str(work),
                             str(data["ckpt"]), str(data["dataset"])],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        assert proc.stdout is not None
        while len([line for line in lines if line.startswith("ckpt")]) < 2:
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        proc.send_signal(signal.SIGKILL)                # no chance to finish anything
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    ckpt_dir = work / "checkpoints"
    latest = ingest.latest_checkpoint(ckpt_dir)
    assert latest is not None
    # Every checkpoint the planner could be told about loads whole (hash and sidecar agree).
    for path in ckpt_dir.glob("step_*.safetensors"):
        if checkpoints.sidecar_path(path).exists():
            checkpoints.load_checkpoint(path)
    _, meta = checkpoints.load_checkpoint(latest)
    again = _learner(data, bag_dir, work)
    assert again.agent.learner.step == meta["step"]
    assert len(again.sampler.online) == 3 * 25
    trained = meta[ingest.TRAINED_KEY]
    assert again.owed_updates == (3 - trained) * 25
    while again.owed_updates:
        again.train_one()
    assert again.agent.learner.step == meta["step"] + (3 - trained) * 25
    assert again.trained_entries == 3


def test_a_classifier_rewards_offline_and_online_bags(tmp_path: Path) -> None:
    """docs/rewards.md: with a classifier every reward the live learner trains on, offline and
    online, is its probability in [0, 1] (the twin's lift rewards are negative)."""
    from fowm_core.jobs import workflows
    from fowm_core.learning import success

    for name, seed in (("dataset", 0), ("bags", 5)):
        workflows.collect("lift", 1, tmp_path / name, seed=seed, obs_mode="all", progress=False)
    clf = tmp_path / "clf" / success.FILE_NAME
    success.SuccessClassifier.create(seed=0).save(clf, {"task": "lift"})
    cfg = LiveLearnerConfig(bag_dir=tmp_path / "bags", work_dir=tmp_path / "work",
                            checkpoint=tiny_checkpoint(tmp_path / "pre.safetensors"),
                            dataset_dir=tmp_path / "dataset", classifier=clf.parent)
    learner = LiveLearner(cfg)
    assert learner.poll().ingested
    for buffer in (learner.sampler.offline, learner.sampler.online):
        rewards = buffer._reward[: len(buffer)]
        assert len(rewards) == 25 and rewards.min() >= 0.0 and rewards.max() <= 1.0
    success.SuccessClassifier.create(seed=0).save(clf, {"task": "reach"})
    with pytest.raises(FowmError, match="trained on task 'reach'"):
        LiveLearner(dataclasses.replace(cfg, work_dir=tmp_path / "work2"))
