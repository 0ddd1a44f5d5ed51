"""task_publisher: plays a list of sample tasks as bitgen_ros/TaskCommand at a fixed rate.

The list is data: a YAML file (`tasks:` of {id, text} or plain strings) or JSONL (one object
with `task`/`text` and optional `id` per line — the same records the training data and the
dev set use). Each command is stamped when published; its id is the entry's id, suffixed
with the round number when the list loops, so every answer can be matched to its command.
"""

from __future__ import annotations

import json
from pathlib import Path

import rclpy
import yaml
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node

from bitgen_ros import qos
from bitgen_ros.msg import TaskCommand
from bitgen_ros.node_main import run_node
from bitgen_ros.paths import config_file


def load_tasks(path: str | Path) -> list[tuple[str, str]]:
    """[(id, text)] from a YAML or JSONL task list; ValueError says what is wrong and where."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".jsonl":
        entries = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
    else:
        data = yaml.safe_load(text)
        entries = data.get("tasks") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty list of tasks (under 'tasks:' in YAML)")
    tasks = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            task_id, body = f"task-{i + 1}", entry
        elif isinstance(entry, dict):
            body = entry.get("text", entry.get("task"))
            task_id = str(entry.get("id") or f"task-{i + 1}")
        else:
            body = None
        if not isinstance(body, str) or not body.strip():
            raise ValueError(f"{path}: entry {i + 1} has no task text")
        tasks.append((task_id, body))
    return tasks


class TaskPublisher(Node):

    def __init__(self, **kwargs) -> None:
        super().__init__("task_publisher", **kwargs)
        d = ParameterDescriptor
        self.declare_parameters("", [
            ("tasks_file", "", d(description="YAML or JSONL task list; empty: the shipped "
                                 "config/sample_tasks.yaml.")),
            ("rate", 0.5, d(description="Tasks per second.")),
            ("count", 0, d(description="Stop after this many tasks; 0 plays forever.")),
            ("loop", True, d(description="Start the list again at its end.")),
            ("start_delay", 1.0, d(description="Seconds before the first task (lets the "
                                   "selector's subscription match).")),
            ("topic", "bitgen/task", d(description="TaskCommand topic.")),
            ("frame_id", "", d(description="header.frame_id of the commands.")),
        ])
        p = lambda name: self.get_parameter(name).value  # noqa: E731
        self._tasks = load_tasks(p("tasks_file") or config_file("sample_tasks.yaml"))
        self._count, self._loop, self._frame_id = p("count"), p("loop"), p("frame_id")
        self._pub = self.create_publisher(TaskCommand, p("topic"), qos.task_profile())
        self.sent = 0
        rate = float(p("rate"))
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._timer = None
        self._waiting = False
        self._start = self.create_timer(max(0.01, p("start_delay")), self._begin)
        self._period = 1.0 / rate
        self.get_logger().info(f"{len(self._tasks)} tasks to "
                               f"{self.resolve_topic_name(p('topic'))} at {rate:g}/s")

    def _begin(self) -> None:
        # A command published before discovery has matched the selector's subscription is
        # lost (volatile QoS), so the first task waits for a subscriber, not only for a delay.
        if self._pub.get_subscription_count() == 0:
            if not self._waiting:
                self._waiting = True
                self.get_logger().info("waiting for a subscriber before the first task")
            return
        self._start.cancel()
        self._tick()
        self._timer = self.create_timer(self._period, self._tick)

    def done(self) -> bool:
        return ((self._count and self.sent >= self._count)
                or (not self._loop and self.sent >= len(self._tasks)))

    def _tick(self) -> None:
        if self.done():
            if self._timer is not None:
                self._timer.cancel()
            return
        task_id, text = self._tasks[self.sent % len(self._tasks)]
        rnd = self.sent // len(self._tasks)
        msg = TaskCommand(id=task_id if rnd == 0 else f"{task_id}#{rnd}", text=text)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self._frame_id
        self._pub.publish(msg)
        self.sent += 1


def spin_until_done(node: TaskPublisher) -> None:
    while rclpy.ok() and not node.done():
        rclpy.spin_once(node, timeout_sec=0.1)
    linger = node.get_clock().now().nanoseconds + 1_000_000_000
    while rclpy.ok() and node.get_clock().now().nanoseconds < linger:
        rclpy.spin_once(node, timeout_sec=0.1)   # let the last reliable command arrive


def main(args=None) -> None:
    run_node("task_publisher", TaskPublisher, args, spin=spin_until_done,
             config_errors=(ValueError, OSError))


if __name__ == "__main__":
    main()
