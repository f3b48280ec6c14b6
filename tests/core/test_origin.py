"""Where weights may come from (fowm_core.runtime.origin): signed announcements checked for role,
fields, rollback and labels; the trusted directory, bounded regular files that never block, the
mandatory SHA-256 of the bytes read, and the model built from exactly those bytes."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers.loop import tiny_config, tiny_model_checkpoint

from fowm_core.errors import CheckpointError
from fowm_core.learning import checkpoints
from fowm_core.runtime import trust
from fowm_core.runtime.origin import TrustPolicy, read_bounded
from fowm_core.runtime.trust import (
    ROLE_LEARNER,
    ROLE_PLANNER_LIVE,
    SIGNATURE,
    TrustError,
    authentic_live,
    signed,
)

CFG = tiny_config()                  # lift, state
TASK, MODE = CFG.task, CFG.model.modality.value
FIELDS = {"path": "/ckpt/step_00000025.safetensors", "sha256": "ab" * 32, "step": 25,
          "task": "reach", "obs_mode": "state", "role": ROLE_LEARNER, "sender": "learner/1"}



def _announce(key: bytes | None, path: Path, **over) -> dict:
    fields = {"path": str(path), "sha256": _sha(path),
              "step": checkpoints.read_meta(path)["step"], "task": TASK,
              "obs_mode": MODE, "role": ROLE_LEARNER, "sender": "fowm_learner/1234", **over}
    return signed(key, **fields)


def _policy(ckpt_dir: Path, key: bytes | None, max_bytes: int = 1 << 24) -> TrustPolicy:
    return TrustPolicy(ckpt_dir, max_bytes, key)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_announcement_builds_the_learner_and_the_live_bodies(key, ckpt_dir) -> None:
    path = tiny_model_checkpoint(ckpt_dir / "step_00000040.safetensors", step=40)
    body = trust.announcement(key, path=path, sha256=_sha(path), step=40, cfg=CFG,
                              sender="fowm_learner")
    assert body["role"] == ROLE_LEARNER and (body["task"], body["obs_mode"]) == (TASK, MODE)
    assert _policy(ckpt_dir, key).check_announcement(body, step_floor=0, task=TASK,
                                                     obs_mode=MODE).path == path
    live = trust.announcement(key, path=path, sha256=_sha(path), step=None, cfg=CFG,
                              sender="fowm_planner", role=ROLE_PLANNER_LIVE, live=True, swaps=0)
    assert authentic_live(key, live) and live["live"] is True
    with pytest.raises(TrustError, match="role 'admin'"):
        trust.announcement(key, path=path, sha256="", step=1, cfg=CFG, sender="x", role="admin")


# -- announcements -------------------------------------------------------------------------------
def test_a_signed_announcement_from_the_trusted_dir_is_read_and_built(key, ckpt_dir) -> None:
    path = tiny_model_checkpoint(ckpt_dir / "step_00000040.safetensors", step=40)
    policy = _policy(ckpt_dir, key)
    ann = policy.check_announcement(_announce(key, path), step_floor=25, task=TASK,
                                    obs_mode=MODE)
    assert ann.step == 40 and ann.sender == "fowm_learner/1234"
    trusted = policy.read_checkpoint(ann, CFG)
    expected, _ = checkpoints.load_validated_model(path, CFG.model)
    for name, value in expected.state_dict().items():
        assert torch.equal(trusted.model.state_dict()[name], value), name
    assert not trusted.model.training and trusted.meta["step"] == 40


@pytest.mark.parametrize(("change", "match"), [
    ({SIGNATURE: None}, "unsigned"),
    ({SIGNATURE: "00" * 32}, "does not verify"),
    ({"path": "/tmp/other.safetensors"}, "does not verify"),        # altered after signing
    ({"step": 10_000}, "does not verify"),
])
def test_unsigned_or_tampered_announcements_are_refused(key, ckpt_dir, change, match) -> None:
    path = tiny_model_checkpoint(ckpt_dir / "s.safetensors", step=40)
    body = {**_announce(key, path), **change}
    if body[SIGNATURE] is None:
        del body[SIGNATURE]
    with pytest.raises(TrustError, match=match):
        _policy(ckpt_dir, key).check_announcement(body, step_floor=0, task=TASK, obs_mode=MODE)


def test_only_the_learner_role_may_announce(key, ckpt_dir) -> None:
    """A replayed live message of the planner is authentic but is no announcement."""
    path = tiny_model_checkpoint(ckpt_dir / "s.safetensors", step=40)
    body = _announce(key, path, role=ROLE_PLANNER_LIVE)
    with pytest.raises(TrustError, match="role 'planner-live'"):
        _policy(ckpt_dir, key).check_announcement(body, step_floor=0, task=TASK, obs_mode=MODE)


@pytest.mark.parametrize(("change", "match"), [
    ({"sha256": ""}, "SHA-256 .*mandatory"),
    ({"sha256": "zz" * 32}, "SHA-256 .*mandatory"),
    ({"step": "abc"}, "step 'abc'"),
    ({"step": True}, "step 'True'"),
    ({"step": -1}, "step '-1'"),
    ({"path": ""}, "path ''"),
    ({"path": 7}, "path '7'"),
])
def test_malformed_fields_are_refused_even_when_signed(key, ckpt_dir, change, match) -> None:
    body = signed(key, **{**FIELDS, **change})
    with pytest.raises(TrustError, match=match):
        _policy(ckpt_dir, key).check_announcement(body, step_floor=None, task="reach",
                                                  obs_mode="state")


def test_a_rollback_to_an_older_step_is_refused(key, ckpt_dir) -> None:
    """The floor is the highest step ever live: an old (genuinely signed) announcement replayed
    later, or the learner's announcement of what is live already, never swaps."""
    old = tiny_model_checkpoint(ckpt_dir / "step_00000025.safetensors", step=25)
    policy = _policy(ckpt_dir, key)
    for floor in (25, 100):
        with pytest.raises(TrustError, match=f"step 25, not above {floor}.*rollback"):
            policy.check_announcement(_announce(key, old), step_floor=floor, task=TASK,
                                      obs_mode=MODE)
    assert policy.check_announcement(_announce(key, old), step_floor=None, task=TASK,
                                     obs_mode=MODE).step == 25


