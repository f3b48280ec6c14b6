#!/usr/bin/env bash
# The one script to run when a GPU machine is lent (issue 12): planning decision and RGB update
# on CUDA for the paper preset, and a short paper-preset pixel pretrain, JSON into $1 (default
# docs/results). Targets on a current datacenter GPU: a paper decision <= 3 ms, an RGB update at
# batch 256 <= 15 ms. Needs a CUDA build of torch in the environment (FOWM: PY=.venv/bin/python,
# FOWM=.venv/bin/fowm); without a CUDA device it stops at once with a clear message (exit 3).
set -euo pipefail
out=${1:-docs/results}
PY=${PY:-.venv/bin/python}
FOWM=${FOWM:-.venv/bin/fowm}
export MUJOCO_GL=${MUJOCO_GL:-egl}
if ! "$PY" - <<'PY'
import sys
import torch
from fowm_core.model.device import cuda_count, resolve_device
if cuda_count() == 0:
    try:
        resolve_device("cuda")
    except Exception as err:   # the same message the commands give
        print(f"gpu_check: {err}", file=sys.stderr)
    sys.exit(3)
print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", file=sys.stderr)
PY
then
  echo "gpu_check: no CUDA device here; nothing measured, nothing written" >&2
  exit 3
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
{
  "$PY" -c "import json, torch; print(json.dumps({'gpu': torch.cuda.get_device_name(0), 'torch': torch.__version__, 'cuda': torch.version.cuda}))"
  "$FOWM" bench peak --device cuda --size 4096
  for round in 1 2 3; do
    "$FOWM" bench plan --preset paper --device cuda --repeats 21
    "$FOWM" bench plan --preset paper --device cuda --repeats 21 --lam 0
    "$FOWM" bench update --preset paper --obs rgb --device cuda --repeats 11
  done
  "$FOWM" bench update --preset paper --obs state --device cuda --repeats 11
  "$FOWM" bench update --preset cpu --obs all --device cuda --repeats 11
} > "$out/gpu_bench.jsonl"
# A short paper-preset pixel pretrain: 100 reach episodes with images, 2,000 updates on the GPU,
# then 20 evaluation episodes (the planner on the GPU too).
"$FOWM" collect --task reach --episodes 100 --obs all --seed 0 --out "$work/data" > /dev/null
"$FOWM" pretrain --task reach --preset paper --obs all --data "$work/data" --steps 2000 \
  --device cuda --out "$work/pre" > "$work/pretrain.json"
"$FOWM" eval --checkpoint "$work/pre/checkpoints/offline.safetensors" --episodes 20 \
  --device cuda > "$work/eval.json"
"$PY" - "$work" "$out/gpu_pixel_pretrain.json" <<'PY'
import json, sys
from pathlib import Path
work, dest = Path(sys.argv[1]), Path(sys.argv[2])
pre = json.loads((work / "pretrain.json").read_text())
ev = json.loads((work / "eval.json").read_text())
summary = {"task": "reach", "preset": "paper", "obs": "all", "episodes": 100,
           "offline_steps": pre["offline_steps"], "pretrain_seconds": pre["seconds"],
           "device": pre.get("device"), "eval": {k: ev[k] for k in ("success_rate", "mean_return",
                                                                   "episodes", "seconds")}}
dest.write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps(summary))
PY
echo "gpu_check: wrote $out/gpu_bench.jsonl and $out/gpu_pixel_pretrain.json" >&2
