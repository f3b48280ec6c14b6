"""Only trusted weights act, against a running planner node (real rclpy, docs/trust.md): the fault
campaign's weight attacks are each refused, counted by layer on /diagnostics, and leave the live
weights as they were; an honest signed checkpoint swaps in; a post-swap uncertainty jump rolls
back for good; a forged live message is never recorded as the weights that acted."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from fowm.bringup import merged, trust_overrides
from fowm.nodes.recorder_node import RecorderNode
from fowm.ros import qos
from fowm.ros.hot_swap import build_policy
from helpers import weights as hw
from helpers.stack import tiny_config
from rclpy.parameter import Parameter
from std_msgs.msg import String
from test_hostile_inputs import Recorder, _latched, _setup, _still_controls

from fowm_core.contract import topics
from fowm_core.data import bags, convert
from fowm_core.errors import ConfigError
from fowm_core.learning.checkpoints import save_agent
from fowm_core.model import WorldModel
from fowm_core.runtime import provenance, trust
from fowm_core.runtime.hotswap import Weights, live_message
from fowm_core.runtime.origin import TrustPolicy
from fowm_core.runtime.trust import TrustConfig

CFG = tiny_config("lift", "all")
LIVE_STEP = 100


def _model(seed: int = 0, q_spread: float = 0.05) -> WorldModel:
    """Random weights whose Q heads disagree a little: value ≈ -0.8, uncertainty ≈ 0.13 on the
    test robot's observations, the scale of a trained model (an untrained one plans 0 and 0)."""
    torch.manual_seed(seed)
    model = WorldModel(CFG.model)
    with torch.no_grad():
        for param in model._qs.parameters():
            param.add_(q_spread * torch.randn_like(param))
    return model.eval()


def _nudged(model: WorldModel, scale: float, seed: int = 1) -> WorldModel:
    """An honest next step: every weight moved a little."""
    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return out.eval()


