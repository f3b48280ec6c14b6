"""The lab key's place in a run (docs/trust.md), shared by ``fowm run``/the demo (fowm.bringup) and
the launch files (fowm.ros.launch_actions): who signs, who verifies, where weights may come from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fowm_core.runtime.trust import generate_key

Overrides = dict[str, dict[str, Any]]


def trust_overrides(work_dir: str | Path, key_file: str | Path | None = None) -> Overrides:
    """Who may swap weights in (docs/trust.md): the lab key for the learner (signs), the planner
    (verifies) and the recorder (records only authentic live reports), and the learner's
    checkpoint directory as the planner's trusted directory. Without ``key_file`` the key is
    ``<work_dir>/lab.key``, created (0600) if missing: a local run is authenticated too."""
    work_dir = Path(work_dir)
    key = Path(key_file) if key_file else work_dir / "lab.key"
    if not key_file and not key.exists():
        generate_key(key)
    return {"fowm_learner": {"key_file": str(key)}, "fowm_recorder": {"key_file": str(key)},
            "fowm_planner": {"trust.key_file": str(key),
                             "trust.trusted_dir": str(work_dir / "checkpoints")}}
