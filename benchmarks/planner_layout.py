"""Why the planner runs its stacked blocks one at a time: one imagined step, three layouts (JSON).

One step of the paper preset's fast path (N = 512 candidates, blocks [dynamics, reward, 5 Q heads],
(z, a) = 54 inputs, 512 hidden units), all with the same math:
  stacked_torch   — one bmm per layer over all 7 blocks, torch elementwise ops (--no-native)
  stacked_kernels — one bmm per layer over all 7 blocks, the C row kernels for the epilogues
                    (planner.stacked_blocks: true)
  per_block       — per block: mm → kernel → mm → kernel on two reused 1 MiB buffers (the default)
Alternating rounds, median ms per step, plus the same-run 2048² matmul peak.

    python benchmarks/planner_layout.py [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from fowm_core.jobs.bench import _random_model, bench_config, bench_peak, median_seconds
from fowm_core.planner import native
from fowm_core.planner.fused import FusedModel


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    cfg = bench_config("paper", lam=1.0)
    model = _random_model(cfg)
    fast, slow = FusedModel(model), FusedModel(model, native_kernels=False)
    stacked = FusedModel(model, per_block=False)
    if fast.native is None:
        raise SystemExit(f"the C row kernels are unavailable: {native.status()}")
    gen = torch.Generator().manual_seed(0)
    n, m = cfg.planner.num_samples, cfg.model
    z, a = torch.rand(n, m.latent_dim, generator=gen), torch.rand(n, m.action_dim, generator=gen)
    layouts = {
        "stacked_torch": lambda: slow.step(z, a, with_q=True),
        "stacked_kernels": lambda: stacked.step(z, a, with_q=True),
        "per_block": lambda: fast.step(z, a, with_q=True),
    }
    rounds = []
    with torch.inference_mode():
        for _ in range(args.rounds):
            row = {"peak_gflops_per_s": bench_peak()["peak_gflops_per_s"]}
            row.update({name: 1e3 * median_seconds(fn, repeats=41, warmup=3)
                        for name, fn in layouts.items()})
            rounds.append(row)
    inputs = m.latent_dim + m.action_dim
    flops = 2 * n * 7 * (inputs * m.mlp_dim + m.mlp_dim * m.mlp_dim)
    summary = {name: statistics.median(r[name] for r in rounds) for name in layouts}
    print(json.dumps({"bench": "planner_layout", "samples": n, "blocks": 7,
                      "step_gflop": flops / 1e9, "torch_threads": torch.get_num_threads(),
                      "median_ms": summary, "rounds": rounds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
