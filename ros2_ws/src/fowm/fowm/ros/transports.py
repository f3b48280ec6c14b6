"""Which DDS transports each process of the two-host roles uses (docs/two_hosts.md, Transport).

Between hosts: Fast DDS's default transports (UDP; shared memory inside a host). UDP never waits
for the other host. LARGE_DATA sends over TCP, and a send to a host behind a cut link blocked
inside rclpy's publish() with the GIL held, stopping every thread of the process (10-20 s ticks);
it still did once with LARGE_DATA's ``non_blocking`` option (a 9.5 s freeze of the robot's
process). Our transfers chunk, window and acknowledge on their own, so they need no TCP.

On the robot PC only fowm_robot_link talks to the other host. Every other process there (twin or
arm, camera, planner, episode manager, recorder) uses shared memory only, with segments large
enough for 1280x720 images, and discovers this host only: it cannot send to another host at all.
Shared-memory-only and default-transport processes of one host talk to each other (measured);
LARGE_DATA and default-transport processes do not, which is why the link is not LARGE_DATA.
"""

from __future__ import annotations

from collections.abc import Mapping

# fowm_robot_link, and every process of the learner's host.
LINK_ENV = {"FASTDDS_BUILTIN_TRANSPORTS": "DEFAULT",
            "RMW_FASTRTPS_PUBLICATION_MODE": "ASYNCHRONOUS"}
# Every other process of the robot PC (ROS_STATIC_PEERS is removed there as well).
CONTROL_ENV = {"FASTDDS_BUILTIN_TRANSPORTS": "SHM?max_msg_size=4MB&sockets_size=16MB",
               "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
PEERS = "ROS_STATIC_PEERS"
# The variables the robot link keeps from the user's environment while the control processes'
# are replaced: how it finds the other host.
DISCOVERY = ("ROS_AUTOMATIC_DISCOVERY_RANGE", PEERS)


def link_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The robot link's or the learner host's variables, given the user's environment: LINK_ENV
    and the user's discovery settings (SUBNET where unset)."""
    out = {**LINK_ENV, "ROS_AUTOMATIC_DISCOVERY_RANGE":
           environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") or "SUBNET"}
    if environ.get(PEERS):
        out[PEERS] = environ[PEERS]
    return out
