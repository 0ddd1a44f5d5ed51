#!/usr/bin/env python3
"""Soak benchmark of the robot selector (issue 7, item 6): hours-of-uptime behaviour in minutes.

    python scripts/soak.py --minutes 30                       # the target run
    python scripts/soak.py --minutes 5 --model-dir DIR        # shorter, another model
    python scripts/soak.py --seconds 15 --warmup 3 --width 320 --height 240   # the test smoke

The node runs in its own process, started by the local runner (bitgen_ros.runner, the same
command line and parameters file as `ros2 launch`), with an edit token in its environment
and its memory store in <out>/work/. This process, over real DDS:
- publishes a camera (`--fps`, default 30, rendered scenes, rgb8) and tasks (`--task-rate`,
  default 10 Hz) and receives every RobotSelection;
- every `--edit-period` seconds (default 5) stores a new fact with `/bitgen/memory_edit` and
  forgets the one stored `--live-facts` periods earlier with `/bitgen/memory_forget`, so the
  store is rewritten and the memory matrix updated throughout, at a bounded fact count, within
  the node's default rate limit (30 edits/min, burst 5);
- samples the node's RSS and CPU (psutil on the node's pid) every second and reads its
  /diagnostics (frames received/superseded, tasks dropped by the bounded queue).

Windows. The first `--warmup` seconds (default 60; the allocator, onnxruntime arenas and
DDS buffers settle) are run but not measured. The measured time is cut into intervals of
`--interval` seconds (default 60, at most a fifth of the measured time). The targets compare
the FIRST and the LAST measured interval:
- RSS growth = median RSS of the last interval - median RSS of the first; target < 5 MB;
- p95 latency drift = p95 of the selection latency (RobotSelection `total`, the node's own
  measure of one selection) in the last interval vs the first, relative; target < +10%
  (a faster end is not a failure). The end-to-end latency (task published -> selection
  received, which includes the wait in the node's task queue) is reported beside it.
Per interval: RSS, latency p50/p95, queue wait, tasks sent/answered/dropped, frames,
edits, load average (the machine is shared: read drift against the load).

Writes <out>/soak.json and <out>/soak.md (tables, PASS/FAIL lines, the machine). Exit 0 when
the run completed (1 with --check if a target failed), 2 if the node died or answered nothing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from bitgen_ros.loadgen import (TASKS, LoadSession, SelectionRecorder,  # noqa: E402
                                camera_frames, latency_stages, machine, pct)
from bitgen_ros.memprobe import smaps_rollup  # noqa: E402

RSS_GROWTH_MB = 5.0
P95_DRIFT = 0.10
FACTS = ["the drone is grounded for maintenance", "zone B is flooded up to one metre",
         "the legged robot has a damaged knee joint", "the humanoid is charging until noon",
         "the wheeled robot cannot enter the loading dock today",
         "the underwater robot is deployed at the harbour"]


class Recorder(SelectionRecorder):
    """Everything measured, keyed by time since the start of the measured period (`origin`)."""

    def __init__(self) -> None:
        super().__init__()
        self.samples: list[tuple[float, float, float]] = []    # (t, rss MB, cpu %)
        self.memory: list[tuple[float, float, float, int]] = []  # (t, anon MB, file MB, threads)
        self.edits: list[tuple[float, str, bool, float, str]] = []  # t, op, ok, rtt ms, msg
        self.diag: list[tuple[float, dict[str, str]]] = []     # (t, values) once per interval
        self.load: list[tuple[float, float]] = []              # (t, 1-min load average)
        self.last_diag: dict[str, str] = {}


def run(args, out: Path) -> dict:
    import psutil
    from diagnostic_msgs.msg import DiagnosticArray
    from bitgen_ros.runner import RunConfig
    from bitgen_ros.srv import MemoryEdit, MemoryForget, MemoryList

    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    for old in work.glob("memory*"):
        old.unlink()
    token = secrets.token_urlsafe(24)
    os.environ.pop("BITGEN_EDIT_TOKEN_FILE", None)       # ours is the only token source
    cfg = RunConfig(model_dir=args.model_dir, namespace=f"soak_{uuid.uuid4().hex[:6]}",
                    log_level="warn", extra_params={"robot_selector": {
                        "memory_path": str(work / "memory.json"),
                        "max_trace_tokens": str(args.max_trace_tokens),
                        "task_queue_size": str(args.queue)}
                        | dict(kv.split("=", 1) for kv in args.node_param)})
    host = machine()
    frames = camera_frames(args.width, args.height)
    rec = Recorder()
    measured = args.seconds if args.seconds else args.minutes * 60.0
    interval = min(args.interval, measured / 5.0)
    n_intervals = max(1, math.ceil(measured / interval - 1e-6))

    node_env = {"BITGEN_EDIT_TOKEN": token} | dict(kv.split("=", 1) for kv in args.node_env)
    died_at = None
    memory_keys_end: list[str] | None = None
    live: list[str] = []
    with LoadSession(cfg, "bitgen_soak", env=node_env, log_dir=str(work),
                     recorder=rec) as session:
        node, ns = session.node, cfg.ns()

        def on_diag(arr):
            for st in arr.status:
                if st.name.endswith(f"{ns}/robot_selector"):
                    rec.last_diag = {kv.key: kv.value for kv in st.values}

        node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
        edit_cli = node.create_client(MemoryEdit, f"{ns}/bitgen/memory_edit")
        forget_cli = node.create_client(MemoryForget, f"{ns}/bitgen/memory_forget")
        list_cli = node.create_client(MemoryList, f"{ns}/bitgen/memory_list")
        for cli in (edit_cli, forget_cli, list_cli):
            if not cli.wait_for_service(timeout_sec=30):
                raise SystemExit(f"soak: {cli.srv_name} did not appear")
        camera = session.start_camera(frames, args.fps)

        def call(client, request, op: str, key: str) -> None:
            t_call = time.perf_counter()

            def done(future):
                rtt = (time.perf_counter() - t_call) * 1e3
                res = future.result() if not future.cancelled() else None
                ok = bool(res is not None and res.success)
                why = "" if ok else f"{op} {key}: {res.message if res else 'no answer'}"
                with rec.lock:
                    rec.edits.append((t_call - rec.origin, op, ok, rtt, why))
            client.call_async(request).add_done_callback(done)

        proc = psutil.Process(session.selector_pid())
        proc.cpu_percent(None)
        start = time.perf_counter()
        rec.origin = start + args.warmup
        end = rec.origin + measured
        print(f"soak: warm-up {args.warmup:g} s, then {measured:g} s in {n_intervals} intervals "
              f"of {interval:g} s; camera {args.fps:g} FPS {args.width}x{args.height}, "
              f"{args.task_rate:g} tasks/s, an edit + forget every {args.edit_period:g} s",
              flush=True)
        next_task = next_sample = next_edit = start
        next_boundary, i, n_edit = rec.origin, 0, 0
        while (now := time.perf_counter()) < end:
            if not session.selector_alive():
                died_at = now - rec.origin
                break
            if now >= next_task:
                session.send_task(f"s{i}", TASKS[i % len(TASKS)])
                i += 1
                next_task += 1.0 / args.task_rate
            if now >= next_edit:
                key = f"soak-{n_edit}"
                call(edit_cli, MemoryEdit.Request(key=key, fact=FACTS[n_edit % len(FACTS)],
                                                  token=token), "edit", key)
                live.append(key)
                if len(live) > args.live_facts:
                    gone = live.pop(0)
                    call(forget_cli, MemoryForget.Request(key=gone, token=token), "forget", gone)
                n_edit += 1
                # late (a loaded machine stalled this loop): no catch-up burst, which the
                # node's rate limit would rightly refuse; the next edit is a period from now
                next_edit = max(next_edit + args.edit_period, now + 0.5 * args.edit_period)
            if now >= next_sample:
                rec.samples.append((now - rec.origin, proc.memory_info().rss / 2**20,
                                    proc.cpu_percent(None)))
                smaps = smaps_rollup(proc.pid)
                rec.load.append((now - rec.origin, os.getloadavg()[0]))
                rec.memory.append((now - rec.origin, smaps.get("Anonymous", 0) / 1024,
                                   (smaps.get("Rss", 0) - smaps.get("Anonymous", 0)) / 1024,
                                   proc.num_threads()))
                next_sample += args.sample_period
            if now >= next_boundary:                      # counters at each interval edge
                rec.diag.append((now - rec.origin, dict(rec.last_diag)))
                done_n = len(rec.diag) - 1
                if done_n:
                    print(f"soak: interval {done_n}/{n_intervals} done, "
                          f"RSS {rec.samples[-1][1]:.1f} MB", flush=True)
                next_boundary += interval
            time.sleep(0.002)
        rec.diag.append((rec.now(), dict(rec.last_diag)))
        if died_at is None:
            rec.wait_answered(f"s{i - 1}", 15.0, session.selector_alive)
        camera.stop()
        if died_at is None and session.selector_alive():
            future = list_cli.call_async(MemoryList.Request(key_prefix="soak-"))
            t_end = time.monotonic() + 30
            while not future.done() and time.monotonic() < t_end:
                time.sleep(0.02)
            if future.done() and future.result().success:
                memory_keys_end = sorted(future.result().keys)
        camera_fps = camera.fps()
    from bitgen_core.audit import read_audit               # counts rotated files too
    audit_path = work / "memory.audit.log"
    audit_lines = sum(1 for _ in read_audit(audit_path)) if audit_path.exists() else 0
    res = summarise(args, rec, measured, interval, n_intervals, died_at, camera_fps,
                    memory_keys_end, sorted(live), audit_lines, work)
    res["machine"] = host | {"load_avg_at_end": [round(x, 2) for x in os.getloadavg()]}
    return res


def _window(rec: Recorder, lo: float, hi: float) -> dict:
    """Figures of one interval: tasks SENT in [lo, hi) and samples taken in it."""
    ids = [t for t, ts in rec.sent.items() if lo <= ts < hi]
    ans = [(rec.got[t][0], latency_stages(rec.got[t][1])) for t in ids if t in rec.got]
    cpu = [lat["cpu"] for _, lat in ans if "cpu" in lat]
    ans = [(t, lat.get("total", 0.0), lat.get("queue", 0.0)) for t, lat in ans]
    e2e = [(rec.got[t][0] - rec.sent[t]) * 1e3 for t in ids if t in rec.got]
    rss = [r for ts, r, _ in rec.samples if lo <= ts < hi]
    cpu_pct = [c for ts, _, c in rec.samples if lo <= ts < hi]
    mem = [m for m in rec.memory if lo <= m[0] < hi]
    load = [x for ts, x in rec.load if lo <= ts < hi]
    med = lambda i: statistics.median(m[i] for m in mem) if mem else None  # noqa: E731
    edits = [e for e in rec.edits if lo <= e[0] < hi]
    return {"t_start": round(lo, 1), "t_end": round(hi, 1),
            "rss_mb_median": statistics.median(rss) if rss else None,
            "rss_mb_max": max(rss) if rss else None,
            "anon_mb_median": med(1), "file_mb_median": med(2),
            "threads_max": max(m[3] for m in mem) if mem else None,
            "load_avg_1min_mean": round(statistics.fmean(load), 2) if load else None,
            "cpu_percent_mean": statistics.fmean(cpu_pct) if cpu_pct else None,
            "selection_cpu_p50_ms": pct(cpu, 50), "selection_cpu_p95_ms": pct(cpu, 95),
            "selection_p50_ms": pct([a[1] for a in ans], 50),
            "selection_p95_ms": pct([a[1] for a in ans], 95),
            "end_to_end_p50_ms": pct(e2e, 50), "end_to_end_p95_ms": pct(e2e, 95),
            "queue_wait_p50_ms": pct([a[2] for a in ans], 50),
            "queue_wait_p95_ms": pct([a[2] for a in ans], 95),
            "tasks_sent": len(ids), "tasks_answered": len(ans),
            "tasks_unanswered": len(ids) - len(ans),
            "edits_ok": sum(1 for e in edits if e[2]),
            "edits_failed": sum(1 for e in edits if not e[2]),
            "edit_rtt_p95_ms": pct([e[3] for e in edits], 95)}


def _compare(first: dict, last: dict, key: str, limit: float, relative: bool,
             target: bool) -> dict:
    a, b = first[key], last[key]
    if a is None or b is None or (relative and a <= 0):
        return {"first": a, "last": b, "value": None, "limit": limit, "pass": False,
                "target": target}
    value = (b - a) / a if relative else b - a
    return {"first": a, "last": b, "value": value, "limit": limit, "pass": value < limit,
            "target": target}


def _delta(rec: Recorder, k: int, key: str) -> int | None:
    try:
        return int(rec.diag[k + 1][1][key]) - int(rec.diag[k][1][key])
    except (IndexError, KeyError, ValueError):
        return None


def summarise(args, rec, measured, interval, n_intervals, died_at, camera_fps,
              memory_keys_end, expected_keys, audit_lines, work) -> dict:
    rows = []
    for k in range(n_intervals):
        row = _window(rec, k * interval, measured if k == n_intervals - 1 else (k + 1) * interval)
        row["tasks_dropped_by_queue"] = _delta(rec, k, "tasks_dropped")
        row["frames_received"] = _delta(rec, k, "frames_received")
        row["frames_superseded"] = _delta(rec, k, "frames_superseded")
        rows.append(row)
    first, last = rows[0], rows[-1]
    warm = _window(rec, -args.warmup, 0.0)
    targets = {  # absolute RSS growth; relative p95 growth (only the first two are targets)
        "rss_growth_mb": _compare(first, last, "rss_mb_median", RSS_GROWTH_MB, False, True),
        "selection_p95_drift": _compare(first, last, "selection_p95_ms", P95_DRIFT, True, True),
        "end_to_end_p95_drift": _compare(first, last, "end_to_end_p95_ms", P95_DRIFT, True,
                                         False),
        "selection_cpu_p95_drift": _compare(first, last, "selection_cpu_p95_ms", P95_DRIFT,
                                            True, False),
        "anon_growth_mb": _compare(first, last, "anon_mb_median", RSS_GROWTH_MB, False, False),
        "file_backed_growth_mb": _compare(first, last, "file_mb_median", RSS_GROWTH_MB, False,
                                          False)}
    sent, answered = len(rec.sent), len(rec.got)
    edits_ok = sum(1 for e in rec.edits if e[2])
    return {
        "machine": None,                          # filled in by run(): measured at start
        "config": {k: getattr(args, k) for k in ("warmup", "fps", "task_rate", "edit_period",
                                                 "live_facts", "width", "height",
                                                 "max_trace_tokens", "queue")}
        | {"measured_s": measured, "interval_s": interval,
           "model_dir": args.model_dir or "models/default"},
        "completed": died_at is None and answered > 0,
        "node_died_at_s": died_at,
        "camera_fps_published": round(camera_fps, 1),
        "totals": {"tasks_sent": sent, "tasks_answered": answered,
                   "edits_and_forgets": len(rec.edits), "edits_ok": edits_ok,
                   "edit_failures": [e[4] for e in rec.edits if not e[2]][:20],
                   "audit_log_records": audit_lines,
                   "memory_keys_at_end": memory_keys_end, "memory_keys_expected": expected_keys,
                   "memory_consistent": memory_keys_end == expected_keys},
        "warmup": warm, "intervals": rows, "targets": targets,
        "pass": all(t["pass"] for t in targets.values() if t.get("target")),
        "samples": [{"t": round(t, 1), "rss_mb": round(r, 2), "cpu_percent": c}
                    for t, r, c in rec.samples],
        "memory_samples": [{"t": round(t, 1), "anon_mb": round(a, 2), "file_mb": round(f, 2),
                            "threads": n} for t, a, f, n in rec.memory],
        "work_dir": str(work)}


def markdown(res: dict) -> str:
    m, c, tot = res["machine"], res["config"], res["totals"]
    f = lambda v, d=1: "n/a" if v is None else f"{v:.{d}f}"  # noqa: E731
    n = lambda v: "n/a" if v is None else str(v)  # noqa: E731
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['arch']}; "
        f"Python {m['python']}, onnxruntime {m['onnxruntime']}, ROS 2 {m['ros']}, {m['rmw']}; "
        f"load average {m['load_avg_at_start']} at start, {m['load_avg_at_end']} at end.",
        f"Run: model `{c['model_dir']}`, warm-up {c['warmup']:g} s, then {c['measured_s']:g} s "
        f"measured ({c['measured_s'] / 60:.1f} min) in intervals of {c['interval_s']:g} s; camera "
        f"{c['fps']:g} FPS {c['width']}x{c['height']} rgb8 (published "
        f"{res['camera_fps_published']} FPS), {c['task_rate']:g} tasks/s, an edit + forget every "
        f"{c['edit_period']:g} s; max_trace_tokens {c['max_trace_tokens']}, task queue "
        f"{c['queue']}.",
        f"Totals: {tot['tasks_answered']}/{tot['tasks_sent']} tasks answered; "
        f"{tot['edits_ok']}/{tot['edits_and_forgets']} edits/forgets succeeded; "
        f"{tot['audit_log_records']} audit records; memory at the end "
        f"{'matches' if tot['memory_consistent'] else 'DOES NOT match'} the expected keys."
        + ("" if res["node_died_at_s"] is None
           else f" NODE DIED at {res['node_died_at_s']:.0f} s."),
        "",
        "| interval (s) | RSS median / max (MB) | anon / file-backed (MB) | CPU % | "
        "selection p50 / p95 (ms) | selection CPU time p50 / p95 (ms) | "
        "end-to-end p50 / p95 (ms) | queue wait p50 / p95 (ms) | tasks sent / answered / "
        "dropped by queue | frames recv / superseded | edits ok / failed | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["intervals"]:
        lines.append(
            f"| {r['t_start']:g}-{r['t_end']:g} | {f(r['rss_mb_median'])} / {f(r['rss_mb_max'])} "
            f"| {f(r['anon_mb_median'])} / {f(r['file_mb_median'])} "
            f"| {f(r['cpu_percent_mean'], 0)} | {f(r['selection_p50_ms'])} / "
            f"{f(r['selection_p95_ms'])} | {f(r['selection_cpu_p50_ms'])} / "
            f"{f(r['selection_cpu_p95_ms'])} | {f(r['end_to_end_p50_ms'])} / "
            f"{f(r['end_to_end_p95_ms'])} | {f(r['queue_wait_p50_ms'])} / "
            f"{f(r['queue_wait_p95_ms'])} | {r['tasks_sent']} / {r['tasks_answered']} / "
            f"{n(r['tasks_dropped_by_queue'])} | {n(r['frames_received'])} / "
            f"{n(r['frames_superseded'])} | {r['edits_ok']} / {r['edits_failed']} | "
            f"{f(r['load_avg_1min_mean'])} |")
    lines.append("")
    lines += verdict_lines(res)
    return "\n".join(lines)


def verdict_lines(res: dict) -> list[str]:
    t = res["targets"]
    out = []
    r = t["rss_growth_mb"]
    out.append(f"{'PASS' if r['pass'] else 'FAIL'}: RSS growth first -> last interval "
               + (f"{r['first']:.1f} -> {r['last']:.1f} MB = {r['value']:+.2f} MB "
                  f"(target < {RSS_GROWTH_MB:g} MB)" if r["value"] is not None else "not measured"))
    for name, label in (("anon_growth_mb", "anonymous memory growth"),
                        ("file_backed_growth_mb", "file-backed memory growth")):
        d = t[name]
        out.append(f"INFO: {label} first -> last interval "
                   + (f"{d['first']:.1f} -> {d['last']:.1f} MB = {d['value']:+.2f} MB"
                      if d["value"] is not None else "not measured"))
    for name, label in (("selection_p95_drift", "p95 selection latency drift"),
                        ("end_to_end_p95_drift", "p95 end-to-end latency drift"),
                        ("selection_cpu_p95_drift", "p95 selection CPU time drift")):
        d = t[name]
        tag = ("PASS" if d["pass"] else "FAIL") if d.get("target") else "INFO"
        out.append(f"{tag}: {label} first -> last interval "
                   + (f"{d['first']:.1f} -> {d['last']:.1f} ms = {d['value'] * 100:+.1f}% "
                      f"(target < +{P95_DRIFT * 100:g}%)" if d["value"] is not None
                      else "not measured"))
    out.append(f"{'PASS' if res['pass'] else 'FAIL'}: soak overall")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="measured minutes (after warm-up)")
    ap.add_argument("--seconds", type=float, default=0.0, help="measured seconds (overrides --minutes)")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds run but not measured")
    ap.add_argument("--interval", type=float, default=60.0, help="seconds per reported interval")
    ap.add_argument("--model-dir", default="", help="model directory (default models/default)")
    ap.add_argument("--fps", type=float, default=30.0, help="camera frames per second")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--task-rate", type=float, default=10.0, help="tasks per second")
    ap.add_argument("--edit-period", type=float, default=5.0,
                    help="seconds between memory edits (each also forgets an older fact, so "
                         "below 4 s the node's default 30 changes/min refuses some)")
    ap.add_argument("--live-facts", type=int, default=3, help="facts kept stored at once")
    ap.add_argument("--max-trace-tokens", type=int, default=32)
    ap.add_argument("--queue", type=int, default=4, help="the node's task_queue_size")
    ap.add_argument("--sample-period", type=float, default=1.0, help="seconds between RSS samples")
    ap.add_argument("--node-env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra environment of the node, e.g. BITGEN_MEMPROBE=probe.jsonl "
                         "(see bitgen_ros/memprobe.py) or MALLOC_ARENA_MAX=2; repeatable")
    ap.add_argument("--node-param", action="append", default=[], metavar="NAME=VALUE",
                    help="extra robot_selector parameter, e.g. heap_trim_period=0; repeatable")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target fails")
    ap.add_argument("--out", default=str(REPO / "runs" / "soak"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    res = run(args, out)
    (out / "soak.json").write_text(json.dumps(res, indent=2))
    table = markdown(res)
    (out / "soak.md").write_text(table + "\n")
    print("\n" + table + f"\n\nwrote {out / 'soak.json'} and {out / 'soak.md'}", flush=True)
    if not res["completed"]:
        return 2
    return 1 if args.check and not res["pass"] else 0


if __name__ == "__main__":
    sys.exit(main())
