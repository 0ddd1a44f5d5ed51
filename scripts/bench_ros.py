#!/usr/bin/env python3
"""ROS benchmark of the robot selector: latency through DDS, node CPU and RSS under a camera.

    python scripts/bench_ros.py                       # 20 s, 30 FPS 640x480, 2 tasks/s
    python scripts/bench_ros.py --duration 60 --task-rate 10    # the 60 s soak of issue 6

The node runs in its own process (started like the local runner does, with the shipped
params file); this process publishes the camera and the tasks and listens for answers.
Measured:
- end-to-end latency: TaskCommand published -> RobotSelection received (p50/p95), over DDS;
- the runtime's own latency, twice: as the node reports it (RobotSelection.latency_ms total)
  and in this process calling BitGenRuntime.select directly (no ROS at all);
- overhead = end-to-end minus the node-reported runtime total, per task, split into the
  wait in the node's task queue (RobotSelection latency stage `queue`) and the rest (DDS,
  message conversion, executor hand-offs);
- the node's CPU (% of one core) and RSS, sampled each second; RSS and latency drift
  (first vs last third of the run).
Writes <out>/bench_ros.json and <out>/bench_ros.md (a table with the machine described).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TASKS = ["Fly over the forest fire and take aerial photos of how far it has spread",
         "Inspect the hull of the ship below the waterline for cracks",
         "Move the pallets from the loading dock to aisle 12 of the warehouse",
         "Search the collapsed building for survivors, climbing over the rubble"]


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_gb, 1),
            "arch": platform.machine(), "os": platform.platform(),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "ros": os.environ.get("ROS_DISTRO") or "kilted (PyPI ros-* wheels)",
            "rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)"),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}


def camera_frames(width: int, height: int) -> list[np.ndarray]:
    from PIL import Image
    from bitgen_core.data.render import render_scene
    return [np.asarray(Image.fromarray(render_scene(f, 3).image).resize((width, height)))
            for f in ("aerial", "underwater", "warehouse", "rubble")]


def runtime_own_latency(model_dir: str | None, frames, n: int, max_trace_tokens: int) -> list:
    from bitgen_core.runtime import BitGenRuntime
    rt = BitGenRuntime.load(model_dir=model_dir or None)
    out = []
    for i in range(n + 2):
        sel = rt.select(TASKS[i % len(TASKS)], image=frames[i % len(frames)],
                        max_trace_tokens=max_trace_tokens)
        if i >= 2:                                      # first calls warm caches up
            out.append(sel.latency_ms["total"])
    return out


def run(args) -> dict:
    import psutil
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from sensor_msgs.msg import Image
    from bitgen_ros import qos
    from bitgen_ros.image_convert import rgb_to_image_fields
    from bitgen_ros.msg import RobotSelection, TaskCommand
    from bitgen_ros.runner import Runner, RunConfig

    frames = camera_frames(args.width, args.height)
    print(f"bench: runtime alone ({args.runtime_samples} selections, no ROS)...", flush=True)
    own = runtime_own_latency(args.model_dir, frames, args.runtime_samples, args.max_trace_tokens)

    work = tempfile.mkdtemp(prefix="bitgen-bench-")
    cfg = RunConfig(model_dir=args.model_dir, namespace=f"bench_{uuid.uuid4().hex[:6]}",
                    log_level="warn", extra_params={"robot_selector": {
                        "memory_path": f"{work}/memory.json",
                        "max_trace_tokens": str(args.max_trace_tokens),
                        "task_queue_size": str(args.queue)}})
    rclpy.init(args=["bench_ros"])
    node = rclpy.create_node("bench_ros")
    runner = Runner(cfg, log_dir=work).start(["robot_selector"])
    executor = MultiThreadedExecutor(num_threads=3)
    try:
        ok, detail = runner.bring_up(node)
        if not ok:
            raise SystemExit(f"bench: {detail}")
        ns = cfg.ns()
        received: dict[str, tuple[float, RobotSelection]] = {}
        lock = threading.Lock()

        def on_selection(msg):
            with lock:
                received[msg.task_id] = (time.perf_counter(), msg)

        node.create_subscription(RobotSelection, f"{ns}/bitgen/selection", on_selection,
                                 qos.selection_profile(100))
        task_pub = node.create_publisher(TaskCommand, f"{ns}/bitgen/task", qos.task_profile())
        cam_pub = node.create_publisher(Image, f"{ns}/camera/image_raw", qos.camera_profile())
        image_msgs = [Image(**rgb_to_image_fields(f)) for f in frames]
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        while task_pub.get_subscription_count() == 0 or cam_pub.get_subscription_count() == 0:
            time.sleep(0.05)
        stop = threading.Event()
        published = [0]

        def camera():
            period, nxt = 1.0 / args.fps, time.perf_counter()
            while not stop.is_set():
                msg = image_msgs[published[0] % len(image_msgs)]
                msg.header.stamp = node.get_clock().now().to_msg()
                cam_pub.publish(msg)
                published[0] += 1
                nxt += period
                time.sleep(max(0.0, nxt - time.perf_counter()))

        threading.Thread(target=camera, daemon=True).start()
        proc = psutil.Process(runner.procs["robot_selector"].proc.pid)
        proc.cpu_percent(None)
        time.sleep(2.0)                                  # camera running, node warm
        print(f"bench: {args.duration:g} s at {args.fps:g} FPS {args.width}x{args.height}, "
              f"{args.task_rate:g} tasks/s...", flush=True)
        sent: dict[str, float] = {}
        samples = []                                     # (t, cpu %, rss MB)
        t0 = time.perf_counter()
        next_task, next_sample, i = t0, t0 + 1.0, 0
        while (now := time.perf_counter()) < t0 + args.duration:
            if now >= next_task:
                task_id = f"b{i}"
                msg = TaskCommand(id=task_id, text=TASKS[i % len(TASKS)])
                msg.header.stamp = node.get_clock().now().to_msg()
                sent[task_id] = time.perf_counter()
                task_pub.publish(msg)
                i += 1
                next_task += 1.0 / args.task_rate
            if now >= next_sample:
                samples.append((now - t0, proc.cpu_percent(None), proc.memory_info().rss / 2**20))
                next_sample += 1.0
            time.sleep(0.002)
        deadline = time.perf_counter() + 15
        while time.perf_counter() < deadline and f"b{i - 1}" not in received:
            time.sleep(0.05)
        stop.set()
        fps_out = published[0] / (time.perf_counter() - t0 + 2.0)
    finally:
        runner.stop()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()

    with lock:
        done = {t: received[t] for t in sent if t in received}
    order = sorted(done, key=lambda t: sent[t])
    e2e = [(done[t][0] - sent[t]) * 1e3 for t in order]
    node_total = [dict(zip(done[t][1].latency_stages, done[t][1].latency_ms))["total"]
                  for t in order]
    queue = [dict(zip(done[t][1].latency_stages, done[t][1].latency_ms)).get("queue", 0.0)
             for t in order]
    overhead = [a - b for a, b in zip(e2e, node_total)]
    transport = [o - q for o, q in zip(overhead, queue)]
    k = max(1, len(e2e) // 3)
    rss = [s[2] for s in samples]
    cpu = [s[1] for s in samples]
    return {
        "machine": machine(),
        "config": {k2: getattr(args, k2) for k2 in ("duration", "fps", "task_rate", "width",
                                                   "height", "max_trace_tokens", "queue")}
        | {"model_dir": args.model_dir or "models/default",
           "model_id": done[order[0]][1].model_id if order else None},
        "tasks": {"sent": len(sent), "answered": len(done),
                  "dropped_or_lost": len(sent) - len(done)},
        "camera_fps_published": round(fps_out, 1),
        "latency_ms": {
            "end_to_end_p50": pct(e2e, 50), "end_to_end_p95": pct(e2e, 95),
            "node_runtime_p50": pct(node_total, 50), "node_runtime_p95": pct(node_total, 95),
            "runtime_alone_p50": pct(own, 50), "runtime_alone_p95": pct(own, 95),
            "overhead_p50": pct(overhead, 50), "overhead_p95": pct(overhead, 95),
            "queue_wait_p50": pct(queue, 50), "queue_wait_p95": pct(queue, 95),
            "transport_p50": pct(transport, 50), "transport_p95": pct(transport, 95),
            "end_to_end_first_third_median": statistics.median(e2e[:k]) if e2e else None,
            "end_to_end_last_third_median": statistics.median(e2e[-k:]) if e2e else None},
        "node": {"cpu_percent_mean": float(np.mean(cpu)) if cpu else None,
                 "cpu_percent_max": float(np.max(cpu)) if cpu else None,
                 "rss_mb_start": rss[0] if rss else None, "rss_mb_end": rss[-1] if rss else None,
                 "rss_mb_max": max(rss) if rss else None},
        "samples": [{"t": round(t, 1), "cpu_percent": c, "rss_mb": round(r, 2)}
                    for t, c, r in samples],
    }


def markdown(res: dict) -> str:
    m, c, lat, n = res["machine"], res["config"], res["latency_ms"], res["node"]
    f = lambda v, d=1: "n/a" if v is None else f"{v:.{d}f}"  # noqa: E731
    return "\n".join([
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['arch']}; "
        f"Python {m['python']}, onnxruntime {m['onnxruntime']}, ROS 2 {m['ros']}, {m['rmw']}; "
        f"load average at start {m['load_avg_at_start']}.",
        f"Run: model `{c['model_id']}`, {c['duration']:g} s, camera {c['fps']:g} FPS "
        f"{c['width']}x{c['height']} rgb8 (published {res['camera_fps_published']} FPS), "
        f"{c['task_rate']:g} tasks/s, max_trace_tokens {c['max_trace_tokens']}; "
        f"{res['tasks']['answered']}/{res['tasks']['sent']} tasks answered.",
        "",
        "| Measure | p50 | p95 |", "|---|---|---|",
        f"| Task published -> RobotSelection received (ms, DDS) | {f(lat['end_to_end_p50'])} | "
        f"{f(lat['end_to_end_p95'])} |",
        f"| Runtime inside the node (ms, RobotSelection.latency_ms total) | "
        f"{f(lat['node_runtime_p50'])} | {f(lat['node_runtime_p95'])} |",
        f"| Runtime alone, no ROS (ms) | {f(lat['runtime_alone_p50'])} | "
        f"{f(lat['runtime_alone_p95'])} |",
        f"| ROS overhead = end-to-end - node runtime (ms) | {f(lat['overhead_p50'])} | "
        f"{f(lat['overhead_p95'])} |",
        f"| of which: waiting in the node's task queue (ms) | {f(lat['queue_wait_p50'])} | "
        f"{f(lat['queue_wait_p95'])} |",
        f"| of which: DDS + conversion + callbacks (ms) | {f(lat['transport_p50'])} | "
        f"{f(lat['transport_p95'])} |",
        "",
        "| Node process | mean | max |", "|---|---|---|",
        f"| CPU (% of one core) | {f(n['cpu_percent_mean'])} | {f(n['cpu_percent_max'])} |",
        f"| RSS (MB), start -> end | {f(n['rss_mb_start'])} -> {f(n['rss_mb_end'])} | "
        f"{f(n['rss_mb_max'])} |",
        f"| End-to-end median, first -> last third (ms) | "
        f"{f(lat['end_to_end_first_third_median'])} -> "
        f"{f(lat['end_to_end_last_third_median'])} | |",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default="", help="model directory (default models/default)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of measurement")
    ap.add_argument("--fps", type=float, default=30.0, help="camera frames per second")
    ap.add_argument("--task-rate", type=float, default=2.0, help="tasks per second")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--max-trace-tokens", type=int, default=32)
    ap.add_argument("--queue", type=int, default=4, help="the node's task_queue_size")
    ap.add_argument("--runtime-samples", type=int, default=20,
                    help="selections of the in-process runtime baseline")
    ap.add_argument("--out", default=str(REPO / "runs" / "bench_ros"))
    args = ap.parse_args(argv)
    res = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_ros.json").write_text(json.dumps(res, indent=2))
    table = markdown(res)
    (out / "bench_ros.md").write_text(table + "\n")
    print("\n" + table + f"\n\nwrote {out / 'bench_ros.json'} and {out / 'bench_ros.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
