"""Success labels and reward sources in episode bags (docs/rewards.md).

Where a label lives: the end event on /fowm/episode carries ``success``. On the robot (the episode
manager's real mode) it is the operator's ``label_success`` answer and the event says so with
``labelled_by: "operator"``; otherwise it was computed (the twin's or the tracker's success).
The end event also carries ``reward_sources``, which source scored each step's /fowm/reward,
run-length coded: ``"tracker:12,classifier:3,label:10"``.

``read_label`` is the typed reader of one bag's label; data.labelled_frames turns bags into
classifier training data.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader, ReaderError
from rosbags.serde import SerdeError

from fowm_core.contract import topics
from fowm_core.contract.messages import EpisodeEvent
from fowm_core.data import convert
from fowm_core.errors import BagError, FowmError

REWARD_SOURCES = ("tracker", "classifier", "label")
_RUN = re.compile(r"([a-z]+):([1-9][0-9]{0,8})")


# -- reward sources, run-length coded ------------------------------------------------------------
def encode_sources(sources: Sequence[str]) -> str:
    """["tracker", "tracker", "label"] → "tracker:2,label:1"."""
    runs: list[list[Any]] = []
    for source in sources:
        if source not in REWARD_SOURCES:
            msg = f"reward source {source!r} is invalid: expected one of {REWARD_SOURCES}"
            raise FowmError(msg)
        if runs and runs[-1][0] == source:
            runs[-1][1] += 1
        else:
            runs.append([source, 1])
    return ",".join(f"{s}:{n}" for s, n in runs)


def decode_sources(text: str) -> list[str]:
    """The inverse of ``encode_sources``; FowmError naming the bad part."""
    out: list[str] = []
    for part in text.split(",") if text else []:
        match = _RUN.fullmatch(part)
        if match is None or match.group(1) not in REWARD_SOURCES:
            msg = (f"reward_sources part {part[:40]!r} is invalid: expected SOURCE:COUNT with "
                   f"SOURCE one of {REWARD_SOURCES}")
            raise FowmError(msg)
        out += [match.group(1)] * int(match.group(2))
    return out


def fill_label_rewards(rewards: np.ndarray, sources: Sequence[str], success: bool) -> np.ndarray:
    """Steps scored by neither tracker nor classifier ("label") carry a placeholder on
    /fowm/reward; their reward is the operator's end-of-episode label: float(success) on the last
    step, 0 before it (a sparse reward in [0, 1], as the paper's labelled data)."""
    out = np.asarray(rewards, np.float32).copy()
    if len(sources) != len(out):
        msg = (f"reward_sources names {len(sources)} steps but the episode has {len(out)}: "
               "the end event does not belong to these rewards")
        raise FowmError(msg)
    for t, source in enumerate(sources):
        if source == "label":
            out[t] = float(success) if t == len(out) - 1 else 0.0
    return out


# -- the label of one bag ------------------------------------------------------------------------
@dataclass(frozen=True)
class EpisodeLabel:
    """A bag's outcome: ``success``, and whether an operator gave it (``source`` "operator") or
    it was computed (``"computed"``: the twin's or the tracker's success)."""

    bag: Path
    task: str
    episode: int | str
    success: bool
    source: str
    reward_sources: tuple[str, ...] | None = None


def end_event(bag: str | Path) -> EpisodeEvent:
    """The bag's one end event on /fowm/episode (BagError otherwise); reads nothing else."""
    path = Path(bag)
    try:
        with Reader(path) as reader:
            conns = [c for c in reader.connections if c.topic == topics.EPISODE]
            events = [convert.parse_event(convert.TYPESTORE.deserialize_cdr(raw, c.msgtype))
                      for c, _, raw in reader.messages(connections=conns)]
    except (ReaderError, SerdeError, OSError, ValueError, KeyError, FowmError) as err:
        msg = f"bag {path} has no readable episode events ({type(err).__name__}: {err})"
        raise BagError(msg) from err
    ends = [e for e in events if e.event == "end"]
    if len(ends) != 1:
        msg = (f"bag {path} holds {len(ends)} end events on {topics.EPISODE}: expected exactly "
               "one (a cut recording?)")
        raise BagError(msg)
    return ends[0]


def read_label(bag: str | Path) -> EpisodeLabel:
    end = end_event(bag)
    text = end.get("reward_sources")
    try:
        sources = None if text is None else tuple(decode_sources(text))
    except FowmError as err:
        msg = f"bag {bag}: {err}"
        raise BagError(msg) from err
    return EpisodeLabel(Path(bag), end.task, end.episode, bool(end.get("success", False)),
                        "operator" if end.get("labelled_by") == "operator" else "computed",
                        sources)
