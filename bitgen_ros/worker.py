"""The robot selector's inference thread: tasks from the bounded queue, answered one at a time.

The thread blocks on the queue itself (`BoundedTaskQueue.get`), not on an executor guard
condition: a task must never sit in the queue until the next one arrives (a lost wake-up
seen on CI with the guard condition). Between two selections, never during one, it runs the
`between` hook (the node gives freed heap back to the OS there, see allocator.py). Plain
Python, no rclpy.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

from bitgen_ros.buffers import BoundedTaskQueue

T = TypeVar("T")


class InferenceWorker(Generic[T]):

    def __init__(self, answer: Callable[[T], None], between: Callable[[], None],
                 warn: Callable[[str], None], poll: float = 0.5) -> None:
        self._answer, self._between, self._warn, self._poll = answer, between, warn, poll
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._queue: BoundedTaskQueue[T] | None = None

    def start(self, queue: BoundedTaskQueue[T]) -> None:
        self.stop()
        self._queue = queue
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="bitgen-inference", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the selection running now, if any (deactivate, cleanup, shutdown)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        self._queue.wake_all()
        if thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                self._warn(f"inference worker still busy after {timeout:g} s")

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        queue = self._queue
        while not self._stop.is_set():
            task = queue.get(timeout=self._poll)
            if task is not None and not self._stop.is_set():
                self._answer(task)
            self._between()
