"""`bitgen bench`: the runtime's latency, memory and size figures against the issue's targets.

    bitgen bench [--model DIR] [--checkpoint CKPT] [--out-json bench.json] [--out-md bench.md]

Measured in one run, on this machine (described in the output: CPU, cores, AVX2/VNNI, load,
onnxruntime version):
- end-to-end `select` (image + task -> all robots ranked, top-3, trace of up to 32 tokens)
  p50/p95 on 1 and 2 threads, and its parts (vision encode, memory, prefill, selector), with
  the process CPU time per selection next to it (the cost without the machine's other jobs),
  and the rate of the selection's own trace (tokens over its trace time: grammar, drafts and
  the forced "selected:" clause, so faster than a free stream);
- trace generation tokens/s (one stream past [EOS], 1 thread), and per token the output head
  vs the decode step;
- memory write / forget ms (in RAM: encode + Larimar update; and persisted to a store file);
- peak RSS of a fresh process that loads the runtime and runs N selections (default 1,000);
- per-token cost (CPU time of the decoding thread; streams held at each point take turns, so
  all points see the same machine) and RSS at tokens 100 / 1,000 / 10,000 of one stream,
  with the sink cache and with a full cache (the growth the sink cache avoids), each in a
  fresh process;
- the same work on the torch model in eager fp32 (a child process, so this process never
  imports torch) and the speed ratio: vision + memory + prefill + selector + a 32-token trace
  on both; the torch model is the checkpoint when --checkpoint is given, else the model
  directory's architecture with random weights (the time does not depend on the values);
- model bytes on disk: packed ternary weights vs their float32 size, and the whole directory.
Each target prints PASS or FAIL with its figure. Child processes run `python -m bitgen_core.bench
--child ...` and answer with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TASKS = ["inspect the cracked chimney on the roof of the old mill",
         "carry three crates of tools across the warehouse floor",
         "search the collapsed parking garage for trapped people",
         "check the hull of the ferry below the waterline",
         "deliver a first-aid kit up the stairs to the third floor",
         "patrol the fence line of the solar farm at night",
         "photograph the flooded underpass from above",
         "open the valve in the pump room and read the gauge"]
STREAM_POINTS = (100, 1000, 10000)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--checkpoint", help="torch checkpoint of the same model (default: its architecture with "
                                         "random weights) for the eager fp32 comparison")
    ap.add_argument("--out-json", default="bench.json")
    ap.add_argument("--out-md", default="bench.md")
    ap.add_argument("--iterations", type=int, default=100, help="timed selections per thread count")
    ap.add_argument("--rss-selections", type=int, default=1000)
    ap.add_argument("--stream-tokens", type=int, default=10000, help="length of the streaming test")
    ap.add_argument("--quick", action="store_true", help="small counts (a smoke run, not a benchmark)")


# ----------------------------------------------------------------------------- machine
def machine() -> dict:
    import onnxruntime
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
            "cores": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "")
        flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
        info.update(cpu=model, avx2="avx2" in flags, avx512f="avx512f" in flags,
                    vnni=bool(flags & {"avx512_vnni", "avx_vnni"}))
    except OSError:
        info.update(cpu=platform.processor())
    return info


def _pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q)) if len(xs) else float("nan")


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # uint8 straight away: a float64 frame (7 MB) would count in the RSS child's peak
    return [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(n)]


def _proc_status_mb(field: str) -> float | None:
    """A `kB` line of /proc/self/status in MB (None off Linux or when unreadable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _rss_mb() -> float:
    """Current RSS, from /proc on Linux: importing psutil for it would add its own ~1 MB to
    the RSS child's figure, which measures the runtime, not the benchmark."""
    mb = _proc_status_mb("VmRSS")
    if mb is not None:
        return mb
    import psutil
    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    """Peak RSS of this process image. Not getrusage's ru_maxrss: Linux carries that across
    fork + exec, so a child of the benchmark reported the *parent's* RSS at fork time (291 MB
    measured for a runtime whose own peak was ~160 MB). VmHWM is the high-water mark of the
    current address space, which exec starts afresh."""
    mb = _proc_status_mb("VmHWM")
    if mb is not None:
        return mb
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # not Linux: best effort


# ----------------------------------------------------------------------------- children
def child_rss(model: str | None, n: int) -> dict:
    from bitgen_core.runtime import BitGenRuntime
    rt = BitGenRuntime.load(model, threads=1)
    after_load = _rss_mb()
    # one camera frame held at a time, as a node holds the newest frame (four 640x480 frames
    # held by the benchmark itself would add 2.8 MB that is not the runtime's)
    frame = _images(1)[0]
    for i in range(n):
        rt.select(TASKS[i % len(TASKS)], frame, max_trace_tokens=32)
    return {"rss_after_load_mb": after_load, "rss_end_mb": _rss_mb(),
            "peak_rss_mb": _peak_rss_mb(),
            "selections": n, "torch_imported": "torch" in sys.modules}


def child_stream(model: str | None, tokens: int, full: bool, rounds: int = 101) -> dict:
    """Per-token cost and RSS at tokens 100 / 1,000 / 10,000 of a stream.

    RSS is read at each point of one stream. The cost is compared in the same time window:
    one stream is run up to each point, then the streams take turns, one token each, for
    `rounds` rounds, so a change in the machine's other load hits every point alike (timed one
    after the other, a 10,000-token stream spans ~10 s, long enough for a neighbour's job to
    start). Cost = CPU time of the decoding thread per token, median over the rounds; the wall
    clock beside it."""
    from bitgen_core.runtime import BitGenRuntime
    rt = BitGenRuntime.load(model, threads=1)
    from bitgen_core.kvcache_np import SinkKVCache
    cfg = rt.config
    points = [p for p in STREAM_POINTS if p <= tokens] or [tokens]

    def stream():
        cache = SinkKVCache(cfg.n_sink, 10**9 if full else cfg.window)
        return rt.trace_stream(TASKS[0], None, max_new_tokens=tokens + rounds + 1, ignore_eos=True,
                               cache=cache), cache
    streams, rss = {}, {}
    longest, _ = stream()
    for i, _ in enumerate(longest, 1):    # one stream, RSS at every point
        if i in points:
            rss[i] = _rss_mb()
            if i == points[-1]:
                streams[i] = longest
                break
    for p in points[:-1]:
        it, _ = stream()
        for _ in range(p):
            next(it)
        streams[p] = it
    cpu = {p: [] for p in points}
    wall = {p: [] for p in points}
    for _ in range(rounds):
        for p in points:
            t, c = time.perf_counter(), time.thread_time()
            next(streams[p])
            cpu[p].append(time.thread_time() - c)
            wall[p].append(time.perf_counter() - t)
    out = {str(p): {"ms_per_token": float(np.median(cpu[p])) * 1e3,
                    "wall_ms_per_token": float(np.median(wall[p])) * 1e3, "rss_mb": rss.get(p)}
           for p in points}
    return {"points": out, "tokens": points[-1] + rounds, "full_cache": full, "rounds": rounds}


FIXED_TRACE = 32   # trace tokens of the fixed-work comparison, [EOS] ignored


def child_torch(checkpoint: str | None, model: str | None, iterations: int) -> dict:
    """The torch model in eager fp32 on the same inputs, one thread.

    fixed: vision + memory read + prefill + selector + exactly FIXED_TRACE trace tokens, the
    work `bench_fixed` times on the runtime. Its cost does not depend on the weights' values,
    so without a checkpoint the model is the model directory's architecture (its config,
    catalog and tokenizer) with random weights: the same arithmetic, hence the same time.
    select (with a checkpoint only): `model.select` as users call it (trace to [EOS]), next to
    the runtime's select p50 of the same model."""
    import torch
    torch.set_num_threads(1)
    from bitgen_core.model import BitGenModel
    if checkpoint:
        net, source = BitGenModel.load(checkpoint).eval(), "checkpoint"
    else:
        from bitgen_core.runtime.engine import default_model_dir
        from bitgen_core.runtime.model_files import load_model_files
        files = load_model_files(model or default_model_dir(), build_sessions=False)
        torch.manual_seed(0)
        net = BitGenModel(files.model_config, catalog=files.catalog, tokenizer=files.tokenizer,
                          pretrained=False).eval()
        source = "architecture of the model directory, random weights"
    images = _images(4)
    fixed, sel = [], []
    for i in range(iterations + 2):
        task, image = TASKS[i % len(TASKS)], images[i % len(images)]
        with torch.no_grad():
            t = time.perf_counter()
            state, cache, image_tokens, fact = net.start(task, image)
            net.select_head(state, net.robot_embeddings(), fact)
            net._collect(state, cache, image_tokens, FIXED_TRACE, stop_at_eos=False)
            dt = time.perf_counter() - t
            if checkpoint:
                t = time.perf_counter()
                net.select(task, image, top_k=3, trace_tokens=32)
                if i >= 2:
                    sel.append((time.perf_counter() - t) * 1e3)
        if i >= 2:
            fixed.append(dt * 1e3)
    out = {"fixed_p50_ms": _pct(fixed, 50), "fixed_p95_ms": _pct(fixed, 95), "iterations": iterations,
           "weights": source, "torch": torch.__version__}
    if sel:
        out.update(p50_ms=_pct(sel, 50), p95_ms=_pct(sel, 95))
    return out


def bench_fixed(rt, iterations: int) -> dict:
    """The runtime doing child_torch's fixed work: vision, memory, prefill, selector and
    exactly FIXED_TRACE trace tokens ([EOS] ignored, no forced clause)."""
    images = _images(4)
    lat = []
    with rt._blas_threads():
        for i in range(iterations + 2):
            t = time.perf_counter()
            prompt = rt._start(TASKS[i % len(TASKS)], images[i % len(images)], {})
            rt._s["selector"].run(["probabilities"], rt._selector_feeds(prompt))
            for _ in rt._decode(prompt.state, rt._stepper(prompt), FIXED_TRACE, ignore_eos=True):
                pass
            if i >= 2:
                lat.append((time.perf_counter() - t) * 1e3)
    return {"p50_ms": _pct(lat, 50), "p95_ms": _pct(lat, 95), "iterations": iterations}


def _run_child(kind: str, *args: str) -> dict:
    cmd = [sys.executable, "-m", "bitgen_core.bench", "--child", kind, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(Path(__file__).resolve().parents[1]))
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"{kind} child failed: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- in-process parts
def bench_select(rt, iterations: int, baseline=None) -> dict:
    """Selections of `rt`; with `baseline` (another runtime) the two take turns, selection by
    selection, so both see the same machine, and the baseline's figures come back under
    "baseline" (the bench passes free trace decoding, `trace_grammar=False`)."""
    images = _images(4)
    rts = [rt] + ([baseline] if baseline is not None else [])
    for r in rts:
        for i in range(3):
            r.select(TASKS[i], images[i % 4], max_trace_tokens=32)
    rows, cpu, rates = [[] for _ in rts], [[] for _ in rts], [[] for _ in rts]
    for i in range(iterations):
        for j, r in enumerate(rts):
            c = time.process_time()
            sel = r.select(TASKS[i % len(TASKS)], images[i % 4], top_k=3, max_trace_tokens=32)
            cpu[j].append((time.process_time() - c) * 1e3)
            rows[j].append(sel.latency_ms)
            # the selection's own trace: its tokens ([EOS] included) over its trace time
            n = len(r.tokenizer.encode(sel.reasoning)) + 1
            rates[j].append(n / max(sel.latency_ms["trace"], 1e-6) * 1e3)

    def summary(rows, cpu, rates):
        part = {k: _pct([r[k] for r in rows], 50) for k in rows[0]}
        total = [r["total"] for r in rows]
        # CPU time of the process per selection: what the selection costs, whatever else the
        # machine runs (on a shared machine the wall clock also measures the other jobs)
        return {"p50_ms": _pct(total, 50), "p95_ms": _pct(total, 95), "parts_p50_ms": part,
                "cpu_p50_ms": _pct(cpu, 50), "cpu_p95_ms": _pct(cpu, 95), "iterations": iterations,
                "trace_tokens_per_s_p50": _pct(rates, 50)}
    out = summary(rows[0], cpu[0], rates[0])
    if baseline is not None:
        out["baseline"] = summary(rows[1], cpu[1], rates[1])
    return out


def bench_trace(rt, tokens: int, runs: int = 3) -> dict:
    """Trace generation rate: one stream of `tokens` tokens past [EOS] (prefill included,
    amortised), after one untimed warm-up stream (the first one pays for cold caches: the
    rotary table, the embedding rows read from disk). The median of `runs` streams, by the
    wall clock and by the decoding thread's CPU time (which other jobs on the machine do not
    inflate as much)."""
    def stream() -> tuple[int, float, float]:
        n, t, c = 0, time.perf_counter(), time.thread_time()
        for _ in rt.trace_stream(TASKS[1], None, max_new_tokens=tokens, ignore_eos=True):
            n += 1
        return n, time.perf_counter() - t, time.thread_time() - c
    stream()
    done = [stream() for _ in range(max(1, runs))]
    n = done[0][0]
    wall = float(np.median([d[1] for d in done]))
    cpu = float(np.median([d[2] for d in done]))
    return {"tokens": n, "runs": len(done), "tokens_per_s": n / wall, "cpu_tokens_per_s": n / cpu,
            "per_token_ms": decode_split(rt, min(tokens, 128))}


def decode_split(rt, tokens: int) -> dict:
    """Where a trace token's time goes: the output head (head.onnx shortlist + float32
    re-score) vs the decode step (numpy, or decode.onnx), medians (CPU time of this thread)
    over one stream; and the same two run back to back on one state ("isolated": each keeps
    its weights in cache). The gap is the cache cost of alternating them: the head's int8
    table (3.9 MB) and the step's weights (~3.5 MB float32) do not both stay in L2."""
    head, step = [], []
    with rt._blas_threads():
        prompt = rt._start(TASKS[2], None, {})
        state, advance = prompt.state, rt._stepper(prompt)
        for _ in range(tokens):
            t0 = time.thread_time()
            pick = rt._next_token(state)
            t1 = time.thread_time()
            state = advance([pick])
            step.append(time.thread_time() - t1)
            head.append(t1 - t0)
        iso_head, iso_step = [], []
        for _ in range(tokens):
            t0 = time.thread_time()
            rt._next_token(state)
            iso_head.append(time.thread_time() - t0)
        for _ in range(tokens):
            t0 = time.thread_time()
            advance([pick])
            iso_step.append(time.thread_time() - t0)
    return {"head": _pct(head, 50) * 1e3, "step": _pct(step, 50) * 1e3,
            "head_isolated": _pct(iso_head, 50) * 1e3, "step_isolated": _pct(iso_step, 50) * 1e3,
            "backend": rt.decode_backend}


def bench_memory(rt_factory, n: int) -> dict:
    import tempfile
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, path in (("ram", None), ("store", os.path.join(tmp, "facts.json"))):
            rt = rt_factory(path)
            w, f = [], []
            for i in range(n):
                t = time.perf_counter()
                r = rt.memory.write(f"fact_{i}", f"the robot number {i} is out of service today")
                w.append((time.perf_counter() - t) * 1e3)
                assert r.success, r.message
            for i in range(n):
                t = time.perf_counter()
                rt.memory.forget(f"fact_{i}")
                f.append((time.perf_counter() - t) * 1e3)
            out[label] = {"write_p50_ms": _pct(w, 50), "forget_p50_ms": _pct(f, 50), "n": n}
    return out


def model_bytes(model_dir: Path) -> dict:
    cfg = json.loads((model_dir / "config.json").read_text())
    n_ternary = sum(int(np.prod(v["shape"])) for v in cfg["ternary"].values())
    packed = sum((model_dir / "weights" / f"{k}.t2").stat().st_size for k in cfg["ternary"])
    total = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    return {"ternary_weights": n_ternary, "packed_bytes": packed, "fp32_bytes": 4 * n_ternary,
            "packed_over_fp32": packed / max(1, 4 * n_ternary), "model_dir_bytes": total,
            "files": {p.relative_to(model_dir).as_posix(): p.stat().st_size
                      for p in sorted(model_dir.glob("*")) if p.is_file()}}


# ----------------------------------------------------------------------------- report
def targets(r: dict) -> list[tuple[str, bool | None, str]]:
    out = []

    def add(name, ok, figure):
        out.append((name, ok, figure))
    s1 = r["select"]["1"]
    add("e2e p50 <= 30 ms (1 thread)", s1["p50_ms"] <= 30, f"{s1['p50_ms']:.1f} ms")
    add("e2e p95 <= 45 ms (1 thread)", s1["p95_ms"] <= 45, f"{s1['p95_ms']:.1f} ms")
    add("trace >= 1000 tokens/s (1 thread)", r["trace"]["tokens_per_s"] >= 1000,
        f"{r['trace']['tokens_per_s']:.0f} tokens/s")
    rss = r["rss"]
    if "error" in rss:
        add("peak RSS <= 100 MB", None, rss["error"])
    else:
        add("peak RSS <= 100 MB", rss["peak_rss_mb"] <= 100,
            f"{rss['peak_rss_mb']:.1f} MB over {rss['selections']} selections")
    tc, fx = r.get("torch") or {}, r.get("fixed") or {}
    if "fixed_p50_ms" in tc and "p50_ms" in fx:
        ratio = tc["fixed_p50_ms"] / fx["p50_ms"]
        fig = (f"{ratio:.1f}x on the same work ({fx['p50_ms']:.1f} vs {tc['fixed_p50_ms']:.1f} ms torch, "
               f"{FIXED_TRACE}-token traces; torch weights: {tc['weights']})")
        if "p50_ms" in tc:
            fig += f"; select as called: {tc['p50_ms'] / s1['p50_ms']:.1f}x"
        add(">= 5x faster than torch eager fp32", ratio >= 5, fig)
    else:
        add(">= 5x faster than torch eager fp32", None, tc.get("error", "not measured"))
    st = r["stream"].get("sink", {})
    pts = st.get("points", {})
    if pts:
        first, last = pts[min(pts, key=int)], pts[max(pts, key=int)]
        ratio = last["ms_per_token"] / first["ms_per_token"]
        growth = last["rss_mb"] - first["rss_mb"]
        add(f"token {max(pts, key=int)} <= 1.2x token {min(pts, key=int)} (sink cache)", ratio <= 1.2, f"{ratio:.2f}x")
        add("RSS within 5 MB across the stream", abs(growth) <= 5, f"{growth:+.1f} MB")
    else:
        add("streaming at constant cost", None, st.get("error", "not measured"))
    mem = r["memory"]["ram"]
    add("memory write <= 1 ms", mem["write_p50_ms"] <= 1, f"{mem['write_p50_ms']:.2f} ms "
        f"(persisted: {r['memory']['store']['write_p50_ms']:.2f} ms)")
    add("memory forget <= 1 ms", mem["forget_p50_ms"] <= 1, f"{mem['forget_p50_ms']:.2f} ms "
        f"(persisted: {r['memory']['store']['forget_p50_ms']:.2f} ms)")
    b = r["bytes"]
    add("packed ternary <= 1/8 of fp32", b["packed_over_fp32"] <= 0.125,
        f"{b['packed_bytes']:,} B vs {b['fp32_bytes']:,} B fp32 (1/{1 / b['packed_over_fp32']:.1f})")
    return out


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# bitgen bench — {r['model_id']}", "",
             f"Machine: {m.get('cpu', '?')}, {m['cores']} cores, AVX2 {m.get('avx2')}, VNNI {m.get('vnni')}, "
             f"AVX-512 {m.get('avx512f')}; load average {m['load_avg_1m']} at start; "
             f"onnxruntime {m['onnxruntime']}, numpy {m['numpy']}, Python {m['python']}.", "",
             "| target | result | figure |", "| --- | --- | --- |"]
    for name, ok, fig in r["targets"]:
        lines.append(f"| {name} | {'PASS' if ok else ('FAIL' if ok is False else 'n/a')} | {fig} |")
    lines += ["", "| measurement | value |", "| --- | --- |"]
    for th, s in r["select"].items():
        parts = ", ".join(f"{k} {v:.2f}" for k, v in s["parts_p50_ms"].items() if k != "total")
        lines.append(f"| select e2e, {th} thread(s): p50 / p95 | {s['p50_ms']:.1f} / {s['p95_ms']:.1f} ms "
                     f"(p50 parts: {parts}) |")
        if "cpu_p50_ms" in s:
            lines.append(f"| select e2e CPU time, {th} thread(s): p50 / p95 | {s['cpu_p50_ms']:.1f} / "
                         f"{s['cpu_p95_ms']:.1f} ms |")
    base = r["select"]["1"].get("baseline")
    if base:
        s1 = r["select"]["1"]
        lines.append(f"| same run, taking turns: select with free trace decoding (trace_grammar=False), "
                     f"1 thread: p50 / p95 | {base['p50_ms']:.1f} / {base['p95_ms']:.1f} ms (trace part "
                     f"{base['parts_p50_ms'].get('trace', float('nan')):.2f}); grammar / free p50 "
                     f"{s1['p50_ms'] / base['p50_ms']:.2f}x |")
    lines.append(f"| the selection's own trace, 1 thread: tokens/s (p50; grammar, drafts and the forced "
                 f"selected: clause) | {r['select']['1'].get('trace_tokens_per_s_p50', float('nan')):.0f}"
                 + (f" (free decoding, same run: {base['trace_tokens_per_s_p50']:.0f})" if base and
                    "trace_tokens_per_s_p50" in base else "") + " |")
    lines.append(f"| vision encode (1 thread, p50) | {r['select']['1']['parts_p50_ms'].get('vision', float('nan')):.2f} ms |")
    tr = r["trace"]
    lines.append(f"| trace generation (1 thread, {tr['tokens']} tokens, median of {tr.get('runs', 1)}) | "
                 f"{tr['tokens_per_s']:.0f} tokens/s wall, {tr.get('cpu_tokens_per_s', float('nan')):.0f} "
                 f"tokens/s of CPU time |")
    sp = tr.get("per_token_ms")
    if sp:
        lines.append(f"| per trace token, p50 CPU: output head / decode step ({sp['backend']}) | "
                     f"{sp['head']:.3f} / {sp['step']:.3f} ms in the stream; "
                     f"{sp.get('head_isolated', float('nan')):.3f} / {sp.get('step_isolated', float('nan')):.3f} "
                     f"ms each run alone |")
    for label, mm in r["memory"].items():
        lines.append(f"| memory write / forget ({label}, p50) | {mm['write_p50_ms']:.2f} / {mm['forget_p50_ms']:.2f} ms |")
    if "peak_rss_mb" in r["rss"]:
        lines.append(f"| peak RSS, fresh process, {r['rss']['selections']} selections | {r['rss']['peak_rss_mb']:.1f} MB "
                     f"(after load {r['rss']['rss_after_load_mb']:.1f} MB; torch imported: {r['rss']['torch_imported']}) |")
    for kind, st in r["stream"].items():
        for p, v in st.get("points", {}).items():
            lines.append(f"| stream ({kind} cache), token {p} | {v['ms_per_token']:.3f} ms/token CPU "
                         f"({v.get('wall_ms_per_token', float('nan')):.3f} wall), RSS {v['rss_mb']:.1f} MB |")
    tc, fx = r.get("torch") or {}, r.get("fixed") or {}
    if "fixed_p50_ms" in tc and "p50_ms" in fx:
        lines.append(f"| fixed work ({FIXED_TRACE}-token trace), 1 thread, p50 / p95: runtime vs torch eager fp32 "
                     f"({tc['weights']}) | {fx['p50_ms']:.1f} / {fx['p95_ms']:.1f} vs {tc['fixed_p50_ms']:.1f} / "
                     f"{tc['fixed_p95_ms']:.1f} ms |")
    if "p50_ms" in tc:
        lines.append(f"| torch eager fp32 select (1 thread) p50 / p95 | {tc['p50_ms']:.1f} / {tc['p95_ms']:.1f} ms |")
    b = r["bytes"]
    lines.append(f"| ternary weights: packed / fp32 | {b['packed_bytes']:,} / {b['fp32_bytes']:,} B |")
    lines.append(f"| model directory on disk | {b['model_dir_bytes'] / 1e6:.1f} MB |")
    return "\n".join(lines) + "\n"


