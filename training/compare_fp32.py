"""Ternary model vs its fp32 twin, record by record, on the same sets with the same code path.

    python training/compare_fp32.py --ternary runs/stage2/model.pt --fp32 runs/fp32/stage2/model.pt \
        --dev data/dev/tasks.jsonl --memory-cases data/dev/memory_cases.jsonl \
        --heldout runs/data/corpus/heldout.jsonl --val runs/data/corpus/val.jsonl \
        [--ternary-model-dir runs/export_v3] --out reports/fp32_twin

Issue 4's target "ternary model within 1 point of the same model in fp32 on dev top-1". The
fp32 twin is the same architecture and recipe trained with `model.overrides.quantize=false`
(every BitLinear runs F.linear on its latent weights; it has no ternary export form), so both
checkpoints are read through the torch path `BitGenModel.select` (evaluate.py's
`CheckpointPredictor`): same tokenizer, prompt layout, images, memory writes and forgets. The
exported ternary model can be added (`--ternary-model-dir`, the torch-free runtime, as
evaluate.py reads it); the headline pair stays torch vs torch.

Per set: top-1 / recall@3 / F1 of each system, and for each pair the paired top-1 table
(both right, only A right, only B right, both wrong), the difference in points, its 95% CI
(paired bootstrap over records, seeded) and McNemar's exact two-sided p on the discordant
records. Memory cases: efficacy / paraphrase / locality / forget per system.
Writes OUT/comparison.json, OUT/predictions.jsonl (every record: gold, each system's ranking and
probabilities) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):                       # `python training/compare_fp32.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from training import evaluate as E
from training import metrics as M


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p: binomial(b + c, 1/2) tail at min(b, c), doubled, capped at 1."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired(hits_a: list[float], hits_b: list[float], n_boot: int = 10000, seed: int = 0) -> dict:
    """Paired top-1 comparison of system A vs B on the same records (difference = A - B)."""
    a, b = np.asarray(hits_a, bool), np.asarray(hits_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"{a.size} vs {b.size} records")
    n = int(a.size)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    d = a.astype(float) - b.astype(float)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1) if n else np.zeros(1)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {"n": n, "both_right": int((a & b).sum()), "only_a_right": only_a, "only_b_right": only_b,
            "both_wrong": int((~a & ~b).sum()), "a_top1": float(a.mean()) if n else float("nan"),
            "b_top1": float(b.mean()) if n else float("nan"),
            "diff_points": 100 * float(d.mean()) if n else float("nan"),
            "diff_ci95_points": [100 * float(lo), 100 * float(hi)],
            "one_record_points": 100 / n if n else float("nan"),
            "mcnemar_exact_p": mcnemar_exact_p(only_a, only_b)}


def load_systems(args) -> dict:
    systems = {"ternary": E.CheckpointPredictor(args.ternary, "ternary", args.threads),
               "fp32": E.CheckpointPredictor(args.fp32, "fp32", args.threads)}
    flags = {k: s.model.config.quantize for k, s in systems.items()}
    if flags != {"ternary": True, "fp32": False}:
        raise SystemExit(f"expected a ternary and an fp32 checkpoint, got quantize={flags}")
    if args.ternary_model_dir:
        systems["ternary_runtime"] = E.RuntimePredictor(args.ternary_model_dir, args.threads,
                                                        max_trace_tokens=0)
    return systems


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ternary", required=True, help="ternary torch checkpoint (stage 2 model.pt)")
    ap.add_argument("--fp32", required=True, help="fp32 twin torch checkpoint (quantize: false)")
    ap.add_argument("--ternary-model-dir", help="the ternary model exported (torch-free runtime)")
    ap.add_argument("--dev", required=True, help="hand-written dev set JSONL")
    ap.add_argument("--memory-cases", help="memory-edit cases JSONL")
    ap.add_argument("--heldout", help="held-out generator templates JSONL")
    ap.add_argument("--val", help="generator validation split JSONL")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument("--logs", nargs=2, metavar=("TERNARY_METRICS", "FP32_METRICS"),
                    help="the two runs' stage-2 metrics.jsonl: their evaluations side by side, step by step")
    args = ap.parse_args(argv)

    systems = load_systems(args)
    catalog = systems["ternary"].model.catalog
    dev = E.load_records(args.dev, catalog)
    img = [r for r in dev if r["image_decides"] and r["image"]]
    sets = {"dev": (dev, True), "image_with": (img, True), "image_without": (img, False)}
    for name in ("heldout", "val"):
        if getattr(args, name):
            sets[name] = (E.load_records(getattr(args, name), catalog), True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"checkpoints": {"ternary": args.ternary, "fp32": args.fp32,
                              "ternary_model_dir": args.ternary_model_dir},
              "sets": {}, "paired": {}, "memory": {}, "seconds": {}}
    rows = []
    for set_name, (records, use_images) in sets.items():
        golds = [r["robots"] for r in records]
        hits = {}
        result["sets"][set_name] = {}
        for name, s in systems.items():
            t0 = time.perf_counter()
            preds, m = E.evaluate_set(s, records, catalog, use_images)
            result["seconds"][f"{set_name}/{name}"] = round(time.perf_counter() - t0, 1)
            result["sets"][set_name][name] = {k: m[k] for k in ("n", "top1", "top1_ci95", "recall_at_3",
                                                                 "f1_at_threshold", "ece")}
            hits[name] = [M.top1_hit(p, g) for p, g in zip(preds, golds)]
            for r, p, h in zip(records, preds, hits[name]):
                rows.append({"set": set_name, "id": r["id"], "system": name, "gold": r["robots"],
                             "robots": p.robots, "probs": [round(x, 5) for x in p.probs], "top1_hit": bool(h)})
            print(f"  {set_name:14s} {name:16s} top-1 {m['top1']:.4f}  recall@3 {m['recall_at_3']:.4f}  "
                  f"({result['seconds'][f'{set_name}/{name}']}s)", file=sys.stderr)
        pairs = [("ternary", "fp32")] + ([("ternary_runtime", "fp32"), ("ternary_runtime", "ternary")]
                                         if "ternary_runtime" in systems else [])
        result["paired"][set_name] = {f"{a}-{b}": paired(hits[a], hits[b], seed=args.seed) for a, b in pairs}
    if args.memory_cases:
        cases = E.load_memory_cases(args.memory_cases, catalog)
        for name, s in systems.items():
            result["memory"][name] = E.evaluate_memory(s, cases)[1]
    if args.logs:
        result["training_evals"] = training_evals(*args.logs)
    (out / "comparison.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(markdown(result))
    return result


EVAL_KEYS = ("dev_top1", "dev_recall_at_3", "dev_f1", "dev_image_with_top1", "dev_image_without_top1",
             "val_top1", "heldout_top1")


def training_evals(ternary_log: str, fp32_log: str) -> list[dict]:
    """Stage 2's own torch evaluations (metrics.jsonl rows with dev_top1) of both runs, by step."""
    def evals(path):
        rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        return {(r["step"], r["phase"]): r for r in rows if "dev_top1" in r}
    a, b = evals(ternary_log), evals(fp32_log)
    out = []
    for key in sorted(set(a) & set(b), key=lambda k: (k[0], k[1] == "final")):
        row = {"step": key[0], "phase": key[1]}
        for k in EVAL_KEYS:
            if k in a[key] and k in b[key]:
                row[k] = {"ternary": a[key][k], "fp32": b[key][k], "diff_points": 100 * (a[key][k] - b[key][k])}
        row["elapsed_s"] = {"ternary": a[key].get("elapsed_s"), "fp32": b[key].get("elapsed_s")}
        out.append(row)
    return out


