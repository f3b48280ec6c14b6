"""`fowm classifier train | eval`: the success classifier from labelled episode bags
(docs/rewards.md).

    fowm classifier train --data BAGS --out DIR [--labels operator|simulated]
    fowm classifier eval  --classifier DIR --data BAGS [--labels simulated] [--out FILE]

``train`` holds out the last ``--holdout`` fraction of the bags (whole episodes, so no frame of a
held-out episode is seen in training), fits on the rest and writes DIR/classifier.safetensors
(+ its JSON sidecar, with the held-out metrics) and DIR/metrics.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fowm_core.data import bag_cache, labelled, labels
from fowm_core.errors import BagError, ConfigError
from fowm_core.jobs import results
from fowm_core.learning import success


def read_frames(data: str | Path, source: str, img_size: int = 84,
                positive_tail: int = 3) -> tuple[list[labelled.LabelledFrames], list[str]]:
    """Every bag's labelled frames (in bag order) and the bags skipped, with why."""
    bags = bag_cache.find_bags(Path(data))
    if not bags:
        msg = f"no rosbag2 directories (with metadata.yaml) under {data}"
        raise BagError(msg)
    parts, skipped = [], []
    for bag in bags:
        try:
            parts.append(labelled.labelled_frames(bag, source, img_size=img_size,
                                                positive_tail=positive_tail))
        except BagError as err:
            skipped.append(f"{bag}: {err}")
    if not parts:
        msg = f"none of the {len(bags)} bags under {data} has {source} labels: {skipped[:2]}"
        raise BagError(msg)
    return parts, skipped


def train(data: str | Path, out: str | Path, *, source: str = "operator", steps: int = 1500,
          holdout: float = 0.2, seed: int = 0, positive_tail: int = 3) -> dict[str, Any]:
    if not 0.0 <= holdout < 1.0:
        msg = f"--holdout {holdout} is invalid: expected a fraction in [0, 1)"
        raise ConfigError(msg)
    start = time.perf_counter()
    parts, skipped = read_frames(data, source, positive_tail=positive_tail)
    n_val = round(holdout * len(parts)) if len(parts) > 1 else 0
    fit = labelled.LabelledFrames.concat(parts[: len(parts) - n_val], source)
    val = labelled.LabelledFrames.concat(parts[len(parts) - n_val:], source)
    clf = success.SuccessClassifier.create(seed=seed)
    read_s = time.perf_counter() - start
    fit_info = success.train(clf, fit.rgb, fit.labels, success.TrainConfig(steps=steps, seed=seed))
    train_s = time.perf_counter() - start - read_s
    held_out = (success.binary_metrics(clf.predict(val.rgb), val.labels) if len(val.labels)
                else None)
    task = labels.end_event(bag_cache.find_bags(Path(data))[0]).task    # what it scores
    meta = {"label_source": source, "simulated_labels": source.startswith("simulated"),
            "task": task, "data": str(data),
            "episodes_train": len(parts) - n_val, "episodes_held_out": n_val,
            "frames_train": len(fit.labels), "positives_train": int(fit.labels.sum()),
            "steps": steps, "seed": seed, "threshold": 0.5, "held_out": held_out, **fit_info}
    info = clf.save(Path(out) / success.FILE_NAME, meta)
    summary = {**meta, "classifier": str(info.path), "sha256": info.sha256,
               "seconds_read": round(read_s, 1), "seconds_train": round(train_s, 1),
               "skipped_bags": skipped}
    results.write_json(Path(out) / "metrics.json", summary)
    return summary


def evaluate(classifier: str | Path, data: str | Path, *, source: str = "simulated"
             ) -> dict[str, Any]:
    """Accuracy, precision, recall and AUC of a classifier on every frame of ``data``'s bags,
    with the per-episode view: does max p over an episode match its success?"""
    clf = success.load(classifier)
    parts, skipped = read_frames(data, source, img_size=clf.img_size)
    frames = labelled.LabelledFrames.concat(parts, source)
    prob = clf.predict(frames.rgb)
    episode_prob = [float(prob[frames.episode == i].max()) if np.any(frames.episode == i)
                    else 0.0 for i in range(len(parts))]
    episode_truth = [float(p.labels.max()) if len(p.labels) else 0.0 for p in parts]
    return {"classifier": str(classifier), "sha256": clf.sha256, "data": str(data),
            "label_source": source, "episodes": len(parts), "skipped_bags": skipped,
            "frames": success.binary_metrics(prob, frames.labels, clf.threshold),
            "episodes_any_success": success.binary_metrics(episode_prob, episode_truth,
                                                           clf.threshold)}


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.verb == "train":
        summary = train(args.data, args.out, source=args.labels, steps=args.steps,
                        holdout=args.holdout, seed=args.seed, positive_tail=args.positive_tail)
        print(json.dumps({k: summary[k] for k in ("classifier", "held_out", "seconds_train")},
                         default=str))
        return 0
    report = evaluate(args.classifier, args.data, source=args.labels)
    if args.out is not None:
        results.write_json(args.out, report)
    print(json.dumps({k: report[k] for k in ("episodes", "frames", "episodes_any_success")}))
    return 0
