"""A 30 FPS camera for 60 s with a task every 100 ms (issue 6, item 5), the node in its own
process over real DDS: no growth in latency or RSS, no frame backlog, no task backlog.

The shipped model selects in ~70-90 ms on an idle core, so 10 tasks/s is at or past what a
loaded 2-core CI machine can answer: the bounded task queue then drops the oldest tasks, by
design. What must hold whatever the load: the frame each answer used is fresh (the camera
never queues up behind inference), the wait of an answered task stays bounded by the queue
depth, latency and RSS do not drift from the first third to the last, and the newest task is
always answered. BITGEN_SOAK_SECONDS shortens or lengthens the measured time (default 60).
The 30-minute version with memory edits is `scripts/soak.py` (issue 7).
"""
from __future__ import annotations

import os
import statistics
import time

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed; run `make build`")
pytest.importorskip("bitgen_ros.msg", reason="bitgen_ros interfaces not built; run `make build`")

from ros_node_harness import HAVE_MODEL, NO_MODEL_REASON, running_selector  # noqa: E402

pytestmark = pytest.mark.skipif(not HAVE_MODEL, reason=NO_MODEL_REASON)

SOAK_SECONDS = float(os.environ.get("BITGEN_SOAK_SECONDS", "60"))
WARMUP_SECONDS = 10.0          # run, not measured: allocator, arenas and DDS buffers settle
QUEUE = 4
TASKS = ["Fly over the forest fire and take aerial photos",
         "Inspect the hull of the ship below the waterline",
         "Move the pallets across the flat warehouse floor"]


def _thirds(values: list[float]) -> tuple[float, float]:
    """Medians of the first and the last third."""
    k = max(1, len(values) // 3)
    return statistics.median(values[:k]), statistics.median(values[-k:])


def _median_between(samples: list[tuple[float, float]], lo: float, hi: float) -> float:
    return statistics.median(v for t, v in samples if lo <= t < hi)


def test_30fps_camera_and_10hz_tasks_for_60s_grow_no_latency_rss_or_backlog(ros, tmp_path):
    from bitgen_ros.loadgen import CameraPublisher, camera_frames, latency_stages
    # A reliable camera: over Fast DDS's default transports a best-effort 640x480 rgb8 frame
    # (921 kB, fragmented) is mostly lost on the way (measured: 1-13 of 30 FPS reach the
    # node), so only a reliable one really puts 30 FPS on the node's intake.
    params = {"max_trace_tokens": 8, "task_queue_size": QUEUE, "max_frame_age": 1.0,
              "camera_qos_reliability": "reliable"}
    with running_selector(ros, tmp_path, params, camera=True,
                          camera_reliability="reliable") as node:
        camera = CameraPublisher(ros.node, ros.image_pub, camera_frames(640, 480), 30.0).start()
        sent: dict[str, float] = {}
        rss: list[tuple[float, float]] = []              # (s since measuring began, MB)
        try:
            start = time.monotonic()
            t_measure = start + WARMUP_SECONDS
            t_end = t_measure + SOAK_SECONDS
            i, next_task, next_sample = 0, start, t_measure
            while (now := time.monotonic()) < t_end:
                if now >= next_task:
                    task_id = ros.send_task(TASKS[i % 3], task_id=f"soak-{i}")
                    if now >= t_measure:
                        sent[task_id] = now - t_measure
                    i += 1
                    next_task += 0.1
                if now >= next_sample:
                    rss.append((now - t_measure, node.rss_mb()))
                    next_sample += 1.0
                time.sleep(0.005)
            newest = ros.wait_selection(f"soak-{i - 1}", timeout=30)
            camera.stop()
            assert node.alive(), node.log()[-2000:]
        finally:
            camera.stop()
        got = {m.task_id: m for m in list(ros.selections) if m.task_id in sent}

    answered = sorted(got, key=lambda t: sent[t])
    stages = [latency_stages(got[t]) for t in answered]
    totals = [s["total"] for s in stages]
    cpu = [s["cpu"] for s in stages]
    waits = [s["queue"] for s in stages]
    frame_ages = [s["frame_age"] for s in stages if "frame_age" in s]
    first, last = _thirds(totals)
    cpu_first, cpu_last = _thirds(cpu)
    summary = (f"{len(answered)}/{len(sent)} tasks answered, camera {camera.fps():.1f} FPS, "
               f"selection median first/last third {first:.1f}/{last:.1f} ms "
               f"(CPU time {cpu_first:.1f}/{cpu_last:.1f} ms), "
               f"queue wait max {max(waits):.0f} ms, "
               f"frame age median/max {statistics.median(frame_ages):.0f}/{max(frame_ages):.0f} "
               f"ms over {len(frame_ages)} answers, RSS {rss[0][1]:.1f} -> {rss[-1][1]:.1f} MB")
    print("\n" + summary)

    assert newest.robots                                  # the newest task is always answered
    # The load was a high-rate camera: the publisher is Python on the same 2 cores as the node
    # and the test, so it reaches 28-30 FPS on an idle host and measured 23.3 in a slow minute
    # (2026-12-07); a camera below 20 FPS would no longer be the load this test claims.
    assert camera.fps() > 20.0, summary
    # Whatever the load, the node keeps answering a good share (the rest dropped by design).
    assert len(answered) >= 0.1 * len(sent), summary
    # No frame backlog: the answers used the camera's newest frames. A queue of frames
    # behind inference would age them by a frame period per selection, without bound.
    assert len(frame_ages) >= 0.9 * len(answered), summary
    # The newest of 30 frames a second is at most 33 ms old plus DDS and the wait for a
    # thread (measured: median 39 ms); a frame past max_frame_age (1 s) is never used.
    assert statistics.median(frame_ages) < 250.0, summary
    assert max(frame_ages) < 1000.0 + 500.0, summary
    first_age, last_age = _thirds(frame_ages)
    assert last_age <= 2.0 * first_age + 100.0, summary
    # No task backlog: an answered task waited at most for the queue ahead of it and the
    # selection running when it came.
    bound = (QUEUE + 1) * max(totals) + 250.0
    assert max(waits) <= bound, f"queue wait {max(waits):.0f} ms > {bound:.0f} ms; {summary}"
    # No latency growth: the node's own selection time, first third vs last third.
    assert last <= 1.5 * first + 20.0, f"latency grew {first:.1f} -> {last:.1f} ms; {summary}"
    # ... and its CPU time, which other jobs on a shared machine do not inflate.
    assert cpu_last <= 1.3 * cpu_first + 10.0, f"CPU per selection grew {cpu_first:.1f} -> " \
        f"{cpu_last:.1f} ms; {summary}"
    # No RSS growth after warm-up: first 10 s vs last 10 s of the measured time.
    grown = (_median_between(rss, SOAK_SECONDS - 10, SOAK_SECONDS)
             - _median_between(rss, 0, 10))
    assert grown < 6.0, f"RSS grew {grown:.1f} MB; {summary}"
