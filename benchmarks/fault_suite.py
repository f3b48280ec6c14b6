"""Fault-injection suite: every fault of issue 11 against the real nodes and processes, as a table
fault → expected → observed, with counts of crashes, non-finite/out-of-range commands, untrusted
swaps, lost completed episodes and deadline misses during the fault.

    .venv/bin/python benchmarks/fault_suite.py                 # every row (~15 min on 2 cores)
    .venv/bin/python benchmarks/fault_suite.py --fast          # the CI subset (tests/e2e)
    .venv/bin/python benchmarks/fault_suite.py --out docs/results/fault_suite   # .json + .md

Groups: processes and the bag directory (fault_process), processes SIGKILLed at bad moments
(fault_kill), the campaign's planner faults (fault_planner, the rows below), and every subscribed
topic of every node × malformed / hostile / flooding / stale-future (fault_nodes: the topics are
read from the nodes themselves).

A row "holds" when what was observed is what is expected. ``needs`` names the work a row waits
for where it does not hold yet (typed messages and stamp checks; the trust layer's wiring into the
hot-swap). FIFO and /dev/zero announcements can wedge or spin the validator thread of the
planner under test, so they run last and the process ends with os._exit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

if __package__ in (None, ""):          # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import fault_nodes
from benchmarks import fault_planner as fp
from benchmarks.fault_kill import KILL_ROWS
from benchmarks.fault_process import PROCESS_ROWS
from fowm_core.contract import topics
from fowm_core.runtime import trust

CONTRACT = "typed messages + stamp checks (issue 11, other helper)"
TRUST = "trust layer wired into the hot-swap (issue 11, integrator)"


@dataclass
class Row:
    fault: str
    expected: str
    observed: str
    holds: bool
    crashes: int | None = None
    bad_commands: int | None = None
    untrusted_swaps: int | None = None
    lost_episodes: int | None = None
    deadline_misses: int | None = None
    needs: str = ""
    seconds: float = 0.0


# -- planner rows: (fault, expected, inject, every_hz, check, needs, fast) ----------------------
HOLD = "no crash, control thread alive, hold (no plan on it), no bad command, recovers"
FLOOD = ("held as input_conflict (second publisher), no plan on flood data, ≤ 2 deadline misses, "
         "recovers")
FORGED = ("refused: no swap, no crash, planner keeps planning, the validator answers the next "
          "announcement")


def _nan(msg: Any) -> Any:
    msg.pose.position.x = math.nan
    return msg


def _huge(msg: Any) -> Any:
    msg.pose.position.x = 1e30
    return msg


def _short_positions(msg: JointState) -> JointState:
    msg.position = [0.0] * 3
    return msg


def _no_gripper(msg: JointState) -> JointState:
    msg.name, msg.position = ["joint1"], [0.0]
    return msg


def _nan_joints(msg: JointState) -> JointState:
    msg.position = [math.nan] * 8
    return msg


def _short_image(msg: Image) -> Image:
    msg.data = bytes(10)
    return msg


def _huge_dims(msg: Image) -> Image:
    msg.height = msg.width = 100000
    return msg


def _bad_encoding(msg: Image) -> Image:
    msg.encoding = "32FC1"
    return msg


def _announce(body: Callable[[fp.Harness], dict[str, Any]]) -> Callable[[fp.Harness], None]:
    def inject(h: fp.Harness) -> None:
        fp.publish_once(String, topics.WEIGHTS, json.dumps(body(h)), fp.qos.LATCHED)(h)
    return inject


def _unsigned(h: fp.Harness) -> dict[str, Any]:
    body = h.signed(fp.forged_checkpoint(h, "random.safetensors", 200), 200)
    body.pop(trust.SIGNATURE)
    return body


def _wrong_key(h: fp.Harness) -> dict[str, Any]:
    other = trust.load_key(trust.generate_key(h.work / "other.key"))
    return h.signed(fp.forged_checkpoint(h, "wrongkey.safetensors", 200), 200, key=other)


def _outside(h: fp.Harness) -> dict[str, Any]:
    path = fp.tiny_checkpoint(Path(tempfile.mkdtemp()) / "x.safetensors", seed=9, step=300)
    return h.signed(path, 300)


def _fifo(h: fp.Harness) -> dict[str, Any]:
    path = h.trusted / "weights.fifo"
    os.mkfifo(path)
    return h.signed(path, 400, sha256="cd" * 32)


def _dev_zero(h: fp.Harness) -> dict[str, Any]:
    link = h.trusted / "zero.safetensors"          # inside the trusted directory, pointing out
    link.symlink_to("/dev/zero")
    return h.signed(link, 500, sha256="ef" * 32)


FORGED_LIVE = {"live": True, "path": "/evil.safetensors", "sha256": "0" * 64, "step": 999}


PlannerRow = tuple[str, str, Callable[[fp.Harness], Any], float, str, str, bool]
M = fp.mutate
PLANNER_ROWS: list[PlannerRow] = [
    ("joint_states: fewer positions than names", HOLD, M("joint_states", _short_positions), 0,
     "hold", CONTRACT, True),
    ("joint_states: gripper joint missing", HOLD, M("joint_states", _no_gripper), 0, "hold",
     CONTRACT, False),
    ("joint_states: NaN positions", HOLD, M("joint_states", _nan_joints), 0, "hold", CONTRACT,
     False),
    ("joint_states: stamped 1 h in the future", HOLD,
     M("joint_states", fp.shift_stamp(3600)), 0, "hold", CONTRACT, False),
    ("ee_pose: NaN position", HOLD, M("ee_pose", _nan), 0, "hold", CONTRACT, True),
    ("ee_pose: 1e30 position (finite, out of range)", HOLD, M("ee_pose", _huge), 0, "hold",
     CONTRACT, False),
    ("ee_pose: stale (10 s old)", HOLD, M("ee_pose", fp.shift_stamp(-10)), 0, "hold", CONTRACT,
     False),
    ("every stream stamped 1 h in the future", HOLD,
     lambda h: h.robot.mutate.update(dict.fromkeys(h.robot.pubs, fp.shift_stamp(3600))), 0,
     "hold", CONTRACT, True),
    # This planner's model (RGB + proprio) does not read the object pose: it must ignore it.
    ("object_pose: NaN position (not read by an RGB + proprio model)",
     "ignored: planning goes on, no bad command", M("object_pose", _nan), 0, "ignored", CONTRACT,
     False),
    ("image: data shorter than height×step", HOLD, M("image", _short_image), 0, "hold",
     CONTRACT, False),
    ("image: 100000×100000 declared", HOLD, M("image", _huge_dims), 0, "hold", CONTRACT, False),
    ("image: encoding 32FC1", HOLD, M("image", _bad_encoding), 0, "hold", CONTRACT, False),
    ("flood: joint_states at 1 kHz from a second publisher", FLOOD,
     fp.second_publisher("joint_states", fp.flood_joints), 1000, "flood", "", True),
    ("flood: 640×480 images at 200 Hz from a second publisher", FLOOD,
     fp.second_publisher("image", fp.flood_image), 200, "flood", "", False),
    ("/fowm/episode: []", "no crash, planning goes on",
     fp.publish_once(String, topics.EPISODE, "[]"), 0, "event", CONTRACT, True),
    ("/fowm/episode: not JSON", "no crash, planning goes on",
     fp.publish_once(String, topics.EPISODE, "{oops"), 0, "event", CONTRACT, False),
    ("/fowm/episode: start with seed \"abc\"", "no crash, planning goes on",
     fp.publish_once(String, topics.EPISODE, '{"event": "start", "seed": "abc"}'), 0, "event",
     CONTRACT, False),
    ("/fowm/weights: {path: x, step: \"abc\"}", FORGED,
     fp.publish_once(String, topics.WEIGHTS, '{"path": "x", "step": "abc"}', fp.qos.LATCHED), 0,
     "weights", CONTRACT, True),
    ("/fowm/weights: unsigned checkpoint (random weights, our format)", FORGED,
     _announce(_unsigned), 0, "weights", TRUST, True),
    ("/fowm/weights: signed with a wrong key", FORGED, _announce(_wrong_key), 0, "weights",
     TRUST, False),
    ("/fowm/weights: rollback to an older step (5 < live 100), correctly signed", FORGED,
     _announce(lambda h: h.signed(fp.forged_checkpoint(h, "old.safetensors", 5), 5)), 0,
     "weights", TRUST, False),
    ("/fowm/weights: path outside the trusted directory, correctly signed", FORGED,
     _announce(_outside), 0, "weights", TRUST,
     False),
    ("/fowm/weights: forged {live: true} from another node",
     "ignored by the planner; bags can tell it from the planner's own (origin signature)",
     fp.publish_once(String, topics.WEIGHTS, json.dumps(FORGED_LIVE), fp.qos.LATCHED), 0,
     "live", TRUST, False),
    # Last: these can wedge (FIFO) or spin (/dev/zero) the validator thread of this process.
    ("/fowm/weights: a FIFO in the trusted directory, correctly signed", FORGED, _announce(_fifo),
     0, "weights", TRUST, False),
    ("/fowm/weights: a link to /dev/zero in the trusted directory, correctly signed", FORGED,
     _announce(_dev_zero), 0, "weights", TRUST, False),
]


def run_planner_row(spec: PlannerRow, root: Path) -> Row:
    name, expected, inject, every_hz, check, needs, _ = spec
    start = time.monotonic()
    with fp.Harness(root / f"row{abs(hash(name)) % 10**8}") as h:
        out = h.run(inject, every_hz=every_hz,
                    clear=fp.probe_validator if check == "weights" else None)
    common = out.crashes == 0 and out.control_alive and out.bad_commands == 0
    # One plan may still come from the last good observation, in flight as the fault starts.
    if check == "hold":
        holds = common and out.plans_during <= 1 and out.recovered
    elif check == "flood":
        holds = (common and out.plans_during <= 1 and out.deadline_misses <= 2
                 and out.recovered and "input_conflict" in out.holds_during)
    elif check == "weights":
        responsive = any("absent_probe" in r for r in out.refused)
        holds = common and out.swaps == 0 and out.recovered and responsive
    elif check == "ignored":
        holds = common and out.recovered and out.plans_during > 1
    elif check == "live":          # ignored, and a reader of the bag can tell it is forged
        holds = (common and out.swaps == 0 and out.recovered
                 and not trust.authentic_live(h.key, FORGED_LIVE))
    else:
        holds = common and out.recovered
    observed = (f"crashes {out.crashes}{' (' + out.crash_detail + ')' if out.crashes else ''}; "
                f"control thread {'alive' if out.control_alive else 'DEAD'}; "
                f"{out.plans_during} plans and holds {out.holds_during} in {out.ticks} ticks; "
                f"swaps {out.swaps}; {'recovered' if out.recovered else 'did NOT recover'}")
    if check == "weights":
        first = [r for r in out.refused if "absent_probe" not in r]
        if first:
            observed += f"; refused: {first[0][:120]}"
        observed += ("; validator answered a later announcement"
                     if any("absent_probe" in r for r in out.refused)
                     else "; validator did NOT answer a later announcement (dead or wedged)")
    if check == "live":
        observed += ("; a bag reader marks it forged (not signed by the planner)"
                     if not trust.authentic_live(h.key, FORGED_LIVE) else "; passes as authentic")
    return Row(name, expected, observed, holds, out.crashes, out.bad_commands,
               out.swaps if check in ("weights", "live") else 0, None, out.deadline_misses,
               "" if holds else needs, round(time.monotonic() - start, 1))


def run(fast: bool, only: str | None = None) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="fowm_faults_") as tmp:
        root = Path(tmp)
        for name, fn, is_fast in PROCESS_ROWS + KILL_ROWS:
            if (fast and not is_fast) or (only and only not in name):
                continue
            rows.append(fn(root / f"p{len(rows)}"))
            print(_line(rows[-1]), file=sys.stderr, flush=True)
        # Before the planner rows: their last two can wedge or spin a validator thread.
        rows += fault_nodes.run(root / "nodes", fast, only,
                                lambda row: print(_line(row), file=sys.stderr, flush=True))
        for spec in PLANNER_ROWS:
            if (fast and not spec[6]) or (only and only not in spec[0]):
                continue
            rows.append(run_planner_row(spec, root))
            print(_line(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _uptime() -> str:
    """The machine's load (timing rows: deadline misses depend on it)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def _line(row: Row) -> str:
    return f"[{'holds' if row.holds else 'FAILS'}] {row.fault}: {row.observed}"


