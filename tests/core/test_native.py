"""The planner's C row kernels (fowm_core/planner/native.py) against torch's ops."""

from __future__ import annotations

import threading

import pytest
import torch
from test_planner import A, L, gen, random_model, tiny_cfg
from torch.nn import functional as F

from fowm_core.planner import native
from fowm_core.planner.fused import FusedModel
from fowm_core.planner.mppi import Planner
from fowm_core.planner.scoring import FusedScorer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lib():
    built = native.load()
    # CI installs gcc (Makefile sysdeps): a missing build is a failure, not a skip.
    assert built is not None, native.status()
    return built


def torch_ln_act(x, bias, w, b, n_mish):
    y = F.layer_norm(x + bias, x.shape[-1:]) * w + b
    return torch.cat([F.mish(y[:n_mish]), torch.tanh(y[n_mish:])])


@pytest.mark.parametrize("n_mish", [0, 2, 4])
def test_ln_act_matches_layer_norm_then_mish_or_tanh(lib, n_mish: int) -> None:
    g = gen(0)
    x = torch.randn(4, 33, 64, generator=g) * 6
    x[0, 0, :5] = torch.tensor([-90.0, 90.0, 30.0, -30.0, 0.0])   # saturating rows
    bias = torch.randn(4, 1, 64, generator=g)
    w, b = torch.rand(4, 1, 64, generator=g) * 3, torch.randn(4, 1, 64, generator=g)
    expected = torch_ln_act(x, bias, w, b, n_mish)
    got = native.ln_act_(lib, x.clone(), bias, w, b, n_mish)
    torch.testing.assert_close(got, expected, atol=2e-6, rtol=2e-6)


def test_head_out_is_the_scalar_last_layer(lib) -> None:
    """Blocks < n_mish: w3·Mish(LN(x + bias)·g + c) + b3; the rest: w3·ELU(x + bias) + b3."""
    g = gen(1)
    x = torch.randn(6, 40, 128, generator=g) * 4
    bias, w3 = torch.randn(6, 1, 128, generator=g), torch.randn(6, 128, 1, generator=g)
    b3 = torch.randn(6, 1, 1, generator=g)
    ln_w, ln_b = torch.rand(1, 1, 128, generator=g) + 0.5, torch.randn(1, 1, 128, generator=g)
    head = F.mish(F.layer_norm(x[:1] + bias[:1], (128,)) * ln_w + ln_b)
    hidden = torch.cat([head, F.elu(x[1:] + bias[1:])])
    expected = torch.bmm(hidden, w3) + b3
    before = x.clone()
    got = native.head_out(lib, x, bias, ln_w, ln_b, 1, w3, b3)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(x, before), "head_out must not modify its input"
    only_elu = native.head_out(lib, x[1:].contiguous(), bias[1:], ln_w, ln_b, 0, w3[1:], b3[1:])
    torch.testing.assert_close(only_elu, expected[1:], atol=1e-5, rtol=1e-5)


def test_bad_layouts_are_refused_with_the_expected_shape(lib) -> None:
    x = torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match="contiguous float32"):
        native.ln_act_(lib, x.transpose(1, 2), torch.zeros(2, 3), torch.ones(2, 3),
                       torch.zeros(2, 3), 1)
    with pytest.raises(ValueError, match=r"\(2, 8\)"):
        native.ln_act_(lib, x, torch.zeros(2, 7), torch.ones(2, 8), torch.zeros(2, 8), 1)
    with pytest.raises(ValueError, match="float32"):
        native.ln_act_(lib, x.double(), torch.zeros(2, 8), torch.ones(2, 8), torch.zeros(2, 8), 1)


def test_whole_steps_run_in_c_with_torch_sgemm(lib) -> None:
    """torch's own BLAS sgemm was handed to the kernels (and passed their check): one C call per
    imagined step, no Python loop over the stacked heads."""
    assert lib.blocks_in_c