class Lab:
    """A key, a trusted checkpoint directory and a signing learner stand-in."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "work" / "checkpoints"
        self.dir.mkdir(parents=True)
        self.key_file = trust.generate_key(root / "lab.key")
        self.key = trust.load_key(self.key_file)
        self.live_model = _model()
        self.live = self.save(self.live_model, LIVE_STEP, root / "pretrained.safetensors")

    def save(self, model: WorldModel, step: int, path: Path | None = None, cfg=CFG) -> Path:
        path = path or self.dir / f"step_{step:08d}.safetensors"
        save_agent(path, model, cfg, step=step, metrics={})
        return path

    def body(self, path: Path | str, step: int, *, key: bytes | str | None = "lab",
             sha256: str | None = None, cfg=CFG) -> str:
        sha = sha256 or hashlib.sha256(Path(path).read_bytes()).hexdigest()
        key = self.key if key == "lab" else key
        return json.dumps(trust.announcement(key, path=path, sha256=sha, step=step, cfg=cfg,
                                             sender="fowm_learner/1"))

    def params(self, **extra: Any) -> dict[str, Any]:
        return {"trust.key_file": str(self.key_file), "trust.trusted_dir": str(self.dir),
                **extra}


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path)


def _weights_status(recs: dict[str, Recorder]) -> DiagnosticStatus | None:
    for msg in reversed(recs["diag"].msgs):
        for status in msg.status:
            if status.name == "fowm_planner: weights":
                return status
    return None


def _by_stage(recs: dict[str, Recorder]) -> dict[str, int]:
    status = _weights_status(recs)
    values = {kv.key: kv.value for kv in status.values} if status else {}
    return json.loads(values.get("weights_refused_by_stage", "{}"))


def test_the_campaigns_weight_attacks_are_refused_counted_and_change_nothing(
        executor, spin_until, lab: Lab, tmp_path: Path) -> None:
    planner, robot, helper, recs = _setup(executor, lab.live, **lab.params())
    swapper = planner.weights.swapper
    announce = _latched(helper, topics.WEIGHTS)
    assert spin_until(lambda: planner.counters.plans >= 5, timeout_s=30, every=robot.publish)
    live, live_planner = swapper.live, planner.planner
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    fifo = lab.dir / "fifo.safetensors"
    os.mkfifo(fifo)
    reach = tiny_config("reach", "all")
    reach_path = lab.save(WorldModel(reach.model), 300, cfg=reach)
    honest = lab.save(_nudged(lab.live_model, 0.002), 300)
    attacks = [   # (what, body, layer that refuses it)
        ("unsigned", lab.body(honest, 300, key=None), "announcement"),
        ("wrong key", lab.body(honest, 300, key=os.urandom(32)), "announcement"),
        ("rollback step", lab.body(lab.save(_nudged(lab.live_model, 0.002), 5), 5),
         "announcement"),
        ("another task", lab.body(reach_path, 300, cfg=reach), "announcement"),
        ("outside the trusted dir", lab.body(lab.save(_nudged(lab.live_model, 0.002, seed=2),
                                                      301, elsewhere / "x.safetensors"), 301),
         "checkpoint"),
        ("a FIFO", lab.body(fifo, 302, sha256="ab" * 32), "checkpoint"),
        ("/dev/zero", lab.body("/dev/zero", 303, sha256="ab" * 32), "checkpoint"),
        ("reward-biased, signed", lab.body(lab.save(hw.biased_reward(
            lab.live_model, 1.0, direction=(*hw.ATTACK_DIRECTION, 0.0)), 304), 304), "gate"),
        ("weights x20, signed", lab.body(lab.save(hw.scaled(lab.live_model, 20.0), 305), 305),
         "gate"),
    ]
    expected: dict[str, int] = {}
    for what, body, stage in attacks:
        announce.publish(String(data=body))
        expected[stage] = expected.get(stage, 0) + 1
        assert spin_until(lambda e=dict(expected): swapper.stats.refused_by_stage == e,
                          timeout_s=60, every=robot.publish), (what, swapper.stats.refused)
        assert swapper.live == live and planner.planner is live_planner, what
        assert swapper.stats.swaps == 0 and swapper.floor == LIVE_STEP, what
    reasons = [why for _, why in swapper.stats.refused]
    for text in ("unsigned", "does not verify", "not above 100", "task='reach'",
                 "outside the trusted directory", "not a regular file", "median value",
                 "median uncertainty"):
        assert any(text in r for r in reasons), (text, reasons)
    # Counted by layer on /diagnostics, WARN with the reason, and the arm still controlled.
    assert spin_until(lambda: _by_stage(recs) == expected, timeout_s=5, every=robot.publish)
    status = _weights_status(recs)
    assert status is not None and status.level == DiagnosticStatus.WARN
    assert "refused" in status.message
    assert _still_controls(planner, robot, recs, spin_until)
    # An honest, signed checkpoint of the learner still swaps in.
    announce.publish(String(data=lab.body(honest, 300)))
    assert spin_until(lambda: swapper.stats.swaps == 1, timeout_s=60, every=robot.publish), \
        swapper.stats.refused[-3:]
    assert swapper.live.path == str(honest) and swapper.floor == 300
    assert planner.planner is not live_planner


def test_a_post_swap_uncertainty_jump_rolls_back_and_the_checkpoint_stays_out(
        executor, spin_until, lab: Lab) -> None:
    # Gate bands opened wide, so the candidate passes it and only the monitor can catch it.
    planner, robot, helper, recs = _setup(executor, lab.live, **lab.params(**{
        "trust.gate.uncertainty_factor": 1e6, "trust.gate.abs_value_band": 1e6,
        "trust.monitor.window": 10, "trust.monitor.watch": 30, "trust.monitor.min_ticks": 5}))
    swapper = planner.weights.swapper
    assert spin_until(lambda: planner.counters.plans >= 15, timeout_s=30, every=robot.publish)
    live, before = swapper.live, planner.planner
    wild = copy.deepcopy(lab.live_model)
    with torch.no_grad():
        for param in wild._qs.parameters():
            param.add_(3.0 * torch.randn_like(param))       # the Q heads disagree wildly
    bad = lab.save(wild.eval(), 200)
    announce = _latched(helper, topics.WEIGHTS)
    announce.publish(String(data=lab.body(bad, 200)))
    assert spin_until(lambda: bool(swapper.stats.rollbacks), timeout_s=60,
                      every=robot.publish), (swapper.stats.swaps, swapper.stats.refused)
    assert swapper.stats.swaps == 1 and "uncertainty" in swapper.stats.rollbacks[0][1]
    assert swapper.live == live and planner.planner is before and swapper.floor == 200
    assert spin_until(lambda: "rolled back" in (getattr(_weights_status(recs), "message", "")),
                      timeout_s=5, every=robot.publish)
    announce.publish(String(data=lab.body(bad, 200)))        # offered again: refused for good
    assert spin_until(lambda: any("not above 200" in w for _, w in swapper.stats.refused),
                      timeout_s=10, every=robot.publish)
    assert swapper.live == live and _still_controls(planner, robot, recs, spin_until)


def test_trust_parameters_are_nested_and_read_only_and_a_bad_key_stops_the_planner(
        executor, spin_until, lab: Lab) -> None:
    planner, *_ = _setup(executor, lab.live, **lab.params())
    assert planner.params.trust == TrustConfig(key_file=str(lab.key_file),
                                               trusted_dir=str(lab.dir))
    assert planner.get_parameter("trust.gate.observations").value == 8
    result = planner.set_parameters([Parameter("trust.require_signature", value=False)])
    assert not result[0].successful and "read-only" in result[0].reason
    assert planner.params.trust.require_signature and planner.weights.key is not None
    # A key others may read stops the planner at start; no key and no directory disable swaps.
    os.chmod(lab.key_file, 0o644)
    with pytest.raises(trust.TrustError, match="chmod 600"):
        build_policy(TrustConfig(key_file=str(lab.key_file), trusted_dir=str(lab.dir)))
    assert build_policy(TrustConfig())[0] is None
    assert "key_file is empty" in build_policy(TrustConfig(trusted_dir=str(lab.dir)))[1]
    insecure, _ = build_policy(TrustConfig(trusted_dir=str(lab.dir), require_signature=False))
    assert insecure is not None and insecure.key is None
    with pytest.raises(ConfigError, match="trusted_dir is empty"):
        TrustPolicy.from_config(TrustConfig(key_file=str(lab.key_file)))


def test_a_forged_live_message_is_never_recorded_as_the_weights_that_acted(
        executor, spin_until, lab: Lab, tmp_path: Path) -> None:
    bag_dir = tmp_path / "bags"
    recorder = RecorderNode(parameter_overrides=[
        Parameter("bag_dir", value=str(bag_dir)), Parameter("key_file", value=str(lab.key_file)),
        Parameter("grace_s", value=0.1)])
    executor.add_node(recorder)
    planner, robot, helper, _ = _setup(executor, lab.live, **lab.params())
    forger = _latched(helper, topics.WEIGHTS)
    forged = {"path": "/tmp/evil.safetensors", "sha256": "ab" * 32, "step": 999, "live": True,
              "swaps": 3, "node": "fowm_planner"}
    assert spin_until(lambda: planner.counters.plans >= 2, timeout_s=30, every=robot.publish)
    forger.publish(String(data=json.dumps(forged)))
    assert spin_until(lambda: recorder.inputs.refused.get(topics.WEIGHTS, 0) >= 1,
                      timeout_s=10, every=robot.publish), recorder.inputs.refused
    assert "not signed by the planner" in recorder.inputs.last
    # An episode: its bag opens with the planner's signed live message only.
    events = helper.create_publisher(String, topics.EPISODE, qos.EVENTS)
    start_ns = planner.get_clock().now().nanoseconds
    events.publish(String(data=json.dumps({"event": "start", "episode": 0, "task": "lift",
                                           "seed": 0})))
    for _ in range(3):
        spin_until(lambda: False, timeout_s=0.1, every=robot.publish)
    end_ns = planner.get_clock().now().nanoseconds
    events.publish(String(data=json.dumps({
        "event": "end", "episode": 0, "task": "lift", "seed": 0, "success": False,
        "terminal": False, "steps": 3, "return": 0.0, "first_stamp_ns": start_ns,
        "final_stamp_ns": end_ns})))
    assert spin_until(lambda: bool(recorder.written), timeout_s=20), recorder.dropped
    records = provenance.weights_records(recorder.written[0], lab.key)
    assert records and all(not r.forged for r in records)
    acted = provenance.weights_that_acted(recorder.written[0], lab.key)
    assert [a.path for a in acted] == [str(lab.live)]


def test_the_bag_reader_marks_forged_live_messages(tmp_path: Path, lab: Lab) -> None:
    """A bag recorded without the key (or by `ros2 bag record`) may hold forgeries."""
    real = live_message(lab.key, Weights.of_checkpoint(lab.live), CFG, swaps=0,
                        node="fowm_planner", sender="fowm_planner/1")
    forged = json.dumps({**json.loads(real), "path": "/tmp/evil.safetensors"})
    path = tmp_path / "bag"
    with bags.atomic_bag_writer(path) as writer:
        conn = writer.add_connection(topics.WEIGHTS, topics.MSG_TYPES[topics.WEIGHTS],
                                     typestore=convert.TYPESTORE)
        for i, text in enumerate((real, forged, '{"path": 3}')):
            raw = convert.TYPESTORE.serialize_cdr(convert.TYPESTORE.types[
                topics.MSG_TYPES[topics.WEIGHTS]](data=text), topics.MSG_TYPES[topics.WEIGHTS])
            writer.write(conn, 1000 + i, bytes(raw))
    records = provenance.weights_records(path, lab.key)
    assert [(r.live, r.forged) for r in records] == [(True, False), (True, True), (False, False)]
    assert records[2].message is None and "path" in records[2].error
    assert [a.path for a in provenance.weights_that_acted(path, lab.key)] == [str(lab.live)]


def test_bringup_makes_one_key_for_learner_recorder_and_planner(tmp_path: Path) -> None:
    work = tmp_path / "bags" / ".learner"
    over = merged(trust_overrides(work), {"fowm_planner": {"rate_hz": 5.0}})
    key = work / "lab.key"
    assert (key.stat().st_mode & 0o777) == 0o600 and len(trust.load_key(key)) == 32
    assert over["fowm_learner"]["key_file"] == over["fowm_recorder"]["key_file"] == str(key)
    assert over["fowm_planner"] == {"trust.key_file": str(key), "rate_hz": 5.0,
                                    "trust.trusted_dir": str(work / "checkpoints")}
    assert trust_overrides(work)["fowm_learner"]["key_file"] == str(key)    # kept, not replaced
    given = trust_overrides(work, tmp_path / "mine.key")
    assert given["fowm_planner"]["trust.key_file"] == str(tmp_path / "mine.key")
