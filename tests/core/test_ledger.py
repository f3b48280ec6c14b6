"""The bag directory never stops learning: non-bags are reported once and skipped unhashed, a bag
that keeps failing holds one ledger entry, and the good bags beside them are learned."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from helpers.loop import collect, tiny_checkpoint

from fowm_core.data import bag_cache
from fowm_core.runtime import ledger as ledger_mod
from fowm_core.runtime.ingest import LiveLearner, LiveLearnerConfig
from fowm_core.runtime.ledger import MAX_FAILED_ATTEMPTS, BagLedger, BagScanner, LedgerEntry

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ledger")
    return {"dataset": collect(root / "dataset", 2, seed=0),
            "online": collect(root / "online", 2, seed=3),
            "ckpt": tiny_checkpoint(root / "pre.safetensors")}


def _bags(src: Path) -> list[Path]:
    return sorted(p for p in src.iterdir() if (p / "metadata.yaml").exists())


def _junk(bag_dir: Path, good: Path) -> None:
    shutil.copy(good / "metadata.yaml", bag_dir / "metadata.yaml")   # stray, at the top
    (bag_dir / "notes.txt").write_text("not a bag")
    (bag_dir / "half_written").mkdir()                               # no metadata.yaml yet
    (bag_dir / "half_written" / "x.mcap").write_bytes(b"\0" * 16)
    (bag_dir / ".tmp_recorder").mkdir()                              # hidden: never looked at


def test_scan_never_takes_the_watched_directory_for_a_bag(tmp_path: Path,
                                                          data: dict[str, Path]) -> None:
    good = _bags(data["online"])[0]
    shutil.copytree(good, tmp_path / "ep0")
    _junk(tmp_path, good)
    bags, others = bag_cache.scan_bag_dir(tmp_path)
    assert bags == [tmp_path / "ep0"]
    assert set(others) == {"metadata.yaml", "notes.txt", "half_written"}
    assert "top of the bag directory" in others["metadata.yaml"]
    assert bag_cache.find_bags(good) == [good]          # a dataset may still be one bag


def test_stray_files_are_reported_once_and_learning_goes_on(
        data: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    bag_dir = tmp_path / "bags"
    bag_dir.mkdir()
    good = _bags(data["online"])
    _junk(bag_dir, good[0])
    cfg = LiveLearnerConfig(bag_dir=bag_dir, work_dir=bag_dir / ".learner",
                            checkpoint=data["ckpt"], dataset_dir=data["dataset"])
    learner = LiveLearner(cfg)
    hashed: list[Path] = []
    real_hash = bag_cache.bag_hash
    monkeypatch.setattr(ledger_mod.bag_cache, "bag_hash",
                        lambda p: hashed.append(Path(p)) or real_hash(p))
    with caplog.at_level(logging.WARNING, logger="fowm_core.runtime.ledger"):
        for _ in range(5):
            assert learner.poll().ingested == []
    assert set(learner.scanner.ignored) == {"metadata.yaml", "notes.txt", "half_written"}
    reports = [r for r in caplog.records if r.getMessage().startswith("ignoring")]
    assert len(reports) == 3                          # once each, not once per poll
    assert hashed == [] and learner.ledger.entries == []
    shutil.copytree(good[0], bag_dir / "ep0")         # a real episode arrives: it is learned
    assert learner.poll().ingested == ["ep0"]
    assert [e.name for e in learner.ledger.entries] == ["ep0"]


def test_a_bag_failing_again_and_again_holds_one_entry_then_is_ignored(
        data: dict[str, Path], tmp_path: Path) -> None:
    bag_dir = tmp_path / "bags"
    broken = bag_dir / "ep_broken"
    shutil.copytree(_bags(data["online"])[0], broken)
    cfg = LiveLearnerConfig(bag_dir=bag_dir, work_dir=tmp_path / "work",
                            checkpoint=data["ckpt"], dataset_dir=data["dataset"])
    learner = LiveLearner(cfg)
    mcap = next(broken.glob("*.mcap"))
    for attempt in range(MAX_FAILED_ATTEMPTS + 2):   # rewritten each time: a new content hash
        mcap.write_bytes(b"\x89MCAP0\r\n" + bytes([attempt]) * 64)
        learner.poll()
    assert len(learner.ledger.entries) == 1
    entry = learner.ledger.entries[0]
    assert entry.status == "failed" and entry.attempts == MAX_FAILED_ATTEMPTS
    assert "ep_broken" in learner.scanner.ignored
    reloaded = BagLedger(tmp_path / "work" / "ledger.json")       # survives a restart
    assert reloaded.failed_entry("ep_broken").attempts == MAX_FAILED_ATTEMPTS


def test_a_failed_entry_is_replaced_in_place_keeping_indices(tmp_path: Path) -> None:
    ledger = BagLedger(tmp_path / "ledger.json")
    ledger.add(LedgerEntry("a", "1", "ingested"))
    ledger.add(LedgerEntry("b", "2", "failed", detail="x"))
    ledger.add(LedgerEntry("c", "3", "ingested"))
    ledger.add(LedgerEntry("b", "4", "failed", detail="y"))
    assert [(e.name, e.sha256, e.attempts) for e in ledger.entries] == [
        ("a", "1", 1), ("b", "4", 2), ("c", "3", 1)]
    assert ledger.has("b", "4") and not ledger.has("b", "2")
    ledger.add(LedgerEntry("b", "5", "ingested"))     # fixed at last: learned as usual
    assert ledger.entries[-1].name == "b" and len(ledger.ingested) == 3


def test_scanner_on_a_missing_directory_finds_nothing(tmp_path: Path) -> None:
    assert BagScanner(tmp_path / "absent").new_bags(BagLedger(tmp_path / "l.json")) == []
