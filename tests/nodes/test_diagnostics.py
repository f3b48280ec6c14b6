"""A node's /diagnostics health with its input guard folded in (fowm.ros.diagnostics.with_guard)."""

from __future__ import annotations

from fowm.ros.diagnostics import ERROR, OK, WARN, with_guard
from fowm.ros.guard import InputGuard


class _Logger:
    def warning(self, _text: str) -> None:
        pass


class _Node:
    def get_logger(self) -> _Logger:
        return _Logger()


def test_a_clean_node_keeps_its_own_status_and_gets_the_counters() -> None:
    level, message, values = with_guard((OK, "stepping", {"steps": 3}), InputGuard(_Node()),
                                        worker_restarts=0)
    assert (level, message) == (OK, "stepping")
    assert values["steps"] == 3 and values["rejected_inputs"] == "0"
    assert values["worker_restarts"] == 0


def test_refused_inputs_or_restarts_turn_ok_into_a_warning_that_names_them() -> None:
    inputs = InputGuard(_Node())
    inputs.refuse("/fowm/episode", "not JSON")
    level, message, values = with_guard((OK, "recording", {}), inputs, writer_restarts=2)
    assert level == WARN
    assert message == "recording; refused 1 inputs, writer restarts 2"
    assert values["rejected_inputs"] == "1" and values["writer_restarts"] == 2


def test_a_worse_status_of_the_node_stands() -> None:
    inputs = InputGuard(_Node())
    inputs.refuse("/fowm/action", "wrong joint names")
    assert with_guard((ERROR, "stopped: no twin", {}), inputs)[:2] == (ERROR, "stopped: no twin")
    assert with_guard((WARN, "waiting", {}), inputs)[:2] == (WARN, "waiting")
