"""QoS profiles of the robot selector, built from parameters and described for the log.

yolo_ros users lost hours to silent QoS mismatches: a best-effort camera and a reliable
subscriber never connect, and nothing says why. Here reliability and depth are parameters,
and `describe()` gives the one line the node logs for every subscription it creates.
"""

from __future__ import annotations

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)

RELIABILITY = {
    "best_effort": ReliabilityPolicy.BEST_EFFORT,
    "reliable": ReliabilityPolicy.RELIABLE,
}


def profile(reliability: str, depth: int) -> QoSProfile:
    """A keep-last, volatile profile; `reliability` is "best_effort" or "reliable"."""
    if reliability not in RELIABILITY:
        raise ValueError(
            f"QoS reliability {reliability!r} is not one of {sorted(RELIABILITY)}")
    if not 1 <= int(depth) <= 1000:
        raise ValueError(f"QoS depth {depth} is outside 1..1000")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth),
                      reliability=RELIABILITY[reliability],
                      durability=DurabilityPolicy.VOLATILE)


def camera_profile(reliability: str = "best_effort", depth: int = 1) -> QoSProfile:
    # Sensor-data semantics by default (best effort, volatile), but depth 1, not rclpy's 5:
    # only the newest frame matters, older ones would just wait in the DDS queue.
    return profile(reliability, depth)


def task_profile(depth: int = 10) -> QoSProfile:
    # Commands must not be lost on the wire; the node's own bounded queue decides what to drop.
    return profile("reliable", depth)


def selection_profile(depth: int = 10) -> QoSProfile:
    return profile("reliable", depth)


def describe(qos: QoSProfile) -> str:
    """e.g. 'reliability=best_effort durability=volatile history=keep_last depth=1'."""
    return (f"reliability={qos.reliability.name.lower()} "
            f"durability={qos.durability.name.lower()} "
            f"history={qos.history.name.lower()} depth={qos.depth}")
