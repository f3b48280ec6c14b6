"""Seconds per learner update of candidate CPU pixel encoders (issue 12), measured alternately.

The machine is shared and noisy, so every round measures every candidate once (in a fresh order)
together with the matmul peak, and the medians over rounds are reported. Each candidate is the
cpu preset with modality 'all' (84x84 RGB + 4-d proprio) and overrides of the encoder, image size
and batch. One JSON line per measurement, then a summary line.

    .venv/bin/python benchmarks/pixel_candidates.py --rounds 3 > docs/results/pixel_candidates.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import statistics

import torch

from fowm_core.jobs.bench import bench_config, bench_peak, bench_update, update_flops

REFERENCE_CONVS = {"conv_kernels": [7, 5, 3, 3], "conv_strides": [2, 2, 2, 2]}
DQN_CONVS = {"conv_kernels": [8, 4, 3], "conv_strides": [4, 2, 1]}
TWO_CONVS = {"conv_kernels": [8, 4], "conv_strides": [4, 2]}
# The cpu preset's pixel batch is 64 now; the _b128 candidates say their batch explicitly.
B128 = {"learner": {"batch_size": 128}}

CANDIDATES: dict[str, dict] = {
    "cpu_preset": {},            # what `fowm bench update --preset cpu --obs all` runs now
    "ref32_b128": {"model": {**REFERENCE_CONVS, "num_channels": 32}, **B128},
    "ref16_b128": {"model": {**REFERENCE_CONVS, "num_channels": 16}, **B128},
    "ref32_64px_b128": {"model": {**REFERENCE_CONVS, "num_channels": 32, "img_size": 64},
                        **B128},
    "ref16_64px_b64": {"model": {**REFERENCE_CONVS, "num_channels": 16, "img_size": 64},
                       "learner": {"batch_size": 64}},
    "dqn32_b128": {"model": {**DQN_CONVS, "num_channels": 32}, **B128},
    "dqn16_b128": {"model": {**DQN_CONVS, "num_channels": 16}, **B128},
    "dqn32_b64": {"model": {**DQN_CONVS, "num_channels": 32}, "learner": {"batch_size": 64}},
    "two16_b128": {"model": {**TWO_CONVS, "num_channels": 16}, **B128},
    "dqn16_b64": {"model": {**DQN_CONVS, "num_channels": 16}, "learner": {"batch_size": 64}},
    "dqn16_64px_b128": {"model": {**DQN_CONVS, "num_channels": 16, "img_size": 64}, **B128},
    "dqn16_64px_b64": {"model": {**DQN_CONVS, "num_channels": 16, "img_size": 64},
                       "learner": {"batch_size": 64}},
    "dqn32_64px_b64": {"model": {**DQN_CONVS, "num_channels": 32, "img_size": 64},
                       "learner": {"batch_size": 64}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated candidate names")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(CANDIDATES)
    rng = random.Random(0)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    peaks: list[float] = []
    for rnd in range(args.rounds):
        order = names[:]
        rng.shuffle(order)
        peak = bench_peak()["peak_gflops_per_s"]
        peaks.append(peak)
        for name in order:
            cfg = bench_config("cpu", "all", overrides=CANDIDATES[name])
            out = bench_update(cfg, args.repeats)
            seconds[name].append(out["update_s"])
            print(json.dumps({"round": rnd, "candidate": name, "overrides": CANDIDATES[name],
                              "update_s": out["update_s"], "gflop": out["flops"] / 1e9,
                              "peak_gflops_per_s": peak}), flush=True)
    summary = {}
    for name in names:
        cfg = bench_config("cpu", "all", overrides=CANDIDATES[name])
        summary[name] = {"median_update_s": statistics.median(seconds[name]),
                         "gflop": round(update_flops(cfg) / 1e9, 2),
                         "encoder_params": sum(p.numel() for p in _encoder(cfg).parameters())}
    print(json.dumps({"summary": summary, "median_peak_gflops_per_s": statistics.median(peaks),
                      "rounds": args.rounds, "torch_threads": torch.get_num_threads()}))


def _encoder(cfg):
    from fowm_core.model import WorldModel

    return WorldModel(cfg.model)._encoder["rgb"]


if __name__ == "__main__":
    main()
