"""Checkpoints: round trip, atomic pairs, refusal of bad files, exact optimizer restore."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from fowm_core.config import cpu
from fowm_core.errors import CheckpointError
from fowm_core.learning.checkpoints import (
    agent_tensors,
    load_agent,
    load_checkpoint,
    restore_agent,
    save_agent,
    save_checkpoint,
    sidecar_path,
    validate_checkpoint,
)
from fowm_core.model import WorldModel


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These models are tiny: one thread avoids OpenMP contention on a shared 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(3, 4, generator=g),
        "b": torch.randn(4, generator=g).to(torch.float64),
        "count": torch.tensor(7, dtype=torch.int64),
        "mask": torch.tensor([True, False]),
        "half": torch.randn(2, 2, generator=g).to(torch.bfloat16),
    }


def test_round_trip_keeps_tensors_and_meta(tmp_path: Path) -> None:
    path = tmp_path / "ck" / "step_5.safetensors"
    meta = {"step": 5, "task": "lift", "metrics": {"loss": 0.25}, "data": ["abc"]}
    info = save_checkpoint(path, _tensors(), meta)
    assert info.sidecar == tmp_path / "ck" / "step_5.json"
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.step == 5
    tensors, loaded_meta = load_checkpoint(path)
    assert loaded_meta == meta
    assert set(tensors) == set(_tensors())
    for name, t in _tensors().items():
        assert tensors[name].dtype == t.dtype
        assert torch.equal(tensors[name], t)
    assert sorted(p.name for p in path.parent.iterdir()) == ["step_5.json", "step_5.safetensors"]


def test_tensor_file_without_matching_sidecar_is_never_loaded(tmp_path: Path) -> None:
    path = tmp_path / "latest.safetensors"
    save_checkpoint(path, _tensors(0), {"step": 1})
    # A crash after the tensor file of step 2 replaced step 1's, before its sidecar was written:
    # same size, same names, different values.
    other = tmp_path / "other.safetensors"
    save_checkpoint(other, _tensors(1), {"step": 2})
    os.replace(other, path)
    with pytest.raises(CheckpointError, match=r"latest\.safetensors has SHA-256 .* not belong"):
        load_checkpoint(path)
    # A crash during the very first save: a tensor file and no sidecar at all.
    fresh = tmp_path / "first.safetensors"
    fresh.write_bytes(st_save(_tensors(2)))
    with pytest.raises(CheckpointError, match=r"first\.safetensors has no sidecar first\.json"):
        load_checkpoint(fresh)


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.safetensors"
    save_checkpoint(path, _tensors(), {"step": 1})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"t\.safetensors has \d+ bytes .*truncated"):
        load_checkpoint(path)


class _Marker:
    """Unpickling this object would create a file: proof that nothing was unpickled."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.target,))


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickled_weights_are_refused_unopened(tmp_path: Path, zip_format: bool) -> None:
    good = tmp_path / "good.safetensors"
    save_checkpoint(good, _tensors(), {"step": 1})
    marker = tmp_path / "unpickled"
    # A torch.save file renamed over the tensor file, next to a valid sidecar.
    torch.save({"w": torch.zeros(2), "evil": _Marker(marker)}, good,
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(CheckpointError, match="pickled weights are refused"):
        load_checkpoint(good)
    assert not marker.exists()


def test_header_length_that_looks_like_a_pickle_opener_still_loads(tmp_path: Path) -> None:
    # A safetensors header of 0x280 bytes starts the file with 0x80 0x02, like pickle protocol 2.
    path = tmp_path / "p.safetensors"
    name = next(n for n in ("w" * k for k in range(1, 700))
                if st_save({n: torch.ones(3)}, {"format": "fowm-checkpoint",
                                                "format_version": "1"})[:2] == b"\x80\x02")
    save_checkpoint(path, {name: torch.ones(3)}, {"step": 1})
    assert path.read_bytes()[:2] == b"\x80\x02"
    tensors, meta = load_checkpoint(path)
    assert torch.equal(tensors[name], torch.ones(3))
    assert meta == {"step": 1}


def test_name_shape_dtype_mismatch_lists_every_field(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {"a": torch.zeros(2, 3), "b": torch.zeros(4), "c": torch.zeros(1)}, {})
    expected = {"a": ((2, 4), torch.float32), "b": ((4,), torch.float64),
                "d": ((1,), torch.float32)}
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, expected)
    text = str(err.value)
    assert "missing: d" in text
    assert "unexpected: c" in text
    assert "a: checkpoint (2, 3) float32, expected (2, 4) float32" in text
    assert "b: checkpoint (4,) float32, expected (4,) float64" in text


def test_non_finite_values_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "n.safetensors"
    with pytest.raises(CheckpointError, match=r"non-finite values .* in w"):
        save_checkpoint(path, {"w": torch.tensor([1.0, float("nan")])}, {})
    assert not path.exists()
    # A file written by another tool: valid pair, NaN inside.
    save_checkpoint(path, {"w": torch.ones(2)}, {})
    data = st_save({"w": torch.tensor([1.0, float("inf")])})
    side = json.loads(sidecar_path(path).read_text())
    side.update(tensor_sha256=hashlib.sha256(data).hexdigest(), tensor_bytes=len(data))
    path.write_bytes(data)
    sidecar_path(path).write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match=r"n\.safetensors has non-finite values"):
        load_checkpoint(path)


