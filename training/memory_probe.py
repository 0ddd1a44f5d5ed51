"""How selective is a model's memory read? Each fact's coefficient in the read, per case.

    python training/memory_probe.py --model-dir runs/export_v3 --memory-cases data/dev/memory_cases.jsonl \
        [--out reports/retrain_v3/memory_probe.json]

For every memory case the case's fact is written alone into a fresh runtime memory (as
`bitgen memory add` does) and read with the task, its paraphrases and the unrelated tasks. The
read is z_r = lam w C^-1 M0 + sum_i r_i c_i z_i with the fact's least-squares coefficient
a = w C^-1 w_f^T, c = a (linear read), c = g(a) = sigmoid(k (a - t)) (gated read) or c = 1
(recall read), and r
the fact's scope for the query's tokens (1 for models without one). A selective read has a
share r c near 1 for the task and its paraphrases and near 0 for unrelated tasks. Reports a,
the scope and the share per query kind, overall and for availability / site facts. Torch-free.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bitgen_core.memory_np import gate  # noqa: E402
from bitgen_core.runtime import BitGenRuntime  # noqa: E402
from training.evaluate import load_memory_cases  # noqa: E402

KINDS = ("task", "paraphrase", "unrelated")


def probe(rt: BitGenRuntime, cases: list[dict]) -> dict:
    """Per query kind: mean / min / max of a and of the read's share c, and the rows."""
    base = rt.memory._base
    tokens = lambda text: rt.tokenizer.encode(text, rt.config.max_task_tokens)  # noqa: E731
    rows = []
    for c in cases:
        mem = base.fresh()
        fact = c["facts"][0]
        mem.write(rt.encode_fact(fact["text"]), fact["key"], tokens=tokens(fact["text"]))
        kind = "availability" if fact["key"].endswith("-status") else "site"
        queries = ([("task", c["task"])] + [("paraphrase", p) for p in c["paraphrases"]]
                   + [("unrelated", u) for u in c["unrelated"]])
        for qkind, text in queries:
            ids = tokens(text)
            _, used = mem.read_with_facts(rt._encode_ids(ids), query_tokens=ids)
            a, r = used[0].weight, used[0].relevance
            coef = 1.0 if base.recall else float(gate(a, base.gate, base.gate_threshold)) if base.gate > 0 else a
            share = coef * r
            rows.append({"case": c["id"], "fact": kind, "query": qkind, "a": round(a, 4),
                         "scope": round(r, 4), "share": round(share, 4)})
    summary = {}
    for group in ("all", "availability", "site"):
        for qkind in KINDS:
            sel = [r for r in rows if r["query"] == qkind and group in ("all", r["fact"])]
            if sel:
                a, s = np.array([r["a"] for r in sel]), np.array([r["share"] for r in sel])
                summary[f"{group}/{qkind}"] = {"n": len(sel), "a_mean": round(float(a.mean()), 3),
                                               "scope_mean": round(float(np.mean([r["scope"] for r in sel])), 3),
                                               "share_mean": round(float(s.mean()), 3),
                                               "share_gt_half": round(float((s > 0.5).mean()), 3)}
    return {"gate": base.gate, "gate_threshold": base.gate_threshold, "summary": summary, "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--memory-cases", required=True)
    ap.add_argument("--out", default=None, help="write the JSON here (default: print the summary)")
    a = ap.parse_args(argv)
    rt = BitGenRuntime.load(a.model_dir)
    result = probe(rt, load_memory_cases(a.memory_cases, rt.catalog))
    result["model_id"] = rt.model_id
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"{rt.model_id}: gate k={result['gate']:g} t={result['gate_threshold']:g}")
    for key, v in result["summary"].items():
        print(f"  {key:<24} n={v['n']:<3} a={v['a_mean']:+.3f} share={v['share_mean']:+.3f} "
              f"share>0.5={v['share_gt_half']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