def run(args) -> dict:
    from bitgen_core.runtime import BitGenRuntime
    from bitgen_core.runtime.engine import default_model_dir
    if args.quick:
        args.iterations, args.rss_selections, args.stream_tokens = 10, 20, 300
    model_dir = Path(args.model) if args.model else default_model_dir()
    model = str(model_dir)
    r: dict = {"machine": machine(), "select": {}}
    rt1 = BitGenRuntime.load(model, threads=1)
    r["model_id"] = rt1.model_id
    free = BitGenRuntime.load(model, threads=1, trace_grammar=False)
    r["select"]["1"] = bench_select(rt1, args.iterations, baseline=free)
    del free
    r["trace"] = bench_trace(rt1, 256 if not args.quick else 64)
    rt2 = BitGenRuntime.load(model, threads=2)
    r["select"]["2"] = bench_select(rt2, args.iterations)
    del rt2
    r["memory"] = bench_memory(lambda p: BitGenRuntime.load(model, memory_path=p, threads=1), 20)
    r["rss"] = _run_child("rss", "--model", model, "--n", str(args.rss_selections))
    r["stream"] = {"sink": _run_child("stream", "--model", model, "--n", str(args.stream_tokens)),
                   "full": _run_child("stream", "--model", model, "--n", str(args.stream_tokens), "--full")}
    n_torch = max(5, args.iterations // 4)
    r["fixed"] = bench_fixed(rt1, n_torch)
    r["torch"] = _run_child("torch", "--model", model, "--n", str(n_torch),
                            *(("--checkpoint", args.checkpoint) if args.checkpoint else ()))
    r["bytes"] = model_bytes(model_dir)
    r["targets"] = targets(r)
    return r


def main(args) -> int:
    r = run(args)
    Path(args.out_json).write_text(json.dumps(r, indent=1, default=str) + "\n")
    md = markdown(r)
    Path(args.out_md).write_text(md)
    for name, ok, fig in r["targets"]:
        print(f"{'PASS' if ok else ('FAIL' if ok is False else 'N/A '):<5} {name}: {fig}")
    print(f"wrote {args.out_json} and {args.out_md}")
    return 0


def _child_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", required=True, choices=["rss", "stream", "torch"])
    ap.add_argument("--model")
    ap.add_argument("--checkpoint")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--full", action="store_true")
    a = ap.parse_args(argv)
    if a.child == "rss":
        out = child_rss(a.model, a.n)
    elif a.child == "stream":
        out = child_stream(a.model, a.n, a.full)
    else:
        out = child_torch(a.checkpoint, a.model, a.n)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    if "--child" in sys.argv:
        sys.exit(_child_main(sys.argv[1:]))
    parser = argparse.ArgumentParser(prog="python -m bitgen_core.bench")
    parser.add_argument("--model")
    parser.add_argument("--threads", type=int, default=1)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