def _agent(seed: int):
    torch.manual_seed(seed)
    cfg = cpu(task="lift")
    model = WorldModel(cfg.model)
    target = model.target_copy()
    pi_params = list(model._pi.parameters())
    rest = [p for p in model.parameters() if all(p is not q for q in pi_params)]
    opts = {"model": torch.optim.Adam(rest, lr=1e-3), "pi": torch.optim.Adam(pi_params, lr=3e-4)}
    return cfg, model, target, opts


def _train(model: WorldModel, target: WorldModel, opts: dict, steps: int, start: int) -> None:
    for k in range(start, start + steps):
        g = torch.Generator().manual_seed(k)
        obs = {"state": torch.randn(8, 4, generator=g)}
        a = torch.rand(8, 4, generator=g) * 2 - 1
        z = model.encode(obs)
        loss = (model.next(z, a) - z.detach()).pow(2).mean() + model.q(z, a).pow(2).mean()
        opts["model"].zero_grad()
        loss.backward()
        opts["model"].step()
        pi_loss = -model.q(z.detach(), model.pi(z.detach())).mean()
        opts["pi"].zero_grad()
        pi_loss.backward()
        opts["pi"].step()
        with torch.no_grad():
            for p, q in zip(target.ema_parameters(), model.ema_parameters(), strict=True):
                p.lerp_(q, 0.01)


def test_restored_adam_continues_bit_identically(tmp_path: Path) -> None:
    cfg, model, target, opts = _agent(0)
    _train(model, target, opts, 2, start=0)
    path = tmp_path / "agent.safetensors"
    save_agent(path, model, cfg, step=2, metrics={"loss": 1.5, "eval": float("nan")},
               target=target, optimizers=opts,
               extra_meta={"data_hashes": ["h1"]})
    _train(model, target, opts, 2, start=2)

    _, model2, target2, opts2 = _agent(123)      # different init: everything must come from disk
    loaded = load_agent(path, model2, cfg, target=target2, optimizers=opts2)
    assert loaded.meta["step"] == 2
    assert loaded.meta["data_hashes"] == ["h1"]
    assert loaded.meta["metrics"] == {"loss": 1.5, "eval": None}
    _train(model2, target2, opts2, 2, start=2)
    for (n, a), b in zip(model.state_dict().items(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    for a, b in zip(target.state_dict().values(), target2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert opts["pi"].state_dict()["param_groups"] == opts2["pi"].state_dict()["param_groups"]


def test_agent_tensors_round_trip_without_files() -> None:
    _, model, target, opts = _agent(1)
    _train(model, target, opts, 1, start=0)
    tensors, meta = agent_tensors(model, target, opts)
    assert "optim.pi.0.exp_avg" in tensors
    assert "target._qs.w1" in tensors
    _, model2, target2, opts2 = _agent(2)
    restore_agent(tensors, meta, model2, target2, opts2)
    assert torch.equal(model2._qs.w2, model._qs.w2)
    assert torch.equal(opts2["model"].state_dict()["state"][0]["exp_avg_sq"],
                      opts["model"].state_dict()["state"][0]["exp_avg_sq"])


def test_optimizer_over_other_parameters_is_refused() -> None:
    _, model, target, opts = _agent(1)
    _train(model, target, opts, 1, start=0)
    tensors, meta = agent_tensors(model, target, opts)
    _, model2, target2, opts2 = _agent(2)
    swapped = {"model": opts2["pi"], "pi": opts2["model"]}
    with pytest.raises(CheckpointError, match="optimizer 'model' does not fit the running one"):
        restore_agent(tensors, meta, model2, target2, swapped)


def test_load_agent_names_the_differing_config_field(tmp_path: Path) -> None:
    cfg, model, _, _ = _agent(0)
    path = tmp_path / "a.safetensors"
    save_agent(path, model, cfg, step=0, metrics={})
    running = cfg.with_overrides({"model": {"latent_dim": 16}})
    with pytest.raises(CheckpointError,
                       match=r"checkpoint a\.safetensors has model\.latent_dim=32 but the "
                             r"running config has 16"):
        load_agent(path, cfg=running)
    built = load_agent(path)          # no cfg: the checkpoint's own config builds the model
    assert torch.equal(built.model._pi[0].weight, model._pi[0].weight)


def test_validate_checkpoint_checks_outputs(tmp_path: Path) -> None:
    cfg = cpu(modality="all")
    model = WorldModel(cfg.model)
    path = tmp_path / "v.safetensors"
    save_agent(path, model, cfg, step=10, metrics={})
    info = validate_checkpoint(path, cfg.model)
    assert info.step == 10
    with torch.no_grad():
        model._reward[-1].weight.fill_(3e38)      # finite weights, overflowing output
    save_agent(path, model, cfg, step=11, metrics={})
    with pytest.raises(CheckpointError, match="non-finite reward on a canned observation"):
        validate_checkpoint(path, cfg.model)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert os.access(path, os.R_OK)