def summary(rows: list[Row]) -> dict[str, Any]:
    def total(key: str) -> int:
        return sum(getattr(r, key) or 0 for r in rows)
    return {"rows": len(rows), "holding": sum(r.holds for r in rows),
            "crashes": total("crashes"), "bad_commands": total("bad_commands"),
            "untrusted_swaps": total("untrusted_swaps"), "lost_episodes": total("lost_episodes"),
            "deadline_misses": total("deadline_misses")}


def markdown(rows: list[Row], machine: dict[str, Any] | None = None) -> str:
    def cell(v: Any) -> str:
        return "–" if v is None else str(v).replace("|", "/")
    head = ("| fault | expected | observed | holds | crashes | bad cmds | untrusted swaps | "
            "lost episodes | deadline misses | needs |\n|" + "---|" * 10)
    intro = ("Fault-injection suite (issue 11): `.venv/bin/python benchmarks/fault_suite.py --out "
             "docs/results/fault_suite` (all rows), `--fast` for the CI subset "
             "(tests/e2e/test_fault_suite.py). Counts are during the fault; `needs` names the work "
             "a row waits for."
             + (f" Machine: {machine['cpus']} CPUs; before: `{machine['uptime_before']}`; "
                f"after: `{machine['uptime_after']}`; {machine['wall_s']} s." if machine else "")
             + "\n\n")
    lines = [intro + head] + [
        f"| {cell(r.fault)} | {cell(r.expected)} | {cell(r.observed)} | "
        f"{'yes' if r.holds else '**no**'} | {cell(r.crashes)} | {cell(r.bad_commands)} | "
        f"{cell(r.untrusted_swaps)} | {cell(r.lost_episodes)} | {cell(r.deadline_misses)} | "
        f"{cell(r.needs)} |" for r in rows]
    s = summary(rows)
    lines.append(f"\n{s['holding']} of {s['rows']} rows hold; totals: crashes {s['crashes']}, "
                 f"bad commands {s['bad_commands']}, untrusted swaps {s['untrusted_swaps']}, "
                 f"lost episodes {s['lost_episodes']}, deadline misses {s['deadline_misses']}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="the CI subset only")
    parser.add_argument("--only", default=None, help=(
        "rows whose name contains this; matrix rows: \"GROUP [TOPIC [CLASS]]\" (fault_nodes.RIGS)"))
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    machine = {"uptime_before": _uptime(), "cpus": os.cpu_count()}
    t0 = time.monotonic()
    rows = run(args.fast, args.only)
    machine.update(uptime_after=_uptime(), wall_s=round(time.monotonic() - t0, 1))
    body = {"summary": summary(rows), "machine": machine, "rows": [asdict(r) for r in rows],
            "command": ".venv/bin/python benchmarks/fault_suite.py"
                       + (" --fast" if args.fast else "")}
    text = json.dumps(body, indent=1)
    if args.out:
        Path(args.out).with_suffix(".json").write_text(text + "\n")
        Path(args.out).with_suffix(".md").write_text(markdown(rows, machine))
    print(markdown(rows))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    code = main()
    os._exit(code)        # a validator wedged by the FIFO row must not keep the process alive
