"""Spinning nodes and shutting down cleanly, the same way on Humble and Jazzy.

Every node module's ``main(args=None)`` (its console script, `ros2 run fowm <name>`) calls
``run_nodes([NodeClass], args)``; fowm.bringup composes several nodes with ``spin_nodes``. Both end
on SIGINT/SIGTERM the same way on both distributions: the first signal only stops the spin loop,
later ones are ignored (fowm.ros.shutdown: under `ros2 launch` every node gets two SIGINTs) →
destroy the nodes → ``rclpy.try_shutdown()`` (docs/platform.md §1.8).
A SingleThreadedExecutor serves the callbacks: the control loops run on their own threads
(fowm.ros.timing), so nothing depends on the executor's timing, and the single-threaded one does
not show the stalls of rclpy#1223.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from fowm.ros.shutdown import stop_on_signals
from fowm_core.errors import FowmError

NodeFactory = Callable[[], Node]


def spin_nodes(factories: Sequence[NodeFactory], duration_s: float | None = None,
               until: Callable[[list[Node]], bool] | None = None) -> list[Node]:
    """Build the nodes, spin them until shutdown, ``duration_s`` or ``until(nodes)``, clean up.

    rclpy must be initialised; it is shut down on return. Returns the (destroyed) nodes so callers
    can read what they recorded; fewer than ``factories`` if shutdown came during start-up.
    """
    nodes: list[Node] = []
    executor = SingleThreadedExecutor()
    with stop_on_signals() as stop:            # SIGINT/SIGTERM: leave the loop, clean up, exit 0
        try:
            for factory in factories:
                if stop.is_set():
                    break
                nodes.append(factory())
                executor.add_node(nodes[-1])
            deadline = None if duration_s is None else time.monotonic() + duration_s
            while rclpy.ok() and not stop.is_set() and (
                    deadline is None or time.monotonic() < deadline):
                executor.spin_once(timeout_sec=0.1)
                if until is not None and until(nodes):
                    break
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            for node in reversed(nodes):
                node.destroy_node()
            executor.shutdown()
            rclpy.try_shutdown()
    return nodes


def run_nodes(factories: Sequence[NodeFactory], args: list[str] | None = None) -> None:
    """A console script's main: ``rclpy.init(args)``, spin until SIGINT/SIGTERM, shut down.

    A node that refuses to start (FowmError: a bad parameter, a missing checkpoint) ends the
    process with exit code 1 and its message alone: that message already names the value, what
    was expected and the fix, and a traceback around it would bury it.
    """
    try:
        rclpy.init(args=args)
        spin_nodes(factories)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except FowmError as err:
        print(f"[fowm] {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    finally:
        rclpy.try_shutdown()
