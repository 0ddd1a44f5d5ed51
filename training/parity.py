"""Parity of an exported model directory with the torch checkpoint it was exported from.

    python training/parity.py --checkpoint runs/stage2/model.pt --model-dir runs/export_v3 \
        [--dev data/dev/tasks.jsonl] [--memory-cases data/dev/memory_cases.jsonl] \
        [--n 240] [--traces 60] [--out-json parity.json]

The issue's bar for the torch-free runtime: on at least 200 varied inputs the same top-1 robot
on >= 99% and every robot probability within 0.02 of the torch model. The inputs are the
model's real use, not random text: the hand-written dev tasks (with their camera images where
they have one), the same tasks with dev memory facts stored (both memories get the same facts
through their own write paths), and tasks without facts after those facts are forgotten.
Each input goes through `BitGenModel.select` (torch, eager fp32, the ternary model's inference
form: eval mode and no gradients, so BitLinear sums int8 x ternary codes exactly, see
bitgen_core/quant.py) and `BitGenRuntime.select` (onnxruntime + numpy). On the first `--traces` inputs the
greedy reasoning traces are compared too (both force the "selected:" clause the same way).

Prints one line per figure with PASS/FAIL and writes the figures (and the worst inputs) as JSON.
The runtime side never imports torch; this script does (it runs the checkpoint).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):   # `python training/parity.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOP1_TARGET = 0.99
PROB_TARGET = 0.02


def load_inputs(dev: Path, memory_cases: Path | None, n: int) -> list[dict]:
    """Up to n inputs: {task, image (path or None), facts [(key, text)]}, dev tasks first, then
    the memory cases' tasks with their fact stored (and their paraphrases), in file order."""
    from bitgen_core.data.loaders import load_task_records
    recs = load_task_records(dev)
    out = [{"id": r["id"], "task": r["task"], "image": r.get("image"), "facts": []} for r in recs]
    if memory_cases is not None and memory_cases.is_file():
        for line in memory_cases.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            c = json.loads(line)
            fact = (c["fact"]["key"], c["fact"]["text"])
            for field in ("task", "task_paraphrase", "unrelated_task"):
                if c.get(field):
                    out.append({"id": f"{c['id']}:{field}", "task": c[field], "image": None, "facts": [fact]})
    return out[:n]


