"""ROS messages <-> the plain values the runtime takes and returns.

The node stays thin: everything it hands the runtime is a `str` or an HxWx3 uint8 RGB array,
and everything it publishes is built here from a runtime `Selection`. Image decoding itself
(encodings, `step`, size caps) lives in `image_convert`, which has no rclpy import and is
fuzzed on its own.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

from builtin_interfaces.msg import Time
from std_msgs.msg import Header

from bitgen_ros.msg import RobotSelection

_task_ids = itertools.count(1)


@dataclass(frozen=True)
class Task:
    """A task as the node queues it: the header to copy into the answer, id and raw text."""
    header: Header
    task_id: str
    text: str
    received: float          # time.monotonic() at arrival, for queue-wait accounting


def task_from_command(msg, received: float | None = None) -> Task:
    """From bitgen_ros/TaskCommand: header and id are the caller's; an empty id gets one."""
    return Task(header=msg.header, task_id=msg.id or _next_id(),
                text=msg.text, received=time.monotonic() if received is None else received)


def task_from_string(msg, stamp: Time, frame_id: str = "",
                     received: float | None = None) -> Task:
    """From std_msgs/String: no header to copy, so the answer is stamped with `stamp` (now)."""
    return Task(header=Header(stamp=stamp, frame_id=frame_id), task_id=_next_id(),
                text=msg.data, received=time.monotonic() if received is None else received)


def _next_id() -> str:
    return f"task-{next(_task_ids)}"


def selection_to_msg(sel, header: Header, task_id: str, task_text: str,
                     top_k: int | None = None, extra_latency_ms: dict | None = None
                     ) -> RobotSelection:
    """A runtime Selection as a RobotSelection carrying the top `top_k` robots, best first.

    The runtime ranks the whole fleet; the message carries the k the caller asked for
    (`top_k`, else the Selection's own top_k), with their independent confidences.
    """
    k = top_k if top_k else sel.top_k
    robots = list(sel.robots)[:k]
    confidences = [float(c) for c in sel.confidences][:k]
    latency = dict(sel.latency_ms)
    latency.update(extra_latency_ms or {})
    msg = RobotSelection()
    msg.header = header
    msg.task_id = task_id
    msg.task_text = task_text
    msg.robots = robots
    msg.confidences = confidences
    msg.reasoning = sel.reasoning
    msg.latency_stages = list(latency)
    msg.latency_ms = [float(v) for v in latency.values()]
    msg.memory_keys_used = list(sel.memory_keys_used)
    msg.model_id = sel.model_id
    return msg


def selection_summary(msg: RobotSelection, k: int = 3) -> str:
    """One line for logs and the demo: 'drone 0.93, wheeled 0.41, legged 0.22 (48 ms)'."""
    picks = ", ".join(f"{r} {c:.2f}" for r, c in zip(msg.robots[:k], msg.confidences[:k]))
    total = dict(zip(msg.latency_stages, msg.latency_ms)).get("total")
    return picks + (f" ({total:.0f} ms)" if total is not None else "")
