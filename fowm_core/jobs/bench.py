"""Speed benchmarks and FLOP counts for the planner and the learner update (docs/algorithm.md §9).

FLOPs are counted from layer shapes (2·MACs of every matmul and conv; elementwise work is not
counted), so GFLOP/s figures compare directly with the machine's fp32 matmul peak measured in the
same run. ``plan_flops`` counts the work the reference planner does per decision (81.6 GFLOP for
the paper preset with λ = 1); ``executed=True`` counts what this planner's fast path actually
multiplies (it reuses the z-part of the first layer at t = 0 and the π candidates' steps across
iterations).

CLI (one JSON line each): ``bench plan --preset paper|cpu [--lam L]``,
``bench update --preset paper|cpu --obs state|rgb``, ``bench peak``; each takes
``--device auto|cpu|cuda[:N]`` (CUDA timings synchronise before the clock stops).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from fowm_core.config import FowmConfig, Modality, preset
from fowm_core.errors import ConfigError
from fowm_core.model.device import generator_for, resolve_device

# -- FLOP counting (2 FLOPs per multiply-add) --------------------------------------------------


def mlp_macs(in_dim: int, hidden: int, out_dim: int) -> int:
    """Linear(in→M) → Linear(M→M) → Linear(M→out): dynamics, reward, π, every Q head and V."""
    return in_dim * hidden + hidden * hidden + hidden * out_dim


def encoder_macs(cfg: FowmConfig) -> int:
    """One observation through every encoder (state MLP and/or the 4 valid stride-2 convs)."""
    m = cfg.model
    macs = 0
    if m.uses_state:
        macs += m.state_dim * m.enc_dim + m.enc_dim * m.latent_dim
    if m.uses_rgb:
        size, c_in = m.img_size, 3 * m.frame_stack
        for kernel, stride in zip(m.conv_kernels, m.conv_strides, strict=True):
            size = (size - kernel) // stride + 1
            macs += size * size * m.num_channels * c_in * kernel * kernel
            c_in = m.num_channels
        macs += m.num_channels * m.conv_out_size ** 2 * m.latent_dim
    return macs


def _head_macs(cfg: FowmConfig) -> dict[str, int]:
    m = cfg.model
    za = m.latent_dim + m.action_dim
    return {
        "dyn": mlp_macs(za, m.mlp_dim, m.latent_dim),
        "rew": mlp_macs(za, m.mlp_dim, 1),
        "q": mlp_macs(za, m.mlp_dim, 1),
        "pi": mlp_macs(m.latent_dim, m.mlp_dim, m.action_dim),
        "v": mlp_macs(m.latent_dim, m.mlp_dim, 1),
        "zpart": m.latent_dim * m.mlp_dim,   # the z columns of one block's first layer
    }


def plan_flops(cfg: FowmConfig, *, executed: bool = False) -> int:
    """Matmul/conv FLOPs of one MPC decision (docs/algorithm.md §9).

    Reference work: encode; Nπ π rollouts (π + dynamics per step); per iteration, for all N + Nπ
    candidates, H steps of dynamics + reward (+ K heads if λ > 0) and a terminal π + (K heads if
    λ > 0, else the 2 drawn heads). ``executed``: the fast path's work instead (π candidates' steps
    done once in the rollout, t = 0 first layers multiply only the action columns).
    """
    p, h, k = cfg.planner, _head_macs(cfg), cfg.model.num_q
    heads_step = k if p.uncertainty_cost > 0 else 0
    heads_term = k if p.uncertainty_cost > 0 else 2
    step = h["dyn"] + h["rew"] + heads_step * h["q"]
    terminal = h["pi"] + heads_term * h["q"]
    n, n_pi, H = p.num_samples, p.num_pi_trajs, cfg.horizon
    if not p.mpc:
        return 2 * (encoder_macs(cfg) + h["pi"])
    macs = encoder_macs(cfg) + n_pi * H * (h["pi"] + h["dyn"])
    if not executed:
        macs += p.iterations * (n + n_pi) * (H * step + terminal)
    else:
        macs += n_pi * H * (h["rew"] + heads_step * h["q"])           # π steps scored once
        blocks = 2 + heads_step
        macs += blocks * h["zpart"]                                      # z0 part, once
        per_iter = n * (H * step - blocks * h["zpart"]) + (n + n_pi) * terminal
        macs += p.iterations * per_iter
    macs += k * h["q"]                                                   # uncertainty at (z0, a)
    return 2 * macs


def update_flops(cfg: FowmConfig) -> int:
    """Matmul/conv FLOPs of one learner update (docs/algorithm.md §3), batch B, horizon H.

    Forward with gradients: encode o_0, H steps of dynamics + reward, K Q heads and V on H·B
    latents. No-grad: online and target encodes of the H·B next observations, V(z') for the TD
    target, target min-2 Q on H·B. π update: π forward on H·B, target min-2 Q and V (no grad).
    Backward ≈ 2× forward of the gradient-carrying parts (input and weight gradients).
    """
    b, H, h, k = cfg.learner.batch_size, cfg.horizon, _head_macs(cfg), cfg.model.num_q
    enc = encoder_macs(cfg)
    grad_fwd = b * enc + H * b * (h["dyn"] + h["rew"] + k * h["q"] + h["v"])
    no_grad = 2 * H * b * enc + H * b * (h["v"] + 2 * h["q"])
    pi_grad = H * b * h["pi"]
    pi_no_grad = H * b * (2 * h["q"] + h["v"])
    return 2 * (3 * grad_fwd + no_grad + 3 * pi_grad + pi_no_grad)


# -- timing ---------------------------------------------------------------------------------


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _synced(fn: Callable[[], Any], device: torch.device) -> Callable[[], Any]:
    """fn, then wait for the device: CUDA calls return before their kernels finish."""
    if device.type != "cuda":
        return fn

    def run() -> Any:
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return run


def bench_peak(size: int = 2048, repeats: int = 9,
               device: str | torch.device = "cpu") -> dict[str, Any]:
    """fp32 matmul GFLOP/s of this machine (or GPU): median over repeats of a size×size matmul."""
    device = resolve_device(device)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device)
    b = torch.randn(size, size, generator=gen).to(device)
    out = torch.empty(size, size, device=device)
    seconds = median_seconds(_synced(lambda: torch.mm(a, b, out=out), device), repeats)
    return {"bench": "peak", "size": size, "matmul_s": seconds,
            "peak_gflops_per_s": 2 * size**3 / seconds / 1e9, "device": str(device),
            "torch_threads": torch.get_num_threads()}


def bench_config(name: str, modality: str | None = None, lam: float | None = None,
                 overrides: dict[str, Any] | None = None) -> FowmConfig:
    """A preset for benchmarking: paper defaults to modality 'all' (rgb + state), cpu to 'state'."""
    kwargs = {} if modality is None else {"modality": Modality(modality)}
    cfg = preset(name, **kwargs)
    over = dict(overrides or {})
    if lam is not None:
        over.setdefault("planner", {})["uncertainty_cost"] = lam
    return cfg.with_overrides(over) if over else cfg


def random_obs(cfg: FowmConfig, gen: torch.Generator) -> dict[str, torch.Tensor]:
    m, obs = cfg.model, {}
    if m.uses_state:
        obs["state"] = torch.rand(m.state_dim, generator=gen)
    if m.uses_rgb:
        shape = (3 * m.frame_stack, m.img_size, m.img_size)
        obs["rgb"] = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    return obs


def _random_model(cfg: FowmConfig, seed: int = 0) -> Any:
    """Orthogonal init plus small noise on every weight, so the zero-initialised reward and Q last
    layers are not trivially zero (so the ensemble std and the elites are not degenerate)."""
    from fowm_core.model import WorldModel

    torch.manual_seed(seed)
    model = WorldModel(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def bench_plan(cfg: FowmConfig, repeats: int = 7, *, fast: bool = True, compile: bool = False,
               native: bool = True, peak_size: int = 2048,
               device: str | torch.device = "cpu") -> dict[str, Any]:
    """Median seconds per decision, batch 1, warm-started like a control loop (t0 only first).
    A decision's time includes copying the action to the host (a sync on CUDA); on CUDA the
    first decision also captures the graph and is not timed."""
    from fowm_core.planner.mppi import Planner
    from fowm_core.planner.scoring import FusedScorer

    device = resolve_device(device)
    gen = torch.Generator().manual_seed(0)
    model = _random_model(cfg).to(device)
    start = time.perf_counter()
    planner = Planner(model, cfg, gen if device.type == "cpu" else generator_for(device, 0),
                      fast=fast, compile_elementwise=compile, native_kernels=native)
    setup_s = time.perf_counter() - start
    obs = random_obs(cfg, gen)
    planner.plan(obs, t0=True, eval_mode=False)
    planner.plan(obs, t0=False, eval_mode=False)
    times = [planner.plan(obs, t0=False, eval_mode=False).elapsed_s for _ in range(repeats)]
    plan_s = statistics.median(times)
    scorer_fused = isinstance(planner.scorer, FusedScorer)
    flops, executed = plan_flops(cfg), plan_flops(cfg, executed=scorer_fused)
    peak = bench_peak(peak_size, device=device)["peak_gflops_per_s"]
    gflops = flops / plan_s / 1e9
    return {
        "bench": "plan", "preset": cfg.preset, "lam": cfg.planner.uncertainty_cost,
        "modality": cfg.model.modality.value, "fast": fast, "compiled": compile,
        "native_kernels": scorer_fused and planner.scorer.fused.native is not None,
        "device": str(device), "cuda_graph": bool(planner.graphs and planner.graphs.graphs),
        "graph_error": planner.graph_error,
        "stacked_blocks": cfg.planner.stacked_blocks,
        "compile_s": round(planner.compile_s, 2), "compile_error": planner.compile_error,
        "setup_s": round(setup_s, 2), "iterations": cfg.planner.iterations,
        "samples": cfg.planner.num_samples, "pi_samples": cfg.planner.num_pi_trajs,
        "plan_s": plan_s, "plan_s_min": min(times), "repeats": repeats,
        "flops": flops, "flops_executed": executed,
        "gflops_per_s": gflops, "gflops_executed_per_s": executed / plan_s / 1e9,
        "peak_gflops_per_s": peak, "fraction_of_peak": gflops / peak,
        "torch_threads": torch.get_num_threads(),
    }


def random_batch(cfg: FowmConfig, gen: torch.Generator) -> Any:
    """A replay Batch of random data with the config's shapes (B rows, H steps, no PER sink)."""
    from fowm_core.learning.replay import Batch

    m, B, H = cfg.model, cfg.learner.batch_size, cfg.horizon
    obs: dict[str, torch.Tensor] = {}
    next_obs: dict[str, torch.Tensor] = {}
    if m.uses_state:
        obs["state"] = torch.rand(B, m.state_dim, generator=gen)
        next_obs["state"] = torch.rand(H, B, m.state_dim, generator=gen)
    if m.uses_rgb:
        img = (3 * m.frame_stack, m.img_size, m.img_size)
        obs["rgb"] = torch.randint(0, 256, (B, *img), generator=gen, dtype=torch.uint8)
        next_obs["rgb"] = torch.randint(0, 256, (H, B, *img), generator=gen, dtype=torch.uint8)
    return Batch(
        obs=obs, next_obs=next_obs,
        action=torch.rand(H, B, m.action_dim, generator=gen) * 2 - 1,
        reward=torch.rand(H, B, generator=gen), mask=torch.ones(H, B), done=torch.zeros(H, B),
        weights=torch.ones(B), indices=torch.arange(B), source=torch.zeros(B, dtype=torch.int64),
    )


def bench_update(cfg: FowmConfig, repeats: int = 5, *, device: str | torch.device = "cpu",
                 peak_size: int = 2048) -> dict[str, Any]:
    """Median seconds per full learner update: forward, backward, clip, both Adam steps, EMA
    (the batch starts on the CPU, as the replay buffer's do); with the same run's matmul peak."""
    try:
        from fowm_core.learning.learner import Learner
    except ImportError as err:
        msg = f"bench update needs the learner, which is not importable here: {err}"
        raise ConfigError(msg) from err
    device = resolve_device(device)
    gen = torch.Generator().manual_seed(0)
    learner = Learner(_random_model(cfg).to(device).train(), cfg, gen)
    batch = random_batch(cfg, gen)
    seconds = median_seconds(_synced(lambda: learner.update(batch), device), repeats)
    flops = update_flops(cfg)
    peak = bench_peak(peak_size, device=device)["peak_gflops_per_s"] if peak_size else None
    m = cfg.model
    return {
        "bench": "update", "preset": cfg.preset, "obs": cfg.model.modality.value,
        "device": str(device), "batch_size": cfg.learner.batch_size, "horizon": cfg.horizon,
        "img_size": m.img_size if m.uses_rgb else None,
        "encoder": ({"channels": m.num_channels, "kernels": list(m.conv_kernels),
                     "strides": list(m.conv_strides)} if m.uses_rgb else None),
        "update_s": seconds, "flops": flops, "gflops_per_s": flops / seconds / 1e9,
        "peak_gflops_per_s": peak, "fraction_of_peak": flops / seconds / 1e9 / peak if peak
        else None, "repeats": repeats, "torch_threads": torch.get_num_threads(),
    }


# -- CLI ------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fowm bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    plan = sub.add_parser("plan", help="seconds per MPC decision (batch 1, warm-started)")
    plan.add_argument("--preset", default="paper", choices=["paper", "cpu"])
    plan.add_argument("--lam", type=float, default=None,
                      help="uncertainty_cost λ (the preset's if unset)")
    plan.add_argument("--obs", default=None, choices=[m.value for m in Modality])
    plan.add_argument("--repeats", type=int, default=7)
    plan.add_argument("--compile", action="store_true",
                      help="torch.compile the elementwise blocks (inductor C++; reports compile_s)")
    plan.add_argument("--stacked-blocks", action="store_true",
                      help="planner.stacked_blocks: one bmm over all blocks (shared machines)")
    plan.add_argument("--no-native", dest="native", action="store_false",
                      help="torch elementwise ops instead of the C row kernels (model/native.py)")
    plan.add_argument("--plain", action="store_true",
                      help="score with the model's own methods (the unfused reference path)")
    plan.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N")
    update = sub.add_parser("update", help="seconds per learner update")
    update.add_argument("--preset", default="paper", choices=["paper", "cpu"])
    update.add_argument("--obs", default="rgb", choices=[m.value for m in Modality])
    update.add_argument("--repeats", type=int, default=5)
    update.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N")
    peak = sub.add_parser("peak", help="fp32 matmul GFLOP/s of this machine")
    peak.add_argument("--size", type=int, default=2048)
    peak.add_argument("--repeats", type=int, default=9)
    peak.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N")
    return parser


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    if args.what == "peak":
        return bench_peak(args.size, args.repeats, device=args.device)
    if args.what == "plan":
        over = {"planner": {"stacked_blocks": True}} if args.stacked_blocks else None
        cfg = bench_config(args.preset, args.obs, args.lam, over)
        return bench_plan(cfg, args.repeats, fast=not args.plain, compile=args.compile,
                          native=args.native, device=args.device)
    # 'rgb' means the paper's pixel setting: rgb + the 4-d proprio state (modality 'all').
    modality = Modality.ALL.value if args.obs == Modality.RGB.value else args.obs
    return bench_update(bench_config(args.preset, modality), args.repeats, device=args.device)


def main(argv: Sequence[str] | None = None) -> int:
    """Print one JSON line for ``fowm bench plan|update|peak``."""
    print(json.dumps(run(argv)), flush=True)
    return 0
