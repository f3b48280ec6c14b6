"""Authenticity and origin of weights (fowm_core.runtime.trust, .origin): the lab key, signed
announcements and live messages, the trusted directory, bounded regular files, the mandatory
SHA-256 of the bytes read, anti-rollback and labels. The behavioural gate is in test_gate.py."""

from __future__ import annotations

import dataclasses
import os
import stat
import time
from pathlib import Path

import pytest
from helpers.loop import tiny_config

from fowm_core.errors import ConfigError
from fowm_core.runtime.gate import GateConfig, MonitorConfig
from fowm_core.runtime.origin import TrustPolicy
from fowm_core.runtime.trust import (
    ROLE_LEARNER,
    ROLE_PLANNER_LIVE,
    SIGNATURE,
    TrustConfig,
    TrustError,
    authentic_live,
    generate_key,
    load_key,
    sign,
    signed,
    verify,
)

CFG = tiny_config()                  # lift, state
TASK, MODE = CFG.task, CFG.model.modality.value



# -- the key -------------------------------------------------------------------------------------
def test_generate_key_writes_32_random_bytes_hex_encoded_with_mode_0600(tmp_path: Path) -> None:
    old = os.umask(0)                        # even with a permissive umask
    try:
        path = generate_key(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text().strip()
    assert len(text) == 64 and bytes.fromhex(text)
    assert load_key(path) == bytes.fromhex(text)
    assert load_key(generate_key(tmp_path / "k2")) != load_key(path)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temp left


def test_generate_key_never_overwrites_an_existing_key(tmp_path: Path) -> None:
    path = generate_key(tmp_path / "k")
    before = path.read_bytes()
    with pytest.raises(TrustError, match="exists already"):
        generate_key(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_key_readable_by_group_or_others_is_refused_naming_chmod_600(tmp_path: Path,
                                                                       mode: int) -> None:
    path = generate_key(tmp_path / "k")
    path.chmod(mode)
    with pytest.raises(TrustError, match=f"chmod 600 {path}"):
        load_key(path)


def test_a_short_key_a_missing_key_a_symlink_and_a_fifo_are_refused(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("ab" * 31)              # 31 bytes
    short.chmod(0o600)
    with pytest.raises(TrustError, match=r"31-byte key.*fowm keygen"):
        load_key(short)
    with pytest.raises(TrustError, match="fowm keygen"):
        load_key(tmp_path / "missing")
    real = generate_key(tmp_path / "real")
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(TrustError, match="symlink"):
        load_key(tmp_path / "link")
    os.mkfifo(tmp_path / "fifo", 0o600)
    start = time.monotonic()
    with pytest.raises(TrustError, match="not a regular file"):
        load_key(tmp_path / "fifo")
    assert time.monotonic() - start < 1.0
    raw = tmp_path / "raw"                   # a long non-hex key is usable as it is
    raw.write_bytes(b"x" * 40)
    raw.chmod(0o600)
    assert load_key(raw) == b"x" * 40


# -- signatures ----------------------------------------------------------------------------------
FIELDS = {"path": "/ckpt/step_00000025.safetensors", "sha256": "ab" * 32, "step": 25,
          "task": "reach", "obs_mode": "state", "role": ROLE_LEARNER, "sender": "learner/1"}


def test_sign_and_verify_round_trip_and_every_field_is_covered(key: bytes) -> None:
    sig = sign(key, FIELDS)
    assert len(sig) == 64 and verify(key, FIELDS, sig)
    assert verify(key, {**FIELDS, SIGNATURE: sig}, sig)      # the signature itself is not signed
    assert verify(key, dict(reversed(FIELDS.items())), sig)  # canonical: order does not matter
    for name, other in [("path", "/tmp/evil.safetensors"), ("sha256", "cd" * 32), ("step", 26),
                        ("task", "lift"), ("obs_mode", "all"), ("role", ROLE_PLANNER_LIVE),
                        ("sender", "mallory")]:
        assert not verify(key, {**FIELDS, name: other}, sig), name
    assert not verify(key, {**FIELDS, "extra": 1}, sig)           # added fields are covered too
    assert not verify(b"y" * 32, FIELDS, sig)
    assert not verify(key, FIELDS, sig.upper())
    assert not verify(key, FIELDS, None) and not verify(key, FIELDS, 123)


def test_signing_needs_every_field_and_plain_json(key: bytes) -> None:
    partial = {k: v for k, v in FIELDS.items() if k != "sha256"}
    with pytest.raises(TrustError, match="lacks sha256"):
        sign(key, partial)
    assert not verify(key, partial, "0" * 64)
    with pytest.raises(TrustError, match="plain JSON"):
        sign(key, {**FIELDS, "step": float("nan")})
    assert SIGNATURE not in signed(None, **FIELDS)            # insecure mode: no signature
    assert verify(key, signed(key, **FIELDS), signed(key, **FIELDS)[SIGNATURE])


def test_the_planners_live_message_is_told_from_a_forgery(key: bytes) -> None:
    live = signed(key, **{**FIELDS, "role": ROLE_PLANNER_LIVE, "sender": "fowm_planner",
                          "live": True, "swaps": 2})
    assert authentic_live(key, live)
    forged = {**FIELDS, "role": ROLE_PLANNER_LIVE, "live": True, "path": "/tmp/evil"}
    assert not authentic_live(key, forged)                                    # unsigned
    assert not authentic_live(key, {**live, "path": "/tmp/evil"})             # altered
    assert not authentic_live(b"z" * 32, live)                                # another key
    assert not authentic_live(key, signed(key, **FIELDS))   # a learner announcement is not "live"
    assert not authentic_live(key, [])                                        # type: ignore[arg-type]


# -- config --------------------------------------------------------------------------------------
def test_trust_config_defaults_are_secure_and_the_opt_out_is_explicit(tmp_path: Path) -> None:
    cfg = TrustConfig()
    assert cfg.require_signature and isinstance(cfg.gate, GateConfig)
    with pytest.raises(ConfigError, match="trusted_dir is empty"):
        TrustPolicy.from_config(cfg)
    with pytest.raises(ConfigError, match=r"key_file is empty.*fowm keygen.*require_signature"):
        TrustPolicy.from_config(TrustConfig(trusted_dir=str(tmp_path)))
    path = generate_key(tmp_path / "k")
    policy = TrustPolicy.from_config(TrustConfig(key_file=str(path), trusted_dir=str(tmp_path)))
    assert policy.key == load_key(path) and policy.trusted_dir == tmp_path
    insecure = TrustPolicy.from_config(TrustConfig(trusted_dir=str(tmp_path),
                                                   require_signature=False))
    assert insecure.key is None
    path.chmod(0o644)                                # a bad key file stops the planner at startup
    with pytest.raises(TrustError, match="chmod 600"):
        TrustPolicy.from_config(TrustConfig(key_file=str(path), trusted_dir=str(tmp_path)))


@pytest.mark.parametrize(("build", "match"), [
    (lambda: TrustConfig(max_checkpoint_bytes=0), "max_checkpoint_bytes=0"),
    (lambda: TrustConfig(gate={"observations": 8}), "GateConfig"),
    (lambda: GateConfig(observations=0), "gate.observations=0"),
    (lambda: GateConfig(observations=4, min_observations=5), "gate.min_observations=5"),
    (lambda: GateConfig(abs_value_band=-1.0), "gate.abs_value_band=-1.0"),
    (lambda: GateConfig(rel_value_band=float("nan")), "gate.rel_value_band=nan"),
    (lambda: GateConfig(uncertainty_factor=0.5), "gate.uncertainty_factor=0.5"),
    (lambda: GateConfig(min_uncertainty_ratio=2.0), "gate.min_uncertainty_ratio=2.0"),
    (lambda: MonitorConfig(window=0), "monitor.window=0"),
    (lambda: MonitorConfig(window=5, min_ticks=10), "monitor.min_ticks=10"),
    (lambda: MonitorConfig(uncertainty_factor=0.9), "monitor.uncertainty_factor=0.9"),
    (lambda: MonitorConfig(hold_rate_increase=1.5), "monitor.hold_rate_increase=1.5"),
])
def test_config_values_out_of_range_are_refused_by_name(build, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build()


def test_every_config_field_has_a_ros_parameter_description() -> None:
    """ros/params.declare_from_dataclass turns each field into a parameter with its metadata."""
    for cls in (TrustConfig, GateConfig, MonitorConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("description") or dataclasses.is_dataclass(
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None), \
                f"{cls.__name__}.{f.name}"
            bounds = f.metadata.get("range")
            if bounds is not None:
                default = getattr(cls(), f.name)
                assert bounds[0] <= default <= bounds[1], f"{cls.__name__}.{f.name}"