def measure(model, rt, inputs: list[dict], traces: int = 0) -> dict:
    """Run every input through both; returns the figures and the per-input differences."""
    import torch

    from training.evaluate import load_image
    rows, n_trace, trace_diffs = [], 0, []
    stored: list[tuple[str, str]] | None = None
    mem = None
    for i, x in enumerate(sorted(inputs, key=lambda x: json.dumps(x["facts"]))):
        if x["facts"] != stored:          # both memories hold exactly this input's facts
            for key in [f.key for f in rt.memory.list()]:
                rt.memory.forget(key)
            mem = model.new_memory() if x["facts"] else None
            for key, text in x["facts"]:
                model.write_fact(mem, key, text)
                res = rt.memory.write(key, text)
                if not res.success:
                    raise RuntimeError(f"runtime refused fact {key!r}: {res.message}")
            stored = x["facts"]
        image = load_image(x["image"])
        with torch.no_grad():
            ref = model.select(x["task"], image, memory=mem, trace_tokens=32 if n_trace < traces else 0)
        sel = rt.select(x["task"], image, max_trace_tokens=32 if n_trace < traces else 0)
        got = dict(zip(sel.robots, sel.confidences))
        diff = max(abs(ref["probabilities"][k] - got[k]) for k in got)
        pair = sorted({ref["robots"][0], sel.robots[0]})     # the two sides' top-1 robots
        rows.append({"id": x["id"], "top1_torch": ref["robots"][0], "top1_runtime": sel.robots[0],
                     "max_prob_diff": diff, "image": x["image"] is not None, "facts": len(x["facts"]),
                     "torch": {k: ref["probabilities"][k] for k in pair}, "runtime": {k: got[k] for k in pair}})
        if n_trace < traces:
            n_trace += 1
            if ref["reasoning"] != sel.reasoning:
                trace_diffs.append({"id": x["id"], "torch": ref["reasoning"], "runtime": sel.reasoning})
    diffs = np.array([r["max_prob_diff"] for r in rows])
    agree = sum(r["top1_torch"] == r["top1_runtime"] for r in rows)
    return {"n": len(rows), "with_image": sum(r["image"] for r in rows),
            "with_facts": sum(r["facts"] > 0 for r in rows),
            "top1_agreement": agree / max(1, len(rows)), "top1_disagreements": len(rows) - agree,
            "max_prob_diff": float(diffs.max()) if len(diffs) else float("nan"),
            "p99_prob_diff": float(np.percentile(diffs, 99)) if len(diffs) else float("nan"),
            "median_prob_diff": float(np.median(diffs)) if len(diffs) else float("nan"),
            "traces_compared": n_trace, "traces_identical": n_trace - len(trace_diffs), "trace_differences": trace_diffs,
            "worst": sorted(rows, key=lambda r: -r["max_prob_diff"])[:5],
            "disagreements": [r for r in rows if r["top1_torch"] != r["top1_runtime"]]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="torch checkpoint (training/stage2.py's model.pt)")
    ap.add_argument("--model-dir", required=True, help="the directory training/export.py made from it")
    ap.add_argument("--dev", default="data/dev/tasks.jsonl")
    ap.add_argument("--memory-cases", default="data/dev/memory_cases.jsonl")
    ap.add_argument("--n", type=int, default=240, help="inputs compared (the bar asks for >= 200)")
    ap.add_argument("--traces", type=int, default=60, help="of which this many also compare the trace")
    ap.add_argument("--out-json")
    a = ap.parse_args(argv)
    import torch
    from bitgen_core.errors import BitGenError
    from bitgen_core.model import BitGenModel
    from bitgen_core.runtime import BitGenRuntime
    torch.set_num_threads(1)
    try:
        model = BitGenModel.load(a.checkpoint).eval()
        rt = BitGenRuntime.load(a.model_dir, threads=1)
    except (BitGenError, OSError) as e:
        print(f"parity: {e}", file=sys.stderr)
        return 2
    dev = Path(a.dev)
    inputs = load_inputs(dev, Path(a.memory_cases) if a.memory_cases else None, a.n)
    t = time.perf_counter()
    r = measure(model, rt, inputs, a.traces)
    r.update(checkpoint=a.checkpoint, model_dir=a.model_dir, model_id=rt.model_id,
             seconds=round(time.perf_counter() - t, 1))
    ok_n = r["n"] >= 200
    ok_top1 = r["top1_agreement"] >= TOP1_TARGET
    ok_prob = r["max_prob_diff"] <= PROB_TARGET
    r["pass"] = bool(ok_n and ok_top1 and ok_prob)
    print(f"{'PASS' if ok_n else 'FAIL'} inputs >= 200: {r['n']} ({r['with_image']} with an image, "
          f"{r['with_facts']} with memory facts)")
    print(f"{'PASS' if ok_top1 else 'FAIL'} same top-1 >= 99%: {r['top1_agreement']:.4f} "
          f"({r['top1_disagreements']} differ)")
    print(f"{'PASS' if ok_prob else 'FAIL'} probabilities within {PROB_TARGET}: max {r['max_prob_diff']:.5f}, "
          f"p99 {r['p99_prob_diff']:.5f}, median {r['median_prob_diff']:.6f}")
    print(f"info  traces identical: {r['traces_identical']}/{r['traces_compared']}")
    for d in r["disagreements"]:
        print(f"info  top-1 differs on {d['id']}: torch {d['torch']}, runtime {d['runtime']}")
    for d in r["trace_differences"]:
        print(f"info  trace differs on {d['id']}:\n      torch   {d['torch']!r}\n      runtime {d['runtime']!r}")
    if a.out_json:
        Path(a.out_json).write_text(json.dumps(r, indent=1) + "\n")
    return 0 if r["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
