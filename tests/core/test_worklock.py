"""One learner per work directory (flock, named holder) and children that die with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fowm_core.errors import ConfigError
from fowm_core.runtime.worklock import LOCK_NAME, ParentWatch, WorkDirLock


def test_a_second_lock_on_one_work_dir_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first = WorkDirLock(tmp_path / "work")
    with pytest.raises(ConfigError, match=rf"in use by another learner \(pid {os.getpid()}"):
        WorkDirLock(tmp_path / "work")
    first.release()
    again = WorkDirLock(tmp_path / "work")           # released: the next one gets it
    assert again.held and (tmp_path / "work" / LOCK_NAME).read_text().strip() == str(os.getpid())
    again.release()


def test_the_lock_of_a_killed_process_is_free_at_once(tmp_path: Path) -> None:
    code = (f"from fowm_core.runtime.worklock import WorkDirLock; import time; "
            f"WorkDirLock({str(tmp_path)!r}); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    with pytest.raises(ConfigError, match=f"pid {proc.pid}"):
        WorkDirLock(tmp_path)
    proc.kill()                                      # SIGKILL: no cleanup code runs
    proc.wait()
    WorkDirLock(tmp_path).release()                  # the kernel dropped the flock


def _wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("mechanism", ["pdeathsig", "parent_watch"])
def test_a_child_dies_when_its_parent_is_sigkilled(tmp_path: Path, mechanism: str) -> None:
    """parent (SIGKILLed) → child (sleeps): the child must not outlive it (no orphan learner)."""
    pid_file = tmp_path / "child.pid"
    child = textwrap.dedent(f"""
        import os, time
        from fowm_core.runtime.worklock import ParentWatch
        parent = int(os.environ["PARENT"])
        if {mechanism == "parent_watch"!r}:
            ParentWatch(parent, lambda: os._exit(0), poll_s=0.05)
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        time.sleep(60)
    """)
    parent = textwrap.dedent(f"""
        import os, signal, subprocess, sys, time
        from fowm_core.runtime.worklock import die_with_parent
        me = os.getpid()
        pre = (lambda: die_with_parent(signal.SIGTERM, me)) if {mechanism == "pdeathsig"!r} \\
            else None
        subprocess.Popen([sys.executable, "-c", {child!r}], preexec_fn=pre,
                         env={{**os.environ, "PARENT": str(me)}})
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", parent])
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _wait_gone(child_pid), f"child {child_pid} outlived its SIGKILLed parent"


def test_parent_watch_stays_quiet_while_the_parent_lives() -> None:
    called: list[bool] = []
    watch = ParentWatch(os.getppid(), lambda: called.append(True), poll_s=0.01)
    time.sleep(0.1)
    watch.stop()
    assert not called and not watch.orphaned
