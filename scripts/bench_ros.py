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
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bitgen_ros.loadgen import (TASKS, LoadSession, camera_frames,  # noqa: E402
                                latency_stages, machine, pct)

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
    from bitgen_ros.runner import RunConfig

    frames = camera_frames(args.width, args.height)
    print(f"bench: runtime alone ({args.runtime_samples} selections, no ROS)...", flush=True)
    own = runtime_own_latency(args.model_dir, frames, args.runtime_samples, args.max_trace_tokens)

    work = tempfile.mkdtemp(prefix="bitgen-bench-")
    cfg = RunConfig(model_dir=args.model_dir, namespace=f"bench_{uuid.uuid4().hex[:6]}",
                    log_level="warn", extra_params={"robot_selector": {
                        "memory_path": f"{work}/memory.json",
                        "max_trace_tokens": str(args.max_trace_tokens),
                        "task_queue_size": str(args.queue)}})
    with LoadSession(cfg, "bench_ros", log_dir=work) as session:
        rec = session.recorder
        camera = session.start_camera(frames, args.fps)
        proc = psutil.Process(session.selector_pid())
        proc.cpu_percent(None)
        time.sleep(2.0)                                  # camera running, node warm
        print(f"bench: {args.duration:g} s at {args.fps:g} FPS {args.width}x{args.height}, "
              f"{args.task_rate:g} tasks/s...", flush=True)
        samples = []                                     # (t, cpu %, rss MB)
        t0 = time.perf_counter()
        next_task, next_sample, i = t0, t0 + 1.0, 0
        while (now := time.perf_counter()) < t0 + args.duration:
            if now >= next_task:
                session.send_task(f"b{i}", TASKS[i % len(TASKS)])
                i += 1
                next_task += 1.0 / args.task_rate
            if now >= next_sample:
                samples.append((now - t0, proc.cpu_percent(None), proc.memory_info().rss / 2**20))
                next_sample += 1.0
            time.sleep(0.002)
        rec.wait_answered(f"b{i - 1}", 15.0, session.selector_alive)
        fps_out = camera.fps()

    sent, done = rec.snapshot()
    order = sorted(done, key=lambda t: sent[t])
    e2e = [(done[t][0] - sent[t]) * 1e3 for t in order]
    node_total = [latency_stages(done[t][1])["total"] for t in order]
    queue = [latency_stages(done[t][1]).get("queue", 0.0) for t in order]
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
