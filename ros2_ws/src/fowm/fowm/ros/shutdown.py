"""Clean ends for node processes: Ctrl-C, SIGTERM and a launcher that dies (docs/platform.md §1.8).

``ros2 launch`` on Ctrl-C signals every node twice: the terminal sends SIGINT to the whole process
group, then launch sends its own SIGINT (and SIGTERM after 5 s). rclpy's handlers shut the context
down at the first signal and raise KeyboardInterrupt at the next one wherever the main thread is,
typically inside ``destroy_node`` while it joins a thread: a traceback, and launch reports
"exit code -2". Here the first SIGINT/SIGTERM only asks the spin loop to stop, later ones are
ignored, and the process exits 0 after its nodes were destroyed in order.

A launcher that dies without stopping its children (an action that fails after some nodes started,
a SIGKILL) would leave them running with parent PID 1. The launch files export
``FOWM_PARENT_PID``; a process that sees it asks Linux for SIGTERM when its parent dies
(PR_SET_PDEATHSIG) and stops at once if the launcher is already gone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

PARENT_ENV = "FOWM_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def exit_with_parent(stop: threading.Event) -> bool:
    """Arm PR_SET_PDEATHSIG when started by a fowm launcher; True when it is armed.

    The variable is removed from this process's environment, so processes it starts in turn
    (which have another parent) do not inherit it.
    """
    parent = os.environ.pop(PARENT_ENV, "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return False
    if os.getppid() != int(parent):         # the launcher died before prctl: nobody stops us
        stop.set()
    return True


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by the first SIGINT/SIGTERM (later ones ignored, also after the block).

    Only the main thread may install signal handlers; elsewhere (a test spinning nodes on a
    worker thread) the event is only set by the caller. The previous handlers are restored on
    exit unless a signal came (then the process is ending).
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    from rclpy.signals import uninstall_signal_handlers

    uninstall_signal_handlers()              # rclpy's would raise KeyboardInterrupt mid-cleanup

    signalled = threading.Event()

    def request_stop(_signum: int, _frame: object) -> None:
        # Ignored by the OS from now on, not by a Python handler: interpreter teardown resets
        # Python handlers to the default action, so launch's second SIGINT landing there killed
        # the process ("exit code -2"); SIG_IGN survives teardown.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        signalled.set()
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    exit_with_parent(stop)
    try:
        yield stop
    finally:
        # After a signal the process is on its way out: a late SIGINT (launch's, after the
        # terminal's) must not raise KeyboardInterrupt in an atexit hook (torch has some).
        if not signalled.is_set():
            for sig, handler in previous.items():
                signal.signal(sig, handler)
