"""Grammar-constrained trace decoding against free decoding, on the hand-written dev set.

    python scripts/trace_grammar_check.py [--model-dir DIR] [--dev data/dev/tasks.jsonl] [--json OUT]

Each dev task (with its image when it has one) is selected by two runtimes over the same model
directory, one with the trace grammar (the default, runtime/constrained.py TraceGrammar plus
runs of forced tokens in one decoder pass) and one without (`trace_grammar=False`: free greedy
decoding up to the forced "selected:" clause, the runtime before the grammar), interleaved
task by task. Reported: traces identical, well-formed (bitgen_core.data.rules.parse_rationale)
under each, robot probabilities identical (the grammar only touches the trace), the CPU time
of this thread per selection under each (median and total), the number of output-head calls
and decoder passes per selection, and the traces that differ.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bitgen_core.data.rules import parse_rationale          # noqa: E402
from bitgen_core.runtime import BitGenRuntime                 # noqa: E402
from training.evaluate import load_image                      # noqa: E402


class _Counter:
    """Counts calls of the output head session and of the decoder passes of one runtime."""

    def __init__(self, rt):
        self.head = self.passes = 0
        sess, make = rt._s["head"], rt._stepper
        outer = self

        class Head:
            def run(self, *a, **kw):
                outer.head += 1
                return sess.run(*a, **kw)
        rt._s["head"] = Head()

        def stepper(prompt, cache=None):
            step = make(prompt, cache)

            def counted(toks):
                outer.passes += 1
                return step(toks)
            return counted
        rt._stepper = stepper


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default=None, help="model directory (default: the shipped one)")
    ap.add_argument("--dev", default=str(ROOT / "data" / "dev" / "tasks.jsonl"))
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    dev = Path(args.dev)
    recs = [json.loads(line) for line in dev.read_text().splitlines() if line.strip()]
    rts = {"grammar": BitGenRuntime.load(args.model_dir), "free": BitGenRuntime.load(args.model_dir, trace_grammar=False)}
    counts = {k: _Counter(rt) for k, rt in rts.items()}
    cpu = {k: [] for k in rts}
    traces = {k: [] for k in rts}
    probs_equal = 0
    for r in recs:
        img = load_image(str(dev.parent / r["image"])) if r.get("image") else None
        out = {}
        for name, rt in rts.items():
            t = time.thread_time()
            out[name] = rt.select(r["task"], img, max_trace_tokens=32)
            cpu[name].append((time.thread_time() - t) * 1e3)
            traces[name].append(out[name].reasoning)
        probs_equal += out["grammar"].confidences == out["free"].confidences
    n = len(recs)
    same = sum(a == b for a, b in zip(traces["grammar"], traces["free"]))
    res = {"tasks": n, "traces_identical": same, "probabilities_identical": probs_equal,
           "load_average": os.getloadavg()[0]}
    for name, rt in rts.items():
        res[name] = {"well_formed": sum(parse_rationale(t, rt.catalog) is not None for t in traces[name]),
                     "cpu_ms_median": float(np.median(cpu[name])), "cpu_s_total": float(np.sum(cpu[name]) / 1e3),
                     "head_calls_per_select": counts[name].head / n,
                     "decoder_passes_per_select": counts[name].passes / n}
    res["cpu_ratio_grammar_over_free"] = res["grammar"]["cpu_s_total"] / res["free"]["cpu_s_total"]
    res["differing"] = [{"task": r["task"], "free": a, "grammar": b}
                        for r, a, b in zip(recs, traces["free"], traces["grammar"]) if a != b]
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
