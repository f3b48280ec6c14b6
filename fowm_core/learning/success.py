"""A success classifier: p(success | 84×84 RGB image), the reward of real-robot data
(docs/rewards.md).

The paper's real-robot rewards came from people's labels and a small success classifier (rewards in
[0, 1]). This is that classifier: a separate three-layer conv net over the same (3, S, S) uint8
image the world model sees, not a head on the world model's encoder, because (measured in
docs/rewards.md) it trains in seconds on a few hundred labelled episodes, needs no pretrained world
model (it labels the offline data *before* pretraining), and serves state-observation agents, which
have no image encoder at all.

Training uses a balanced loss (success is rare early in an episode): binary cross-entropy with the
positives weighted by #negatives / #positives, and the world model's random-shift augmentation.
Weights are a fowm checkpoint (safetensors + JSON sidecar with the SHA-256, never pickled;
learning/checkpoint_file.py); the sidecar's meta says what it was trained on (task, label source,
image size, held-out metrics).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fowm_core.errors import CheckpointError, ConfigError
from fowm_core.learning import checkpoint_file
from fowm_core.learning.augment import random_crop, shift_pad

KIND = "fowm-success-classifier"
VERSION = 1
FILE_NAME = "classifier.safetensors"


@dataclass(frozen=True)
class ClassifierConfig:
    """The net's shape: conv channels (kernel 5 then 3, stride 2 each), one hidden layer."""

    img_size: int = 84
    channels: tuple[int, ...] = (16, 32, 32)
    hidden: int = 64

    def __post_init__(self) -> None:
        if self.img_size < 16 or not self.channels or self.hidden < 1:
            msg = (f"classifier config {self} is invalid: expected img_size >= 16, at least one "
                   "conv layer and hidden >= 1")
            raise ConfigError(msg)


class SuccessNet(nn.Module):
    """uint8 (N, 3, S, S) → success logit (N,)."""

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        size, cin = cfg.img_size, 3
        for i, cout in enumerate(cfg.channels):
            k = 5 if i == 0 else 3
            layers += [nn.Conv2d(cin, cout, k, stride=2), nn.ReLU()]
            size, cin = (size - k) // 2 + 1, cout
        self.convs = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(cin * size * size, cfg.hidden),
                                  nn.ReLU(), nn.Linear(cfg.hidden, 1))

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = rgb.float() / 255.0 - 0.5
        return self.head(self.convs(x)).squeeze(-1)


