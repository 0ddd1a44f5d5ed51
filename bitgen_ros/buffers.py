"""The two buffers between DDS callbacks and inference: a latest-frame slot and a task queue.

Both exist so that slow inference never builds a backlog. A camera at 30 FPS and a model
that answers in 50 ms would otherwise queue frames without bound (the complaint against
detector nodes that process every frame): the slot keeps only the newest frame, unconverted,
and the task queue is bounded and drops the *oldest* command, since an operator waiting on
a robot wants the answer to what they asked last. Plain Python, no rclpy, thread-safe.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Frame:
    msg: Any                 # the sensor_msgs Image/CompressedImage, converted only when used
    received: float          # time.monotonic() when the node received it

    def age(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.received

    def stamp_age_ms(self, now_ns: int) -> float:
        """Age from the camera's own header stamp (so it includes any wait in DDS), given the
        node clock in ns; from reception when the frame is unstamped or on another clock."""
        stamp = getattr(getattr(self.msg, "header", None), "stamp", None)
        if stamp is not None and (stamp.sec or stamp.nanosec):
            age_ns = now_ns - (stamp.sec * 10**9 + stamp.nanosec)
            if 0 <= age_ns < 3600 * 10**9:
                return age_ns / 1e6
        return self.age() * 1000.0


class LatestFrameSlot:
    """Holds the newest frame only. Counts frames that were replaced before any task used them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self._used = True
        self.received = 0
        self.superseded = 0    # overwritten without being read by a selection

    def put(self, msg: Any, received: float | None = None) -> None:
        frame = Frame(msg, time.monotonic() if received is None else received)
        with self._lock:
            if self._frame is not None and not self._used:
                self.superseded += 1
            self._frame = frame
            self._used = False
            self.received += 1

    def peek(self) -> Frame | None:
        with self._lock:
            return self._frame

    def take(self, max_age: float, now: float | None = None) -> tuple[Frame | None, str]:
        """The newest frame if it is at most `max_age` seconds old, with why not otherwise."""
        with self._lock:
            frame = self._frame
            if frame is None:
                return None, "no camera frame received yet"
            age = frame.age(now)
            if age > max_age:
                return None, f"latest camera frame is {age:.2f} s old (max_frame_age {max_age:g} s)"
            self._used = True
            return frame, ""

    def clear(self) -> None:
        with self._lock:
            self._frame = None
            self._used = True


class BoundedTaskQueue(Generic[T]):
    """FIFO of at most `maxlen` items; `push` returns the item it evicted (the oldest), if any."""

    def __init__(self, maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError("task queue length must be at least 1")
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)   # signalled on every push
        self._items: collections.deque[T] = collections.deque()
        self._maxlen = maxlen
        self.pushed = 0
        self.dropped = 0

    def push(self, item: T) -> T | None:
        with self._lock:
            evicted = None
            if len(self._items) >= self._maxlen:
                evicted = self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self.pushed += 1
            self._ready.notify()
            return evicted

    def pop(self) -> T | None:
        with self._lock:
            return self._items.popleft() if self._items else None

    def get(self, timeout: float) -> T | None:
        """The oldest item, waiting up to `timeout` seconds for one; None if none came."""
        with self._ready:
            if not self._items:
                self._ready.wait(timeout)
            return self._items.popleft() if self._items else None

    def wake_all(self) -> None:
        """Wake every thread blocked in `get` (they return None if the queue is empty)."""
        with self._ready:
            self._ready.notify_all()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> int:
        with self._lock:
            n = len(self._items)
            self._items.clear()
            return n
