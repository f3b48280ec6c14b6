#!/usr/bin/env bash
# The speed numbers of docs/results.md "Speed", one JSON line each, into $1
# (default docs/results/bench_cpu_2core.jsonl). Run on an otherwise idle machine: every line
# carries its own same-run matmul peak, and the plan lines alternate the three layouts (C row
# kernels one block at a time, the same kernels over all blocks stacked, torch ops) so all see the
# same moments of the machine.
set -euo pipefail
out=${1:-docs/results/bench_cpu_2core.jsonl}
: > "$out"
for round in 1 2 3 4 5; do
  fowm bench plan --preset paper --lam 1 --repeats 9 >> "$out"
  fowm bench plan --preset paper --lam 1 --repeats 9 --stacked-blocks >> "$out"
  fowm bench plan --preset paper --lam 1 --repeats 9 --no-native >> "$out"
done
python benchmarks/planner_layout.py --rounds 3 >> "$out"
fowm bench plan --preset paper --lam 1 --repeats 9 --compile >> "$out"
fowm bench plan --preset paper --lam 0 --repeats 9 >> "$out"
fowm bench plan --preset cpu --lam 1 --repeats 15 >> "$out"
fowm bench update --preset paper --obs rgb --repeats 7 >> "$out"
fowm bench update --preset paper --obs state --repeats 9 >> "$out"
fowm bench update --preset cpu --obs state --repeats 15 >> "$out"
fowm bench peak >> "$out"