def test_a_checkpoint_labelled_for_another_task_or_obs_mode_is_refused(key, ckpt_dir) -> None:
    reach = tiny_model_checkpoint(ckpt_dir / "reach.safetensors", task="reach", step=40)
    policy = _policy(ckpt_dir, key)
    with pytest.raises(TrustError, match=r"task='reach'.*this planner runs task='lift'"):
        policy.check_announcement(_announce(key, reach, task="reach"), step_floor=0, task=TASK,
                                  obs_mode=MODE)
    # The announcement lies about the labels: the sidecar's labels are checked as well.
    ann = policy.check_announcement(_announce(key, reach), step_floor=0, task=TASK, obs_mode=MODE)
    with pytest.raises(TrustError, match=r"reach.safetensors is labelled task='reach'"):
        policy.read_checkpoint(ann, CFG)
    with pytest.raises(TrustError, match="obs_mode='all'"):
        policy.check_announcement(_announce(key, reach, obs_mode="all"), step_floor=0,
                                  task=TASK, obs_mode=MODE)


def test_a_sidecar_step_that_disagrees_with_the_announcement_is_refused(key, ckpt_dir) -> None:
    path = tiny_model_checkpoint(ckpt_dir / "s.safetensors", step=40)
    policy = _policy(ckpt_dir, key)
    ann = policy.check_announcement(_announce(key, path, step=90), step_floor=50, task=TASK,
                                    obs_mode=MODE)
    with pytest.raises(TrustError, match="records step 40 but was announced as step 90"):
        policy.read_checkpoint(ann, CFG)


# -- where weights may come from -----------------------------------------------------------------
def test_a_path_outside_the_trusted_dir_is_refused_even_through_a_symlink(key, tmp_path,
                                                                          ckpt_dir) -> None:
    outside = tiny_model_checkpoint(tmp_path / "elsewhere" / "evil.safetensors", step=40)
    policy = _policy(ckpt_dir, key)
    for path in (outside, ckpt_dir / ".." / "elsewhere" / "evil.safetensors", Path("/dev/zero")):
        with pytest.raises(TrustError, match="outside the trusted directory"):
            policy.checked_path(path)
    link = ckpt_dir / "looks_local.safetensors"
    link.symlink_to(outside)
    with pytest.raises(TrustError, match=r"really .*elsewhere.*outside"):
        policy.checked_path(link)
    (ckpt_dir / "zero.safetensors").symlink_to("/dev/zero")
    with pytest.raises(TrustError, match="outside"):
        policy.checked_path(ckpt_dir / "zero.safetensors")
    ann = policy.check_announcement(_announce(key, outside), step_floor=0, task=TASK,
                                    obs_mode=MODE)
    with pytest.raises(TrustError, match="outside"):
        policy.read_checkpoint(ann, CFG)


def test_a_symlink_inside_the_trusted_dir_to_a_file_inside_it_is_accepted(key, ckpt_dir) -> None:
    real = tiny_model_checkpoint(ckpt_dir / "step_00000040.safetensors", step=40)
    (ckpt_dir / "latest.safetensors").symlink_to(real.name)
    assert _policy(ckpt_dir, key).checked_path(ckpt_dir / "latest.safetensors") == real.resolve()


