"""The inference worker (bitgen_ros/worker.py) and the memory services' logic
(bitgen_ros/memory_services.py), without a model or DDS: a task pushed while the worker
waits is answered at once (no lost wake-up), one at a time, with the between-selections
hook after each; stop() returns; the services refuse clearly without a runtime."""
from __future__ import annotations

import threading
import time
import types

from bitgen_ros.buffers import BoundedTaskQueue, Frame
from bitgen_ros.memory_services import change_memory, edit_policy, fill_memory_list
from bitgen_ros.worker import InferenceWorker


def test_a_task_pushed_while_the_worker_waits_is_answered_at_once():
    answered, between, running = [], [], threading.Lock()

    def answer(task):
        assert running.acquire(blocking=False), "two selections at once"
        answered.append((task, time.monotonic()))
        time.sleep(0.02)
        running.release()

    queue: BoundedTaskQueue[str] = BoundedTaskQueue(4)
    # a 10 s poll: an answer within 1 s can only come from the push waking the worker
    worker = InferenceWorker(answer, lambda: between.append(1), print, poll=10.0)
    worker.start(queue)
    try:
        time.sleep(0.2)                                  # the worker is blocked in get()
        pushed = time.monotonic()
        queue.push("t1")
        for name in ("t2", "t3"):
            queue.push(name)
        deadline = time.monotonic() + 5
        while (len(answered) < 3 or len(between) < 3) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [t for t, _ in answered] == ["t1", "t2", "t3"]
        assert answered[0][1] - pushed < 1.0
        assert len(between) >= 3                         # the hook ran after each selection
    finally:
        t0 = time.monotonic()
        worker.stop()
    assert time.monotonic() - t0 < 2.0 and not worker.alive()


def test_frame_age_comes_from_the_camera_stamp_or_else_from_reception():
    stamp = types.SimpleNamespace(sec=100, nanosec=250_000_000)
    frame = Frame(types.SimpleNamespace(header=types.SimpleNamespace(stamp=stamp)),
                  time.monotonic())
    assert abs(frame.stamp_age_ms(100_300_000_000) - 50.0) < 1e-6
    unstamped = Frame(types.SimpleNamespace(header=types.SimpleNamespace(
        stamp=types.SimpleNamespace(sec=0, nanosec=0))), time.monotonic() - 0.2)
    assert 190.0 < unstamped.stamp_age_ms(10**18) < 1000.0
    # a camera on another clock (stamp in the future or hours old): reception time
    assert frame.stamp_age_ms(99 * 10**9) < 1000.0


class _Memory:
    def __init__(self):
        self.facts = {}

    def write(self, key, fact, token):
        if token != "tok":
            return types.SimpleNamespace(success=False, message="edit token wrong", count=0)
        self.facts[key] = types.SimpleNamespace(key=key, text=fact, written_at=len(self.facts))
        return types.SimpleNamespace(success=True, message="stored", count=len(self.facts))

    def forget(self, key, token):
        return types.SimpleNamespace(success=self.facts.pop(key, None) is not None,
                                     message="done", count=len(self.facts))

    def list(self):
        return list(self.facts.values())


class _Log:
    def __init__(self):
        self.lines = []
        self.info = self.warning = self.lines.append


def test_memory_services_say_why_they_refuse():
    log = _Log()
    ok, message, count = change_memory(None, "unconfigured", "write", "k", "tok", "f", log)
    assert not ok and "unconfigured" in message and "configure it first" in message
    resp = fill_memory_list(None, "inactive", "", types.SimpleNamespace())
    assert not resp.success and "inactive" in resp.message

    runtime = types.SimpleNamespace(memory=_Memory())
    assert change_memory(runtime, "active", "write", "b", "tok", "zone B is flooded", log)[0]
    assert change_memory(runtime, "active", "write", "a", "tok", "the drone is grounded", log)[0]
    ok, message, _ = change_memory(runtime, "active", "write", "c", "bad", "x", log)
    assert not ok and message == "edit token wrong" and "refused" in log.lines[-1]
    listed = fill_memory_list(runtime, "active", "", types.SimpleNamespace())
    assert listed.success and listed.keys == ["b", "a"]        # oldest first, not by name
    assert fill_memory_list(runtime, "active", "a", types.SimpleNamespace()).keys == ["a"]


def test_the_edit_policy_line_names_who_may_edit():
    token = types.SimpleNamespace(source="BITGEN_EDIT_TOKEN")
    guard = types.SimpleNamespace(read_only=False, token=token, allow_unauthenticated=False)
    assert "BITGEN_EDIT_TOKEN" in edit_policy(guard)
    assert edit_policy(None) == "off"
    assert "read_only" in edit_policy(types.SimpleNamespace(read_only=True))
    open_guard = types.SimpleNamespace(read_only=False, token=None, allow_unauthenticated=True)
    assert "anyone" in edit_policy(open_guard)