@pytest.mark.parametrize("layout", ["blocks_in_c", "no_sgemm", "stacked"])
def test_fused_model_native_equals_torch_path(lib, layout: str, monkeypatch) -> None:
    if layout == "no_sgemm":                   # the fallback when sgemm_ is not available
        monkeypatch.setattr(lib, "blocks_in_c", False)
    cfg = tiny_cfg()
    model = random_model(cfg, seed=4)
    with_c = FusedModel(model, per_block=layout != "stacked")
    without = FusedModel(model, native_kernels=False)
    assert with_c.native is not None and without.native is None
    z, a = torch.rand(11, L), torch.rand(11, A) * 2 - 1
    with torch.no_grad():
        for with_q in (True, False):
            one, two = with_c.step(z, a, with_q=with_q), without.step(z, a, with_q=with_q)
            torch.testing.assert_close(one.z, two.z, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(one.r, two.r, atol=1e-5, rtol=1e-5)
            assert (one.q is None) == (two.q is None)
        torch.testing.assert_close(with_c.q(z, a), model.q(z, a), atol=1e-5, rtol=1e-5)
        heads = torch.tensor([4, 0])
        torch.testing.assert_close(with_c.q(z, a, heads), model.q(z, a)[heads], atol=1e-5,
                                   rtol=1e-5)
        torch.testing.assert_close(with_c.pi_mean(z), model.pi_mean(z), atol=1e-5, rtol=1e-5)
        # π with noise draws the same numbers from the generator as the model's π.
        torch.testing.assert_close(with_c.pi(z, 0.3, gen(9)), model.pi(z, 0.3, gen(9)),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stacked", [False, True])
def test_planner_values_agree_with_and_without_kernels(lib, stacked: bool) -> None:
    """Both layouts of the kernel path (one block at a time, one bmm over all blocks) against the
    torch path: the same values for the same candidates."""
    cfg = tiny_cfg().with_overrides({"planner": {"stacked_blocks": stacked}})
    model = random_model(cfg, seed=5)
    values = []
    for use_c in (True, False):
        planner = Planner(model, cfg, gen(3), native_kernels=use_c)
        assert isinstance(planner.scorer, FusedScorer)
        assert (planner.scorer.fused.native is not None) == use_c
        assert planner.scorer.fused.per_block is not stacked
        z = torch.rand(1, L, generator=gen(4))
        gauss = torch.rand(cfg.horizon, cfg.planner.num_samples, A, generator=gen(6)) * 2 - 1
        with torch.no_grad():
            rollout = planner.scorer.pi_rollout(z, planner.generator)
            shared = planner.scorer.prepare(z)
            values.append(planner.scorer.values(z, gauss, rollout, shared, planner.generator))
    torch.testing.assert_close(values[0], values[1], atol=1e-5, rtol=1e-5)


def test_kernels_run_from_another_thread(lib) -> None:
    """The ROS planner node plans on its own control thread: same results there."""
    x, bias = torch.randn(3, 50, 32, generator=gen(7)), torch.randn(3, 32, generator=gen(8))
    w, b = torch.ones(3, 32), torch.zeros(3, 32)
    expected = native.ln_act_(lib, x.clone(), bias, w, b, 1)
    out = {}
    worker = threading.Thread(target=lambda: out.update(y=native.ln_act_(lib, x.clone(), bias,
                                                                          w, b, 1)))
    worker.start()
    worker.join()
    torch.testing.assert_close(out["y"], expected, atol=0, rtol=0)


def test_disabled_or_unbuildable_kernels_fall_back_with_a_reason(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("FOWM_NATIVE", "0")
    assert native.load() is None
    assert "FOWM_NATIVE=0" in native.status()
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.delenv("FOWM_NATIVE")
    monkeypatch.setenv("FOWM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "false")   # a "compiler" that always fails
    assert native.load() is None
    assert "false" in native.status()
    cfg = tiny_cfg()
    planner = Planner(random_model(cfg), cfg, gen(0))
    assert isinstance(planner.scorer, FusedScorer) and planner.scorer.fused.native is None
    planner.plan({"state": torch.zeros(3)}, t0=True, eval_mode=True)
