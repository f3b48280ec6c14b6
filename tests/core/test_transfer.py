"""Transfers between hosts without a shared disk (runtime.transfer, runtime.remote)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from helpers.loop import collect, tiny_config, tiny_model_checkpoint

from fowm_core.data import bag_cache
from fowm_core.learning import checkpoints
from fowm_core.runtime import trust
from fowm_core.runtime.hotswap import Weights
from fowm_core.runtime.ingest import announcement
from fowm_core.runtime.origin import TrustPolicy
from fowm_core.runtime.remote import (
    BagInbox,
    BagOutbox,
    LinkWatch,
    WeightsInbox,
    checkpoint_files,
    link_message,
    parse_link,
)
from fowm_core.runtime.transfer import (
    Reassembler,
    TransferError,
    frames,
    pack_files,
    parse_frame,
    unpack_files,
)

PAYLOAD = bytes(range(256)) * 1000 + b"tail"


def test_frames_reassemble_in_any_order_and_duplicates_are_harmless() -> None:
    parts = list(frames("weights", "a#1", PAYLOAD, {"x": 1}, chunk_bytes=10_000))
    assert len(parts) == 26
    r = Reassembler("weights", max_bytes=1 << 20, timeout_s=5)
    order = parts[::-1] + parts[:3]
    out = [r.feed(p, 0.0) for p in order[:-3]]
    assert out[-1] is not None and all(o is None for o in out[:-1])
    assert out[-1].payload == PAYLOAD and out[-1].meta == {"x": 1}
    assert [r.feed(p, 0.1) for p in order[-3:]] == [None] * 3      # a finished id is ignored
    assert r.in_progress is None and r.completed == 1


def test_a_transfer_above_the_limit_is_refused_without_allocating() -> None:
    r = Reassembler("weights", max_bytes=1000, timeout_s=5)
    first, *rest = frames("weights", "big#1", PAYLOAD, chunk_bytes=500)
    with pytest.raises(TransferError, match="limit is 1000"):
        r.feed(first, 0.0)
    assert r.in_progress is None
    assert all(r.feed(p, 0.0) is None for p in rest[:5])           # its later frames: ignored


def test_an_incomplete_transfer_times_out_and_a_newer_one_supersedes() -> None:
    r = Reassembler("episode", max_bytes=1 << 20, timeout_s=2.0)
    old = list(frames("episode", "bag#1", PAYLOAD, chunk_bytes=50_000))
    r.feed(old[0], 0.0)
    assert r.in_progress == ("bag#1", 50_000, len(PAYLOAD))
    assert r.expire(1.0) is None
    assert "silent for 3.0 s" in (r.expire(3.0) or "")
    r.feed(old[1], 3.5)                                  # too late: the id was dropped
    assert r.in_progress is None
    r.feed(next(frames("episode", "bag#2", PAYLOAD, chunk_bytes=50_000)), 4.0)
    new = list(frames("episode", "bag#3", b"small"))
    done = r.feed(new[0], 4.1)
    assert done is not None and done.payload == b"small"
    assert "superseded by bag#3" in r.dropped[-1]


def test_a_corrupted_payload_never_completes() -> None:
    parts = list(frames("weights", "c#1", PAYLOAD, chunk_bytes=100_000))
    bad = bytearray(parts[1])
    bad[-1] ^= 0xFF
    r = Reassembler("weights", max_bytes=1 << 20, timeout_s=5)
    r.feed(parts[0], 0)
    r.feed(bytes(bad), 0)
    with pytest.raises(TransferError, match="SHA-256 does not match"):
        r.feed(parts[2], 0)


@pytest.mark.parametrize("frame", [b"", b"XXXX\0\0\0\0", b"FWX1\0\0\0\x05{}",
                                   b"FWX1\xff\xff\xff\xff"])
def test_malformed_frames_are_refused(frame: bytes) -> None:
    with pytest.raises(TransferError):
        parse_frame(frame)


def test_frame_of_another_kind_is_refused() -> None:
    with pytest.raises(TransferError, match="kind 'episode'"):
        Reassembler("weights", 1 << 20, 5).feed(next(frames("episode", "e#1", b"x")), 0)


def test_pack_files_round_trip_and_refuses_escaping_names() -> None:
    files = {"metadata.yaml": b"a", "sub/x.mcap": b"bc"}
    assert unpack_files(pack_files(files)) == files
    for name in ("../x", "/etc/passwd", ".hidden", "a/../../b"):
        with pytest.raises(TransferError, match="plain relative path"):
            pack_files({name: b"x"})
    with pytest.raises(TransferError, match="manifest covers"):
        unpack_files(pack_files(files) + b"extra")


def test_bags_ship_exactly_once_across_lost_acks_and_restarts(tmp_path: Path) -> None:
    robot = collect(tmp_path / "robot", episodes=2, task="reach")
    learner_dir = tmp_path / "learner"
    outbox, inbox = BagOutbox(robot, ack_timeout_s=10), BagInbox(learner_dir)
    tid, meta, payload = outbox.next_send(0.0)
    assert tid.endswith("#1") and outbox.next_send(5.0) is None        # one in flight
    ack = inbox.accept(meta, payload)
    # The ack is lost: re-sent after the timeout, received again, written once.
    tid2, meta2, payload2 = outbox.next_send(11.0)
    assert tid2 == f"{meta['name']}#2"
    assert inbox.accept(meta2, payload2) == ack and inbox.received == [meta["name"]]
    assert outbox.acked(ack["name"], ack["sha256"])
    assert not outbox.acked(ack["name"], ack["sha256"])                # twice: no-op
    # The robot restarts: its ledger remembers; only the second bag is left.
    outbox = BagOutbox(robot)
    _, meta3, payload3 = outbox.next_send(0.0)
    assert meta3["name"] != meta["name"]
    outbox.acked(**inbox.accept(meta3, payload3))
    assert outbox.next_send(100.0) is None and outbox.shipped == 2
    for name in (meta["name"], meta3["name"]):
        assert bag_cache.bag_hash(learner_dir / name) == bag_cache.bag_hash(robot / name)
    assert not [p for p in learner_dir.iterdir() if p.name.startswith(".")]


def test_a_restarted_receiver_acknowledges_a_bag_it_has_without_a_second_copy(
        tmp_path: Path) -> None:
    robot = collect(tmp_path / "robot", episodes=1, task="reach")
    _, meta, payload = BagOutbox(robot).next_send(0.0)
    ack = BagInbox(tmp_path / "learner").accept(meta, payload)
    mtime = (tmp_path / "learner" / meta["name"] / "metadata.yaml").stat().st_mtime_ns
    again = BagInbox(tmp_path / "learner")          # the learner's host restarted
    assert again.accept(meta, payload) == ack and again.received == []
    assert (tmp_path / "learner" / meta["name"] / "metadata.yaml").stat().st_mtime_ns == mtime


def test_a_bag_whose_files_do_not_match_is_not_written(tmp_path: Path) -> None:
    robot = collect(tmp_path / "robot", episodes=1, task="reach")
    _, meta, payload = BagOutbox(robot).next_send(0.0)
    inbox = BagInbox(tmp_path / "learner")
    with pytest.raises(TransferError, match="do not hash"):
        inbox.accept({**meta, "sha256": "0" * 64}, payload)
    assert list((tmp_path / "learner").iterdir()) == []
    inbox.accept(meta, payload)
    with pytest.raises(TransferError, match="another content"):
        inbox.accept({**meta, "sha256": "1" * 64}, payload)
    for bad in ({"name": "../x", "sha256": meta["sha256"]}, {"name": 3}):
        with pytest.raises(TransferError):
            inbox.accept(bad, payload)


def test_a_stale_incoming_directory_is_removed_at_start(tmp_path: Path) -> None:
    (tmp_path / ".incoming-abc").mkdir(parents=True)
    BagInbox(tmp_path)
    assert not (tmp_path / ".incoming-abc").exists()


def _learner_checkpoint(tmp_path: Path, key: bytes, step: int) -> tuple[Path, dict]:
    path = tiny_model_checkpoint(tmp_path / "learner" / f"learner_{step:08d}.safetensors",
                                 step=step)
    info = Weights(path.name, hashlib.sha256(path.read_bytes()).hexdigest(), step)
    return path, announcement(info, tiny_config(), key=key, sender="fowm_learner/1").as_dict()


def test_weights_travel_and_the_planner_policy_reads_them_from_its_store(tmp_path, key) -> None:
    path, note = _learner_checkpoint(tmp_path, key, 25)
    meta, payload = checkpoint_files(path, note)
    store = tmp_path / "robot_store"
    got = WeightsInbox(store, key).accept(json.loads(json.dumps(meta)), payload)
    assert got == note and got["path"] == path.name
    assert (store / path.name).read_bytes() == path.read_bytes()
    policy = TrustPolicy(store, 1 << 24, key)
    cfg = tiny_config()
    ann = policy.check_announcement(got, step_floor=0, task=cfg.task,
                                    obs_mode=cfg.model.modality.value)
    assert policy.read_checkpoint(ann, cfg).meta["step"] == 25
    assert WeightsInbox(store, key).newest_step() == 25
    assert WeightsInbox(store, key).newest_announcement() == note     # after a restart


def test_weights_not_signed_or_not_matching_are_not_stored(tmp_path, key) -> None:
    path, note = _learner_checkpoint(tmp_path, key, 25)
    store = tmp_path / "store"
    inbox = WeightsInbox(store, key)
    meta, payload = checkpoint_files(path, note)
    forged = {**note, "step": 99}
    with pytest.raises(TransferError, match="not signed"):
        inbox.accept({"announcement": forged}, payload)
    other = trust.announcement(key, path="/abs/" + path.name, sha256=note["sha256"], step=25,
                               cfg=tiny_config(), sender="x")
    with pytest.raises(TransferError, match="bare file name"):
        inbox.accept({"announcement": other}, payload)
    swapped = pack_files({path.name: b"not the tensor",
                          checkpoints.sidecar_path(path).name: b"{}"})
    with pytest.raises(TransferError, match="do not hash"):
        inbox.accept(meta, swapped)
    assert list(store.iterdir()) == []


def test_the_store_keeps_the_newest_checkpoints(tmp_path, key) -> None:
    inbox = WeightsInbox(tmp_path / "store", key, keep=2)
    for step in (25, 50, 75):
        inbox.accept(*checkpoint_files(*_learner_checkpoint(tmp_path, key, step)))
    assert sorted(p.name for p in (tmp_path / "store").glob("*.safetensors")) == [
        "learner_00000050.safetensors", "learner_00000075.safetensors"]
    assert len(list((tmp_path / "store").glob("*.announcement"))) == 2
    assert inbox.newest_announcement()["step"] == 75


def test_a_relative_announced_path_cannot_leave_the_trusted_dir(tmp_path, key) -> None:
    store = tmp_path / "store"
    store.mkdir()
    outside = tiny_model_checkpoint(tmp_path / "x.safetensors")
    with pytest.raises(trust.TrustError, match="outside the trusted directory"):
        TrustPolicy(store, 1 << 24, key).checked_path(Path("..") / outside.name)
    shutil.copy(outside, store / "x.safetensors")
    assert TrustPolicy(store, 1 << 24, key).checked_path("x.safetensors") == (
        store / "x.safetensors").resolve()


def test_link_watch_reports_partitions() -> None:
    watch = LinkWatch("learner", timeout_s=3.0, now_s=0.0)
    assert watch.state(5.0) == (False, "no learner heard for 5 s (never heard since start)")
    watch.heard(parse_link(link_message("learner", "a", bags_received=1)), 6.0)
    assert watch.state(7.0)[0] and watch.peer["bags_received"] == 1
    assert watch.state(40.0) == (False, "no learner heard for 34 s")
    watch.heard({"role": "learner"}, 41.0)
    assert watch.partitions == 1 and watch.longest_s == 35.0
    with pytest.raises(Exception, match="role"):
        parse_link('{"role": "admin"}')