def markdown(result: dict) -> str:
    lines = ["| set | n | ternary top-1 | fp32 top-1 | ternary - fp32 (points) | 95% CI (paired bootstrap) "
             "| only ternary right / only fp32 right | McNemar p |",
             "|---|---|---|---|---|---|---|---|"]
    for set_name, p in result["paired"].items():
        q = p["ternary-fp32"]
        lines.append(f"| {set_name} | {q['n']} | {q['a_top1']:.4f} | {q['b_top1']:.4f} | {q['diff_points']:+.2f} "
                     f"| [{q['diff_ci95_points'][0]:+.2f}, {q['diff_ci95_points'][1]:+.2f}] "
                     f"| {q['only_a_right']} / {q['only_b_right']} | {q['mcnemar_exact_p']:.3f} |")
    if result["memory"]:
        keys = ("efficacy", "paraphrase", "locality", "forget")
        lines += ["", "| memory (system) | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for name, m in result["memory"].items():
            lines.append(f"| {name} | " + " | ".join(f"{m[k]:.3f}" if m[k] is not None else "-" for k in keys) + " |")
    if result.get("training_evals"):
        lines += ["", "| stage-2 eval (step) | " + " | ".join(f"{k} ternary / fp32" for k in EVAL_KEYS) + " |",
                  "|---|" + "---|" * len(EVAL_KEYS)]
        for row in result["training_evals"]:
            lines.append(f"| {row['step']} {row['phase']} | " + " | ".join(
                f"{row[k]['ternary']:.4f} / {row[k]['fp32']:.4f}" if k in row else "-" for k in EVAL_KEYS) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
