"""The camera path per control tick: a 640x480 rgb8 image message → the model's input → latent.

Steps timed separately (median milliseconds over ``--repeats`` ticks, same process, alternating
the two resizers tick by tick so both see the same machine load):
  convert  sensor_msgs/Image → (3, 480, 640) uint8 (fowm_core.data.convert.image_array)
  resize   → (3, S, S) uint8, S = the model's img_size, three ways:
             torch      F.interpolate bilinear, antialias=True on CHW (fowm's resize before)
             cv2_planes cv2.resize INTER_AREA per CHW plane (convert.resize_rgb, the bag reader)
             cv2_hwc    message → INTER_AREA on the HWC buffer → small transpose, no CHW copy
                        of the full image (convert.model_image, the planner node; it replaces
                        convert AND resize)
  encode   the model's encoder on one image (+ the 4-d proprio), cpu preset and paper preset

    .venv/bin/python benchmarks/camera_path.py [--threads 2] > docs/results/camera_path_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fowm_core.config import Modality, preset
from fowm_core.data import convert
from fowm_core.jobs.bench import median_seconds
from fowm_core.model import WorldModel


def _ms(fn: Callable[[], Any], repeats: int) -> float:
    return 1000 * median_seconds(fn, repeats)


def main() -> None:
    import cv2

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    msg = convert.image_msg(hwc, 0)
    chw = convert.image_array(msg)[None]
    out: dict[str, Any] = {"bench": "camera_path", "image": [args.width, args.height],
                           "torch_threads": args.threads, "cv2_threads": cv2.getNumThreads(),
                           "cv2_version": cv2.__version__, "torch_version": torch.__version__,
                           "repeats": args.repeats, "ms": {}}
    ms = out["ms"]
    ms["convert"] = _ms(lambda: convert.image_array(msg), args.repeats)
    for size in (84, 64):
        ways = {"torch": lambda s=size: convert.resize_rgb_torch(chw, s),
                "cv2_planes": lambda s=size: convert.resize_rgb_cv2(chw, s),
                "cv2_hwc": lambda s=size: convert.model_image(msg, s)}
        runs: dict[str, list[float]] = {k: [] for k in ways}
        for _ in range(5):        # alternate the ways in blocks, medians of medians
            for how, fn in ways.items():
                runs[how].append(_ms(fn, args.repeats // 5 or 1))
        for how in ways:
            ms[f"resize_{how}_{size}"] = statistics.median(runs[how])
        a = convert.resize_rgb_torch(chw, size).astype(int)
        b = convert.resize_rgb_cv2(chw, size).astype(int)
        out[f"max_abs_diff_torch_vs_cv2_{size}"] = int(np.abs(a - b).max())
    for name in ("cpu", "paper"):
        cfg = preset(name, task="reach", modality=Modality.ALL)
        model = WorldModel(cfg.model).eval()
        obs = {"rgb": torch.from_numpy(convert.resize_rgb(chw, cfg.model.img_size)),
               "state": torch.zeros(1, cfg.model.state_dim)}
        with torch.inference_mode():
            ms[f"encode_{name}"] = _ms(lambda m=model, o=obs: m.encode(o), args.repeats)
    for name in ("cpu", "paper"):
        for how in ("torch", "cv2_planes"):
            ms[f"tick_{name}_{how}"] = (ms["convert"] + ms[f"resize_{how}_84"]
                                        + ms[f"encode_{name}"])
        ms[f"tick_{name}_cv2_hwc"] = ms["resize_cv2_hwc_84"] + ms[f"encode_{name}"]
    out["resize_rgb_uses"] = convert.RESIZE_METHOD
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
