"""Who else publishes what the planner reads or writes: a second publisher is a conflict.

A fault-injection campaign (issue 11) found a second stack on the domain answering the same
observations (147 of 157 answered twice, the arm executing whichever came last) and a flood from a
second joint-state publisher being planned on. Neither shows in a message's contents; both show in
the ROS graph. ``PublisherWatch.check`` reads it (``count_publishers``, node names; the publishers'
names only when there is a conflict) and sets ``conflict`` to a sentence naming the topics and
the publishing nodes, or None. The planner checks at the top of every tick, before it plans: a
reader only receives data from writers it has discovered, so data from a second publisher cannot
be planned on before the check can see that publisher. The planner holds while it is set
(fowm.nodes.planner_node, docs/design.md "Safety chain"):
  - more than one publisher on an observation topic: the data cannot be trusted to come from the
    robot, so no plan is made from it;
  - a publisher of /fowm/action other than this node, or another node with this node's name: two
    controllers would fight over one arm; this one commands zero motion and reports ERROR (the
    other may not: the arm's side holds too, fowm_xarm and fowm_sim, and the lab's domain setup
    has to stop it).
A check costs tens of µs (local graph cache, no network).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class PublisherWatch:
    """Graph check of a node's inputs and its command topic (``conflict``: None or why)."""

    def __init__(self, node: Any, inputs: Sequence[str], command: str) -> None:
        self.node = node
        self.inputs = list(inputs)
        self.command = command
        self.conflict: str | None = None
        self.detected = 0                 # checks that found a conflict

    def check(self) -> str | None:
        problems = [f"{n} publishers on {topic} ({self._who(topic)}): the observation cannot be "
                    "trusted to come from the robot; stop the extra publisher"
                    for topic in self.inputs if (n := self.node.count_publishers(topic)) > 1]
        if self.node.count_publishers(self.command) > 1:
            problems.append(
                f"another publisher on {self.command} ({self._who(self.command)}): two "
                "controllers would command one arm; holding until only this one is left")
        me = self.node.get_name()
        twins = sum(1 for name, _ in self.node.get_node_names_and_namespaces() if name == me)
        if twins > 1:
            problems.append(f"{twins} nodes named {me} on this ROS domain: a second stack shares "
                            "it; give each stack its own ROS_DOMAIN_ID")
        conflict = "; ".join(problems) or None
        if conflict is not None:
            self.detected += 1
            if conflict != self.conflict:
                self.node.get_logger().error(f"input conflict, holding: {conflict}")
        elif self.conflict is not None:
            self.node.get_logger().warning("input conflict gone: planning again")
        self.conflict = conflict
        return conflict

    def _who(self, topic: str) -> str:
        infos = self.node.get_publishers_info_by_topic(topic)
        return ", ".join(sorted(f"{i.node_namespace.rstrip('/')}/{i.node_name}" for i in infos))