# -- metrics -------------------------------------------------------------------------------------
def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann–Whitney, ties count ½); None without both classes."""
    scores, labels = np.asarray(scores, float), np.asarray(labels) > 0.5
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    allv = np.concatenate([pos, neg])
    for value in np.unique(allv):            # average ranks of ties
        tie = allv == value
        ranks[tie] = ranks[tie].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2)
                 / (len(pos) * len(neg)))


def binary_metrics(prob: np.ndarray, labels: np.ndarray, threshold: float = 0.5
                   ) -> dict[str, Any]:
    """accuracy, precision, recall, balanced accuracy and AUC of ``prob`` against 0/1 labels."""
    prob, truth = np.asarray(prob, float), np.asarray(labels) > 0.5
    pred = prob >= threshold
    tp, fp = int(np.sum(pred & truth)), int(np.sum(pred & ~truth))
    fn, tn = int(np.sum(~pred & truth)), int(np.sum(~pred & ~truth))
    n = max(1, len(truth))
    recall = tp / (tp + fn) if tp + fn else None
    specificity = tn / (tn + fp) if tn + fp else None
    return {"n": len(truth), "positives": int(truth.sum()), "accuracy": (tp + tn) / n,
            "precision": tp / (tp + fp) if tp + fp else None, "recall": recall,
            "balanced_accuracy": (None if recall is None or specificity is None
                                  else (recall + specificity) / 2),
            "auc": auc(prob, truth), "threshold": threshold,
            "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn}}


# -- the classifier ------------------------------------------------------------------------------
@dataclass
class SuccessClassifier:
    """The net plus what it was trained on; ``predict`` gives probabilities in [0, 1]."""

    net: SuccessNet
    meta: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""            # of the tensor file it was read from ("" before saving)

    @classmethod
    def create(cls, cfg: ClassifierConfig = ClassifierConfig(), seed: int = 0
               ) -> SuccessClassifier:
        torch.manual_seed(seed)
        return cls(SuccessNet(cfg))

    @property
    def img_size(self) -> int:
        return self.net.cfg.img_size

    @property
    def threshold(self) -> float:
        return float(self.meta.get("threshold", 0.5))

    @torch.no_grad()
    def predict(self, rgb: np.ndarray, batch: int = 256) -> np.ndarray:
        """(N, 3, S, S) or (3, S, S) uint8 → (N,) float32 probabilities (S = img_size)."""
        x = np.asarray(rgb)
        if x.ndim == 3:
            x = x[None]
        if x.dtype != np.uint8 or x.shape[1:] != (3, self.img_size, self.img_size):
            msg = (f"classifier input is {x.dtype} {x.shape}: expected uint8 (N, 3, "
                   f"{self.img_size}, {self.img_size}); resize with data.convert.resize_rgb")
            raise ConfigError(msg)
        self.net.eval()
        out = [torch.sigmoid(self.net(torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))))
               for i in range(0, len(x), batch)]
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros(0, np.float32)

    # The bag reader's image-reward hook (data.bags.ImageReward): a stable key for its cache.
    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return self.predict(rgb)

    @property
    def key(self) -> str:
        return f"{KIND}:{self.sha256 or 'unsaved'}"

    def __repr__(self) -> str:
        return f"SuccessClassifier({self.key})"

    def save(self, path: str | Path, meta: Mapping[str, Any] | None = None
             ) -> checkpoint_file.CheckpointInfo:
        cfg = self.net.cfg
        self.meta = {**self.meta, **(meta or {}), "kind": KIND, "version": VERSION,
                     "config": {"img_size": cfg.img_size, "channels": list(cfg.channels),
                                "hidden": cfg.hidden}}
        info = checkpoint_file.save_checkpoint(path, dict(self.net.state_dict()), self.meta)
        self.sha256 = info.sha256
        return info


def load(path: str | Path) -> SuccessClassifier:
    """A classifier from its checkpoint (a file, or the directory `fowm classifier train` wrote);
    refuses pickles, hash mismatches, other kinds and shapes that do not fit its config."""
    path = Path(path)
    if path.is_dir():
        path = path / FILE_NAME
    meta = checkpoint_file.read_meta(path)
    if meta.get("kind") != KIND or meta.get("version") != VERSION:
        msg = (f"{path} is not a success classifier (meta kind={meta.get('kind')!r} "
               f"version={meta.get('version')!r}, expected {KIND!r} {VERSION}); train one with "
               "`fowm classifier train`")
        raise CheckpointError(msg)
    try:
        raw = meta["config"]
        cfg = ClassifierConfig(int(raw["img_size"]), tuple(int(c) for c in raw["channels"]),
                               int(raw["hidden"]))
    except (KeyError, TypeError, ValueError) as err:
        msg = f"{path}: classifier meta 'config' is unusable ({err}); train it again"
        raise CheckpointError(msg) from err
    net = SuccessNet(cfg)
    expected = {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}
    tensors, info = checkpoint_file.read_checkpoint(path, expected)
    net.load_state_dict(tensors)
    return SuccessClassifier(net, dict(info.meta), info.sha256)


def check_task(clf: SuccessClassifier, task: str, what: str = "classifier") -> None:
    """A classifier trained on another task's images must not score this one."""
    trained = clf.meta.get("task")
    if trained not in (None, task):
        msg = (f"{what} {clf.key} was trained on task {trained!r}, not {task!r}: train one on "
               f"this task's bags (fowm classifier train)")
        raise ConfigError(msg)


# -- training ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    augment: bool = True
    seed: int = 0


def pos_weight(labels: np.ndarray) -> float:
    """#negatives / #positives (1 when a class is missing): the balanced loss's positive weight."""
    pos = float(np.sum(np.asarray(labels) > 0.5))
    neg = float(len(labels)) - pos
    return neg / pos if pos > 0 and neg > 0 else 1.0


def train(clf: SuccessClassifier, rgb: np.ndarray, labels: np.ndarray,
          cfg: TrainConfig = TrainConfig(), log: Sequence[Any] | None = None) -> dict[str, float]:
    """Fit on uint8 (N, 3, S, S) images and 0/1 labels with the balanced BCE; returns the last
    loss and the positive weight used."""
    x = torch.from_numpy(np.ascontiguousarray(rgb))
    y = torch.as_tensor(np.asarray(labels, np.float32))
    if len(x) != len(y) or len(x) == 0:
        msg = f"{len(x)} images and {len(y)} labels: expected the same non-zero number"
        raise ConfigError(msg)
    weight = torch.tensor(pos_weight(labels))
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(clf.net.parameters(), lr=cfg.lr)
    pad = shift_pad(clf.img_size)
    clf.net.train()
    loss = torch.zeros(())
    for step in range(cfg.steps):
        idx = torch.randint(0, len(x), (min(cfg.batch_size, len(x)),), generator=gen)
        batch = x[idx]
        if cfg.augment:
            batch = random_crop(batch, pad, gen)
        loss = F.binary_cross_entropy_with_logits(clf.net(batch), y[idx], pos_weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log is not None and isinstance(log, list) and (step + 1) % 100 == 0:
            log.append({"step": step + 1, "loss": float(loss)})
    clf.net.eval()
    return {"loss": float(loss.detach()), "pos_weight": float(weight)}
