"""Time and profile one full FOWM learner update: the fast path against the reference.

One update (docs/algorithm.md §3, §9) = augmentation, forward (both target encodes of the H·B next
observations included), backward, gradient clip, the model Adam step, the PER priority write-back,
the AWR π step and the EMA.
Batches come from a real replay buffer of random episodes and are sampled outside the timed region.

The machine this runs on is shared, so variants are timed *interleaved* in one process (update k of
every variant runs before update k+1 of any), from identical weights, and medians are reported with
the fp32 matmul peak measured in the same run (how much of the machine the run got).

Usage (one JSON line per variant, then an optional profile table):
    python benchmarks/update_profile.py --obs all --repeats 7 [--threads 2] [--profile]
    python benchmarks/update_profile.py --obs state

On a loaded machine run it with OMP_WAIT_POLICY=PASSIVE in the environment (set before torch
loads): with libgomp's default spin-waiting, 2-thread updates run much slower than with passive
waits while other processes run (docs/platform.md §15), because every OpenMP barrier spins through
the other thread's lost time slices. Unloaded, the default is the faster one. The JSON records
the policy.

Before/after across trees: run it with PYTHONPATH pointing at each tree in turn (``--only fast``;
an older Learner without ``fast`` runs as it is), alternating processes, on the same machine.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from fowm_core.config import FowmConfig, preset
from fowm_core.data.episode import Episode
from fowm_core.jobs.bench import bench_peak, update_flops
from fowm_core.learning.learner import Learner
from fowm_core.learning.replay import Batch, ReplayBuffer, offline_buffer
from fowm_core.model import WorldModel

PHASES = ("prepare", "targets", "forward", "backward", "model_step", "pi_step", "ema")


def executed_update_flops(cfg: FowmConfig) -> int:
    """Matmul/conv FLOPs (2 per multiply-add) that one fast-path update executes.

    Unlike ``bench.update_flops`` (backward = 2x forward everywhere, 2-head target Q counted as
    the reference's computation of all heads would be), this counts what runs: no input gradient
    for the first layer fed by data (conv1, the state encoder's first Linear, π's first Linear on
    detached latents), 2 target heads per min-2, and both no-grad next-observation encodes.
    """
    from fowm_core.jobs.bench import _head_macs, encoder_macs

    m, h = cfg.model, _head_macs(cfg)
    rows, batch, k = cfg.horizon * cfg.learner.batch_size, cfg.learner.batch_size, m.num_q
    enc = encoder_macs(cfg)
    first = 0                                  # MACs of the data-fed first layers of one image
    if m.uses_rgb:
        size = (m.img_size - 7) // 2 + 1
        first += size * size * m.num_channels * 3 * m.frame_stack * 49
    if m.uses_state:
        first += m.state_dim * m.enc_dim
    with_grad = h["dyn"] + h["rew"] + k * h["q"] + h["v"]
    macs = 2 * rows * enc                                        # online + target next encodes
    macs += batch * (3 * enc - first)                            # o_0: forward, both gradients
    macs += rows * 3 * with_grad                                 # rollout and heads, fwd + bwd
    macs += rows * (h["v"] + 2 * h["q"])                         # TD target V, V target min-2
    macs += rows * (2 * h["q"] + h["v"] + 3 * h["pi"] - m.latent_dim * m.mlp_dim)   # π step
    return 2 * macs


def random_buffer(cfg: FowmConfig, episodes: int = 20, steps: int = 50, seed: int = 0
                  ) -> ReplayBuffer:
    """An offline buffer of random episodes with the config's observation keys (rgb uint8)."""
    rng = np.random.default_rng(seed)
    m = cfg.model
    out = []
    for _ in range(episodes):
        obs = {}
        if m.uses_state:
            obs["state"] = rng.random((steps + 1, m.state_dim), dtype=np.float32)
        if m.uses_rgb:
            shape = (steps + 1, 3 * m.frame_stack, m.img_size, m.img_size)
            obs["rgb"] = rng.integers(0, 256, shape, dtype=np.uint8)
        out.append(Episode(obs=obs, action=rng.uniform(-1, 1, (steps, m.action_dim)).astype(
            np.float32), reward=rng.random(steps, dtype=np.float32)))
    return offline_buffer(out, cfg)


def make_learners(cfg: FowmConfig, variants: dict[str, bool]) -> dict[str, Learner]:
    """One learner per variant, all from the same weights (orthogonal init + noise, so the
    zero-initialised last layers are not trivially zero)."""
    torch.manual_seed(0)
    model = WorldModel(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    state = model.state_dict()
    learners = {}
    for name, fast in variants.items():
        twin = WorldModel(cfg.model)
        twin.load_state_dict(state)
        gen = torch.Generator().manual_seed(0)
        if "fast" in inspect.signature(Learner).parameters:
            learners[name] = Learner(twin, cfg, gen, fast=fast)
        else:       # a tree from before the fast path (e.g. main at the branch point): as is
            learners[name] = Learner(twin, cfg, gen)
    return learners


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
                ) -> dict[str, tuple[list[float], list[float]]]:
    """Per variant: (wall seconds, process CPU seconds) of each repeat. CPU seconds count the work
    of all threads whatever else the machine runs (OpenMP spin-waits included), so on a loaded
    machine they rank variants more steadily than wall time; with 1 thread they are the work."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name][0].append(time.perf_counter() - wall)
            times[name][1].append(time.process_time() - cpu)
    return times


def phase_breakdown(learner: Learner, batch: Batch) -> dict[str, float]:
    """Wall seconds per ``fowm.*`` record_function scope of one profiled update."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        learner.update(batch)
    totals = {e.key: e.cpu_time_total / 1e6 for e in prof.key_averages()}
    return {phase: round(totals.get(f"fowm.{phase}", 0.0), 4) for phase in PHASES}


def run(obs: str, repeats: int, variants: dict[str, bool], show_profile: bool) -> None:
    cfg = preset("paper", modality=obs)
    buffer = random_buffer(cfg)
    rng = np.random.default_rng(1)
    batches = [buffer.sample(cfg.learner.batch_size, rng) for _ in range(3)]
    learners = make_learners(cfg, variants)
    counter = {name: 0 for name in learners}

    def step(name: str) -> Callable[[], object]:
        def fn() -> object:
            counter[name] += 1
            return learners[name].update(batches[counter[name] % len(batches)])
        return fn

    peak_before = bench_peak(1024, 5)["peak_gflops_per_s"]
    times = interleaved({name: step(name) for name in learners}, repeats)
    peak_after = bench_peak(1024, 5)["peak_gflops_per_s"]
    flops, executed = update_flops(cfg), executed_update_flops(cfg)
    for name, (ts, cpu) in times.items():
        median = statistics.median(ts)
        print(json.dumps({
            "bench": "update", "obs": obs, "variant": name, "fast": variants[name],
            "batch": cfg.learner.batch_size, "horizon": cfg.horizon,
            "median_s": round(median, 4), "min_s": round(min(ts), 4),
            "times_s": [round(t, 3) for t in ts],
            "cpu_median_s": round(statistics.median(cpu), 4), "cpu_min_s": round(min(cpu), 4),
            "gflop": round(flops / 1e9, 1),
            "gflops_per_s": round(flops / median / 1e9, 1),
            "gflop_executed": round(executed / 1e9, 1),
            "gflops_executed_per_s": round(executed / median / 1e9, 1),
            "peak_gflops_per_s": [round(peak_before, 1), round(peak_after, 1)],
            "phases_s": phase_breakdown(learners[name], batches[0]),
            "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        }))
    if show_profile:
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            learners[next(iter(learners))].update(batches[1])
        print(prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=36,
            max_shapes_column_width=70))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--obs", choices=("all", "state", "rgb"), default="all")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default=None,
                        help="comma-separated variants to time (fast, reference)")
    parser.add_argument("--profile", action="store_true",
                        help="print a torch.profiler table of one update of the first variant")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = {"fast": True, "reference": False}
    if args.only:
        variants = {name: variants[name] for name in args.only.split(",")}
    run(args.obs, args.repeats, variants, args.profile)


if __name__ == "__main__":
    main()
