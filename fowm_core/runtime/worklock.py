"""One learner per work directory, and no learner that outlives the process that started it.

Two learners on one work directory both write ``step_<N>`` with different contents and the
planner swaps between them (issue 11). ``WorkDirLock`` is an exclusive ``fcntl.flock`` on
``<work_dir>/learner.lock``, held for the life of the process: the kernel drops it when the
process dies however it dies (SIGKILL included), so a stale lock never blocks a restart. The
file holds the owner's pid, so the refusal names who holds it.

``die_with_parent`` is the child's half of the supervision in fowm.bringup: Linux's
``PR_SET_PDEATHSIG`` sends the child SIGTERM when its parent dies; ``ParentWatch`` is the portable
fallback (and the backstop when the signal is blocked): it polls ``os.getppid()``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from fowm_core.errors import ConfigError

LOCK_NAME = "learner.lock"
_PR_SET_PDEATHSIG = 1


class WorkDirLock:
    """An exclusive lock on a work directory for this process's lifetime (``release`` to drop)."""

    def __init__(self, work_dir: str | Path) -> None:
        self.path = Path(work_dir) / LOCK_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            msg = (f"work directory {self.path.parent} is in use by another learner (pid "
                   f"{holder}, lock {self.path}); two learners there would overwrite each "
                   "other's checkpoints: stop that one or give this one another work_dir")
            raise ConfigError(msg) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)               # closing the last descriptor drops the flock


def die_with_parent(sig: int = signal.SIGTERM, parent_pid: int | None = None) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux only).

    For ``subprocess.Popen(preexec_fn=...)``: runs in the child between fork and exec, and the
    setting survives exec. If the parent is already gone (it died before this ran),
    ``parent_pid`` differs from ``getppid()`` and the child signals itself at once.
    Returns False where prctl is unavailable (the caller then relies on ``ParentWatch``).
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)
    return True


class ParentWatch:
    """Calls ``on_orphaned`` once when the parent ``parent_pid`` is gone (polls every ``poll_s``).

    An orphan is re-parented (to init or a subreaper), so ``getppid()`` changes: that is the
    portable test. A daemon thread: it never keeps the process alive.
    """

    def __init__(self, parent_pid: int, on_orphaned: Callable[[], None],
                 poll_s: float = 0.5) -> None:
        self.parent_pid = parent_pid
        self._on_orphaned = on_orphaned
        self._poll_s = poll_s
        self._stop = threading.Event()
        self.orphaned = False
        self._thread = threading.Thread(target=self._run, name="parent_watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            if os.getppid() != self.parent_pid:
                self.orphaned = True
                self._on_orphaned()
                return

    def stop(self) -> None:
        self._stop.set()
