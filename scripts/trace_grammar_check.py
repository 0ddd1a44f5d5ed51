"""Grammar-constrained trace decoding against free decoding, on the hand-written dev set.

    python scripts/trace_grammar_check.py [--model-dir DIR] [--dev data/dev/tasks.jsonl] [--json OUT]

Each dev task (with its image when it has one) is selected by three runtimes over the same
model directory, interleaved task by task:
  grammar            the default: the trace grammar (runtime/constrained.py TraceGrammar, runs
                     of forced tokens in one decoder pass) and the capable-list draft fed ahead
                     and verified (RuleDraft)
  grammar_no_draft   the grammar without the draft (`trace_draft=False`)
  free               free greedy decoding up to the forced "selected:" clause
                     (`trace_grammar=False`, the runtime before the grammar)
Reported: traces identical (grammar vs free; grammar vs grammar_no_draft, which must be all),
well-formed (bitgen_core.data.rules.parse_rationale) under each, robot probabilities identical
(the grammar only touches the trace), the CPU time of this thread per selection under each
(median and total), output-head calls, decoder passes, tokens fed and draft tokens rewound per
selection, and the traces that differ.
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
        self.head = self.passes = self.fed = self.rewound = 0
        sess, make = rt._s["head"], rt._stepper
        outer = self

        class Head:
            def run(self, *a, **kw):
                outer.head += 1
                return sess.run(*a, **kw)
        rt._s["head"] = Head()

        def stepper(prompt, cache=None):
            step = make(prompt, cache)

            class Counted:      # the runtime's step, counted (drafts / room / rewind passed on)
                drafts = getattr(step, "drafts", False)

                def __call__(self, toks, all_states=False):
                    outer.passes += 1
                    outer.fed += len(toks)
                    return step(toks, all_states) if all_states else step(toks)

                def room(self, n):
                    return step.room(n)

                def rewind(self, n):
                    outer.rewound += n
                    step.rewind(n)
            return Counted()
        rt._stepper = stepper


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default=None, help="model directory (default: the shipped one)")
    ap.add_argument("--dev", default=str(ROOT / "data" / "dev" / "tasks.jsonl"))
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()
    dev = Path(args.dev)
    recs = [json.loads(line) for line in dev.read_text().splitlines() if line.strip()]
    rts = {"grammar": BitGenRuntime.load(args.model_dir),
           "grammar_no_draft": BitGenRuntime.load(args.model_dir, trace_draft=False),
           "free": BitGenRuntime.load(args.model_dir, trace_grammar=False)}
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
        probs_equal += out["grammar"].confidences == out["free"].confidences == out["grammar_no_draft"].confidences
    n = len(recs)
    same = sum(a == b for a, b in zip(traces["grammar"], traces["free"]))
    drafted_same = sum(a == b for a, b in zip(traces["grammar"], traces["grammar_no_draft"]))
    res = {"tasks": n, "traces_identical": same, "probabilities_identical": probs_equal,
           "traces_identical_draft_vs_no_draft": drafted_same,
           "load_average": os.getloadavg()[0]}
    for name, rt in rts.items():
        res[name] = {"well_formed": sum(parse_rationale(t, rt.catalog) is not None for t in traces[name]),
                     "cpu_ms_median": float(np.median(cpu[name])), "cpu_s_total": float(np.sum(cpu[name]) / 1e3),
                     "head_calls_per_select": counts[name].head / n,
                     "decoder_passes_per_select": counts[name].passes / n,
                     "tokens_fed_per_select": counts[name].fed / n,
                     "draft_tokens_rewound_per_select": counts[name].rewound / n}
    res["cpu_ratio_grammar_over_free"] = res["grammar"]["cpu_s_total"] / res["free"]["cpu_s_total"]
    res["cpu_ratio_draft_over_no_draft"] = res["grammar"]["cpu_s_total"] / res["grammar_no_draft"]["cpu_s_total"]
    res["differing"] = [{"task": r["task"], "free": a, "grammar": b}
                        for r, a, b in zip(recs, traces["free"], traces["grammar"]) if a != b]
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
