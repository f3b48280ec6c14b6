"""The twin's reset and seed services, called from a worker thread (never from the executor).

The episode manager's sim mode sets the twin's ``seed`` parameter and calls its ``~/reset``
(std_srvs/Trigger) before each episode. Calls are call_async + wait, which works on Humble..Kilted,
and every wait polls a stop event so a node shutting down never waits out a whole timeout.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.client import Client
from rclpy.node import Node
from std_srvs.srv import Trigger

from fowm_core.errors import FowmError


class TwinResetClient:
    """``/<sim_node>/reset`` and ``/<sim_node>/set_parameters`` with bounded waits."""

    def __init__(self, node: Node, sim_node: str, timeout_s: float,
                 stop: threading.Event) -> None:
        self.sim_node, self.timeout_s, self._stop = sim_node, timeout_s, stop
        self.reset_client = node.create_client(Trigger, f"/{sim_node}/reset")
        self.param_client = node.create_client(SetParameters, f"/{sim_node}/set_parameters")

    def reset(self, seed: int) -> int:
        """Set the twin's seed, reset it; returns the stamp from which the episode counts."""
        value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=seed)
        request = SetParameters.Request(parameters=[ParameterMsg(name="seed", value=value)])
        result = self._call(self.param_client, request)
        if not result.results[0].successful:
            msg = f"{self.sim_node} refused seed={seed}: {result.results[0].reason}"
            raise FowmError(msg)
        reply = self._call(self.reset_client, Trigger.Request())
        if not reply.success:
            msg = f"{self.sim_node} reset failed: {reply.message}"
            raise FowmError(msg)
        return int(json.loads(reply.message)["stamp_ns"])

    def wait_for_services(self) -> None:
        for client in (self.param_client, self.reset_client):
            if not self._until(lambda c=client: c.wait_for_service(timeout_sec=0.1)):
                msg = (f"service {client.srv_name} not available after {self.timeout_s} s; "
                       f"start {self.sim_node} or set sim_node to the twin's node name")
                raise FowmError(msg)

    def _call(self, client: Client, request: Any) -> Any:
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        if not self._until(lambda: done.wait(0.1)) or future.result() is None:
            msg = f"service {client.srv_name} did not answer within {self.timeout_s} s"
            raise FowmError(msg)
        return future.result()

    def _until(self, ready: Callable[[], bool]) -> bool:
        """Poll ``ready`` (which waits ~0.1 s) for timeout_s; False on timeout or on shutdown."""
        deadline = time.monotonic() + self.timeout_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            if ready():
                return True
        return False
