"""Two "hosts" on one machine: two network namespaces joined by a veth pair (docs/two_hosts.md).

Used by tests/e2e/test_two_hosts.py and benchmarks/two_hosts.py. Needs root (``ip netns add``);
``TwoHosts`` raises ``NetnsUnavailableError`` with the exact error when the namespaces cannot be
made, and always deletes what it made (namespaces, and with them the veth pair), also on failure.
Each side runs with its own /dev/shm (a private tmpfs in a private mount namespace): otherwise Fast
DDS would see one host and pass data through shared memory, around the link that a test cuts.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

ROBOT, LEARNER = "robot", "learner"


class NetnsUnavailableError(RuntimeError):
    """Network namespaces cannot be created here (not root, no CAP_NET_ADMIN, no iproute2)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)
    if done.returncode != 0:
        msg = f"`ip {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}"
        raise NetnsUnavailableError(msg)


class TwoHosts:
    """``with TwoHosts() as hosts:`` → ``hosts.start(ROBOT, argv, env, log)``, ``hosts.cut()``,
    ``hosts.restore()``. Unique names per instance (pid + random), 10.R.S.1 (robot) / .2."""

    def __init__(self) -> None:
        token = f"{os.getpid() % 10000}{secrets.token_hex(2)}"
        self.ns = {ROBOT: f"fowm-r-{token}", LEARNER: f"fowm-l-{token}"}
        self.dev = {ROBOT: f"fwr{token}"[:15], LEARNER: f"fwl{token}"[:15]}
        octet = secrets.randbelow(200) + 20
        self.addr = {ROBOT: f"10.{octet}.{secrets.randbelow(250) + 1}.1"}
        self.addr[LEARNER] = self.addr[ROBOT][:-1] + "2"
        self.procs: list[subprocess.Popen] = []
        self._made: list[str] = []
        self._veth = False
        self.events: list[dict[str, float | str]] = []

    def __enter__(self) -> TwoHosts:
        try:
            for side in (ROBOT, LEARNER):
                _ip("netns", "add", self.ns[side])
                self._made.append(self.ns[side])
            _ip("link", "add", self.dev[ROBOT], "type", "veth", "peer", "name", self.dev[LEARNER])
            self._veth = True
            for side in (ROBOT, LEARNER):
                ns, dev = self.ns[side], self.dev[side]
                _ip("link", "set", dev, "netns", ns)
                _ip("-n", ns, "addr", "add", f"{self.addr[side]}/24", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up", "multicast", "on")
                _ip("-n", ns, "link", "set", "lo", "up")
                # DDS discovery multicasts to 239.255.0.1: send it out of the veth.
                _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", dev)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, side: str, argv: Sequence[str], env: Mapping[str, str],
              log: IO[str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
        """Run ``argv`` inside ``side``'s namespace with a private /dev/shm."""
        inner = f"mount -t tmpfs -o size=512m tmpfs /dev/shm && exec {shlex.join(argv)}"
        cmd = ["ip", "netns", "exec", self.ns[side], "unshare", "--mount", "--propagation",
               "private", "sh", "-c", inner]
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log or subprocess.DEVNULL,
                                stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        self.procs.append(proc)
        return proc

    def cut(self) -> None:
        """`ip link set DEV down` on the robot's end: the link is gone for both."""
        _ip("-n", self.ns[ROBOT], "link", "set", self.dev[ROBOT], "down")
        self.events.append({"event": "link down", "wall_s": time.time()})

    def restore(self) -> None:
        _ip("-n", self.ns[ROBOT], "link", "set", self.dev[ROBOT], "up")
        _ip("-n", self.ns[ROBOT], "route", "replace", "224.0.0.0/4", "dev", self.dev[ROBOT])
        self.events.append({"event": "link up", "wall_s": time.time()})

    def stop(self, proc: subprocess.Popen, timeout_s: float = 60.0) -> int:
        """SIGINT (a clean stop, summary written), then SIGKILL after ``timeout_s``."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        return proc.returncode

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for ns in self._made:            # deleting a namespace deletes its veth end too
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self._made.clear()
        if self._veth:                   # if it never left the root namespace
            subprocess.run(["ip", "link", "del", self.dev[ROBOT]], capture_output=True,
                           check=False)
            self._veth = False