def test_fifos_directories_and_oversized_files_are_refused_without_blocking(key,
                                                                            ckpt_dir) -> None:
    policy = _policy(ckpt_dir, key, max_bytes=1000)
    os.mkfifo(ckpt_dir / "pipe.safetensors")
    (ckpt_dir / "dir.safetensors").mkdir()
    (ckpt_dir / "big.safetensors").write_bytes(b"\0" * 1001)
    start = time.monotonic()
    for name in ("pipe", "dir"):
        with pytest.raises(TrustError, match="not a regular file"):
            policy.checked_path(ckpt_dir / f"{name}.safetensors")
    with pytest.raises(TrustError, match="1001 bytes; the limit is 1000"):
        policy.checked_path(ckpt_dir / "big.safetensors")
    with pytest.raises(TrustError, match="cannot be inspected"):
        policy.checked_path(ckpt_dir / "missing.safetensors")
    assert time.monotonic() - start < 1.0


def test_read_bounded_never_blocks_on_a_fifo_nor_reads_a_device(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done: list[BaseException] = []

    def read(path: Path) -> None:
        try:
            read_bounded(path, 100)
        except TrustError as err:
            done.append(err)

    for path in (fifo, Path("/dev/zero"), tmp_path):
        worker = threading.Thread(target=read, args=(path,), daemon=True)
        worker.start()
        worker.join(2.0)
        assert not worker.is_alive(), f"read_bounded blocked on {path}"
    assert len(done) == 3 and all("not a regular file" in str(e) for e in done)


def test_read_bounded_reads_at_most_max_bytes_plus_one(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a" * 100)
    assert read_bounded(path, 100) == b"a" * 100
    with pytest.raises(TrustError, match="more than 99 bytes"):
        read_bounded(path, 99)


def test_a_file_replaced_after_the_announcement_is_refused(key, tmp_path, ckpt_dir) -> None:
    path = tiny_model_checkpoint(ckpt_dir / "step_00000040.safetensors", seed=0, step=40)
    policy = _policy(ckpt_dir, key)
    ann = policy.check_announcement(_announce(key, path), step_floor=0, task=TASK, obs_mode=MODE)
    # Replaced, sidecar and all (a consistent pair that is not what was announced).
    other = tiny_model_checkpoint(tmp_path / "other.safetensors", seed=7, step=40)
    os.replace(other, path)
    os.replace(checkpoints.sidecar_path(other), checkpoints.sidecar_path(path))
    with pytest.raises(TrustError, match="changed after the announcement"):
        policy.read_checkpoint(ann, CFG)


def test_a_tensor_file_whose_sidecar_describes_another_file_is_refused(key, ckpt_dir) -> None:
    path = tiny_model_checkpoint(ckpt_dir / "a.safetensors", seed=0, step=40)
    tiny_model_checkpoint(ckpt_dir / "b.safetensors", seed=1, step=40)
    os.replace(checkpoints.sidecar_path(ckpt_dir / "b.safetensors"),
               checkpoints.sidecar_path(path))
    policy = _policy(ckpt_dir, key)
    ann = policy.check_announcement(_announce(key, path, sha256=_sha(path)), step_floor=0,
                                    task=TASK, obs_mode=MODE)
    with pytest.raises(TrustError, match="describes another tensor file"):
        policy.read_checkpoint(ann, CFG)


def test_the_sidecar_must_be_inside_the_trusted_dir_too(key, tmp_path, ckpt_dir) -> None:
    path = tiny_model_checkpoint(ckpt_dir / "a.safetensors", step=40)
    side = checkpoints.sidecar_path(path)
    moved = tmp_path / "a.json"
    os.replace(side, moved)
    side.symlink_to(moved)
    policy = _policy(ckpt_dir, key)
    ann = policy.check_announcement(_announce(key, path, sha256=_sha(path)), step_floor=0,
                                    task=TASK, obs_mode=MODE)
    with pytest.raises(TrustError, match=r"a.json.*outside the trusted directory"):
        policy.read_checkpoint(ann, CFG)


def test_a_checkpoint_for_another_model_shape_is_refused(key, ckpt_dir) -> None:
    path = tiny_model_checkpoint(ckpt_dir / "a.safetensors", step=40)
    policy = _policy(ckpt_dir, key)
    ann = policy.check_announcement(_announce(key, path), step_floor=0, task=TASK, obs_mode=MODE)
    wider = CFG.with_overrides({"model": {"mlp_dim": 64}})
    with pytest.raises(CheckpointError, match="mlp_dim"):
        policy.read_checkpoint(ann, wider)


def test_insecure_mode_skips_only_the_signature(ckpt_dir) -> None:
    path = tiny_model_checkpoint(ckpt_dir / "a.safetensors", step=40)
    policy = _policy(ckpt_dir, None)
    body = {"path": str(path), "sha256": _sha(path), "step": 40}        # the old, unsigned form
    ann = policy.check_announcement(body, step_floor=0, task=TASK, obs_mode=MODE)
    assert policy.read_checkpoint(ann, CFG).announced.step == 40
    with pytest.raises(TrustError, match="mandatory"):
        policy.check_announcement({"path": str(path), "step": 41}, step_floor=0, task=TASK,
                                  obs_mode=MODE)
    with pytest.raises(TrustError, match="rollback"):
        policy.check_announcement(body, step_floor=40, task=TASK, obs_mode=MODE)
