"""Smoke version of the 30 FPS soak (issue 6, item 5): a camera at 30 FPS and a task every
100 ms for SOAK_SECONDS (default 10 s) against the node in its own process. Neither latency
nor RSS may grow beyond a margin, and nothing backs up: the answer delay stays bounded by
the task queue, whatever the camera rate. The 60 s run is `scripts/bench_ros.py --duration 60`.
"""
from __future__ import annotations

import os
import statistics
import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed; run `make build`")
pytest.importorskip("bitgen_ros.msg", reason="bitgen_ros interfaces not built; run `make build`")

from ros_node_harness import (HAVE_MODEL, NO_MODEL_REASON, SelectorProcess)  # noqa: E402

pytestmark = pytest.mark.skipif(not HAVE_MODEL, reason=NO_MODEL_REASON)

SOAK_SECONDS = float(os.environ.get("BITGEN_SOAK_SECONDS", "10"))
QUEUE = 4
TASKS = ["Fly over the forest fire and take aerial photos",
         "Inspect the hull of the ship below the waterline",
         "Move the pallets across the flat warehouse floor"]


def _third_medians(values: list[float]) -> tuple[float, float]:
    k = max(1, len(values) // 3)
    return statistics.median(values[:k]), statistics.median(values[-k:])


def test_30fps_camera_and_10hz_tasks_do_not_grow_latency_rss_or_backlog(ros, tmp_path):
    node = SelectorProcess(tmp_path, params={"max_trace_tokens": 4, "task_queue_size": QUEUE,
                                             "max_frame_age": 0.5}).start()
    try:
        ros.attach(node.ns)
        ros.bring_up()
        ros.wait_matched(ros.task_pub)
        ros.wait_matched(ros.image_pub)
        frames = [np.random.default_rng(i).integers(0, 255, (240, 320, 3), dtype=np.uint8)
                  for i in range(8)]
        stop = threading.Event()

        def camera():
            i, period, nxt = 0, 1 / 30, time.monotonic()
            while not stop.is_set():
                ros.send_image(frames[i % len(frames)])
                i += 1
                nxt += period
                time.sleep(max(0.0, nxt - time.monotonic()))

        cam = threading.Thread(target=camera, daemon=True)
        cam.start()
        for i in range(5):                                   # warm-up: caches, allocator
            ros.task_and_wait(TASKS[i % 3])
        rss_start = node.rss_mb()
        sent: dict[str, float] = {}
        t_end = time.monotonic() + SOAK_SECONDS
        i = 0
        while time.monotonic() < t_end:
            task_id = f"soak-{i}"
            sent[task_id] = time.monotonic()
            ros.send_task(TASKS[i % 3], task_id=task_id)
            i += 1
            time.sleep(0.1)
        last = f"soak-{i - 1}"
        ros.wait_selection(last, timeout=30)               # the newest task is always answered
        stop.set()
        cam.join()
        rss_end = node.rss_mb()
        got = {m.task_id: m for m in list(ros.selections) if m.task_id in sent}
        assert node.alive()
    finally:
        node.stop()

    answered = sorted(got, key=lambda t: sent[t])
    assert len(answered) >= 10, f"only {len(answered)} of {len(sent)} tasks answered"
    totals = [dict(zip(got[t].latency_stages, got[t].latency_ms))["total"] for t in answered]
    waits = [dict(zip(got[t].latency_stages, got[t].latency_ms))["queue"] for t in answered]
    first, last_third = _third_medians(totals)
    assert last_third <= 1.5 * first + 20.0, f"latency grew: {first:.1f} -> {last_third:.1f} ms"
    # Bounded backlog: a task waits at most for the queue ahead of it plus the running one.
    bound = (QUEUE + 1) * max(totals) + 250.0
    assert max(waits) <= bound, f"queue wait {max(waits):.0f} ms > bound {bound:.0f} ms"
    assert rss_end - rss_start < 25.0, f"RSS grew {rss_end - rss_start:.1f} MB"
    print(f"\nsoak {SOAK_SECONDS:g}s: {len(answered)}/{len(sent)} answered, total latency "
          f"median {first:.1f} -> {last_third:.1f} ms, max queue wait {max(waits):.0f} ms, "
          f"RSS {rss_start:.1f} -> {rss_end:.1f} MB")
