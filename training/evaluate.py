"""Evaluate BitGen and the baselines on the same sets and write one report.

    python training/evaluate.py --model-dir models/default --dev data/dev/tasks.jsonl \
        --memory-cases data/dev/memory_cases.jsonl --train-data DIR_OR_JSONL \
        --heldout HELDOUT.jsonl --out reports/eval [--train-logs LOG ...] [--baselines-only]

Every system is a `Predictor`: predict(task, image_path | None, facts) -> Prediction (all
catalog robots best first, a sigmoid per robot, an optional reasoning trace). BitGen plugs in
through its torch-free runtime (`RuntimePredictor`), the baselines through `BaselinePredictor`,
so tests drive the whole pipeline with a real simple predictor. The issue's targets are printed
as PASS/FAIL lines with the measured figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Protocol, Sequence

if __package__ in (None, ""):                       # `python training/evaluate.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bitgen_core.catalog import RobotCatalog
from bitgen_core.data.loaders import load_task_records
from bitgen_core.errors import BitGenError, InputError
from training import metrics as M
from training.baselines import BASELINES, Baseline, build_baselines, record_text
from training.report import (BITGEN, check_targets, format_targets, load_training_logs,
                             write_report)

_HELDOUT_SPLITS = {"heldout", "held_out", "dev", "test", "val", "validation"}


# --- data -----------------------------------------------------------------------------------
def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} not found: give an existing JSONL file")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{n} is not valid JSON ({e.msg})") from None
    return out


def _resolve_image(image: str | None, base: Path) -> str | None:
    if not image:
        return None
    p = Path(image)
    return str(p if p.is_absolute() else base / p)


def load_records(path: str | Path, catalog: RobotCatalog) -> list[dict]:
    """Task records (ARCHITECTURE.md "Data records") through the data package's validating
    loader: robots as catalog keys, image paths resolved; ids default to the line index."""
    recs = load_task_records(path, catalog)
    for i, r in enumerate(recs):
        r["id"] = str(r["id"] if r.get("id") is not None else i)
    return recs


def load_train_records(path: str | Path, catalog: RobotCatalog) -> list[dict]:
    """Training records from a JSONL file, or from a folder (train.jsonl, else every *.jsonl),
    leaving out records whose `split` marks them as held out."""
    p = Path(path)
    if p.is_dir():
        files = [p / "train.jsonl"] if (p / "train.jsonl").is_file() else sorted(p.glob("*.jsonl"))
        if not files:
            raise InputError(f"no .jsonl files in {p}: point --train-data at generator output")
    else:
        files = [p]
    recs = [r for f in files for r in load_records(f, catalog)]
    return [r for r in recs if str(r.get("split") or "train").lower() not in _HELDOUT_SPLITS]


def _first(d: dict, *names, default=None):
    for n in names:
        if d.get(n) is not None:
            return d[n]
    return default


def load_memory_cases(path: str | Path, catalog: RobotCatalog) -> list[dict]:
    """Memory-edit cases, one per line, as `bitgen_core.data.generate` writes them:
    {"id", "task", "image"?, "fact": {"key", "text"}, "robots_before": [...],
     "robots_after": [...], "task_paraphrase"?, "fact_paraphrase"?, "unrelated_task"?}
    Lists are accepted too: "paraphrases": [task, ...], "unrelated": [task | {"task"}, ...],
    "facts": [{"key", "text"}, ...]; and "before"/"gold_before", "after"/"gold_after".
    """
    base = Path(path).resolve().parent
    keys = catalog.keys
    cases = []
    for i, c in enumerate(read_jsonl(path)):
        facts = _first(c, "facts") or ([c["fact"]] if c.get("fact") else [])
        before = _first(c, "robots_before", "before", "gold_before", "robots")
        after = _first(c, "robots_after", "after", "gold_after", "expected_after")
        if not c.get("task") or not facts or not before or not after:
            raise InputError(f"{path}: memory case {i + 1} needs task, fact, robots_before "
                             "and robots_after")
        facts = [{"key": str(f.get("key") or f"fact{j}"), "text": f["text"]}
                 for j, f in enumerate(facts)]
        unrelated = [*([{"task": c["unrelated_task"], "robots": c.get("unrelated_robots")}]
                       if c.get("unrelated_task") else []), *(c.get("unrelated") or [])]
        cases.append({
            "id": str(c.get("id", i)), "task": c["task"], "facts": facts,
            "image": _resolve_image(c.get("image"), base),
            "before": [keys[catalog.index(k)] for k in before],
            "after": [keys[catalog.index(k)] for k in after],
            "paraphrases": [*([c["task_paraphrase"]] if c.get("task_paraphrase") else []),
                            *(c.get("paraphrases") or [])],
            "fact_paraphrases": [*([c["fact_paraphrase"]] if c.get("fact_paraphrase") else []),
                                 *(c.get("fact_paraphrases") or [])],
            "unrelated": [u["task"] if isinstance(u, dict) else u for u in unrelated],
            "unrelated_gold": [[keys[catalog.index(k)] for k in u.get("robots") or []]
                               if isinstance(u, dict) else [] for u in unrelated]})
    return cases


# --- predictors -----------------------------------------------------------------------------
class Predictor(Protocol):
    name: str

    def predict(self, task: str, image_path: str | None,
                facts: Sequence[dict]) -> M.Prediction: ...


def load_image(path: str | None) -> np.ndarray | None:
    """HxWx3 uint8 RGB, as the runtime takes it (None stays None: no image)."""
    if not path:
        return None
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def sync_facts(current: dict[str, str], facts: Sequence[dict], write, forget) -> None:
    """Make a stateful memory hold exactly `facts`: forget what is gone or changed, write
    what is new. `current` (key -> text) is updated in place."""
    want = {f["key"]: f["text"] for f in facts}
    for key in [k for k, t in current.items() if want.get(k) != t]:
        forget(key)
        del current[key]
    for key, text in want.items():
        if key not in current:
            write(key, text)
            current[key] = text


class BaselinePredictor:
    """A text baseline behind the Predictor interface (the image is ignored)."""
    def __init__(self, baseline: Baseline):
        self.baseline, self.name = baseline, baseline.name

    def predict(self, task, image_path, facts):
        return self.predict_many([(task, image_path, facts)])[0]

    def predict_many(self, queries):
        return self.baseline.predict([record_text(t, f) for t, _, f in queries])


class RuntimePredictor:
    """BitGen through the torch-free runtime. Facts are synced into its episodic memory with
    write/forget before each select, so memory cases exercise the real edit and forget path."""
    name = BITGEN

    def __init__(self, model_dir: str | Path, threads: int = 1, max_trace_tokens: int = 96):
        try:    # lazy: the baselines run on machines without a model or its runtime
            from bitgen_core.runtime import BitGenRuntime
        except ImportError as e:
            raise BitGenError(f"the BitGen runtime cannot be imported ({e}); run with "
                              "--baselines-only") from None
        self.rt = BitGenRuntime.load(model_dir=model_dir, threads=threads)
        self.model_dir, self.max_trace_tokens = Path(model_dir), max_trace_tokens
        self._facts: dict[str, str] = {}

    def _write(self, key, text):
        self._check(self.rt.memory.write(key, text), "write", key)

    def _forget(self, key):
        self._check(self.rt.memory.forget(key), "forget", key)

    @staticmethod
    def _check(result, action, key):
        if not result.success:
            raise BitGenError(f"memory {action} of {key!r} failed: {result.message}")

    def predict(self, task, image_path, facts):
        sync_facts(self._facts, facts, self._write, self._forget)
        image = load_image(image_path)
        sel = self.rt.select(task, image=image, top_k=3, max_trace_tokens=self.max_trace_tokens)
        cat = self.rt.catalog
        return M.Prediction([cat.keys[cat.index(r)] for r in sel.robots],
                            [float(p) for p in sel.confidences], sel.reasoning,
                            float(sel.latency_ms.get("total", float("nan"))))


class CheckpointPredictor:
    """A torch checkpoint through `BitGenModel.select` (the fp32 twin of the shipped model, or
    any checkpoint before export); facts go into a deployment EpisodicMemory by write/forget."""

    def __init__(self, checkpoint: str | Path, name: str = "fp32", threads: int = 1,
                 max_trace_tokens: int = 0):
        import torch
        from bitgen_core.model import BitGenModel
        torch.set_num_threads(threads)
        self.name, self.max_trace_tokens = name, max_trace_tokens
        self.model = BitGenModel.load(checkpoint).eval()
        self.memory, self._facts = self.model.new_memory(), {}

    def predict(self, task, image_path, facts):
        sync_facts(self._facts, facts,
                   lambda k, t: self.model.write_fact(self.memory, k, t),
                   self.memory.forget)
        out = self.model.select(task, load_image(image_path), self.memory if self._facts else None,
                                trace_tokens=self.max_trace_tokens)
        return M.Prediction(out["robots"], out["confidences"], out.get("reasoning"))


def run_queries(predictor, queries: list[tuple]) -> list[M.Prediction]:
    if not queries:
        return []
    if hasattr(predictor, "predict_many"):
        return predictor.predict_many(queries)
    return [predictor.predict(*q) for q in queries]


# --- evaluation -----------------------------------------------------------------------------
def evaluate_set(predictor, records, catalog, use_images=True, threshold=0.5):
    preds = run_queries(predictor, [(r["task"], r["image"] if use_images else None, r["facts"])
                                    for r in records])
    return preds, M.selection_metrics(preds, [r["robots"] for r in records], catalog.keys,
                                      threshold)


def evaluate_memory(predictor, cases) -> tuple[list[M.MemoryOutcome], dict]:
    """Per case: answer without the fact, with it (task, paraphrases, unrelated probes), and
    after forgetting it again — in that order, so a stateful memory is really edited."""
    outcomes = []
    for c in cases:
        img, f = c["image"], c["facts"]
        top1 = lambda qs: [p.robots[0] for p in run_queries(predictor, qs)]  # noqa: E731
        before = top1([(c["task"], img, [])])[0]
        unrel_without = top1([(u, None, []) for u in c["unrelated"]])
        after = top1([(c["task"], img, f)])[0]
        para = top1([(p, img, f) for p in c["paraphrases"]])
        unrel_with = top1([(u, None, f) for u in c["unrelated"]])
        # the same fact in other words (written under the same key, so it replaces the first)
        fact_para = top1([(c["task"], img, [{**f[0], "text": t}]) for t in c["fact_paraphrases"]])
        restored = top1([(c["task"], img, [])])[0]
        outcomes.append(M.MemoryOutcome(c["id"], before, after, restored, c["before"],
                                        c["after"], para, unrel_without, unrel_with, fact_para,
                                        c["unrelated_gold"]))
    return outcomes, M.memory_metrics(outcomes)


def load_prediction_file(path, records, catalog) -> dict[str, M.Prediction]:
    """`bitgen select --batch` output ({"id", "robots", "confidences"} per line) by record id."""
    by_id = {}
    for p in read_jsonl(path):
        by_id[str(p["id"])] = M.Prediction([catalog.keys[catalog.index(r)] for r in p["robots"]],
                                           [float(c) for c in p["confidences"]],
                                           p.get("reasoning"))
    missing = [r["id"] for r in records if r["id"] not in by_id]
    if missing:
        raise InputError(f"{path} has no prediction for {len(missing)} dev records "
                         f"(first: {missing[0]!r})")
    return by_id


def model_size(model_dir: Path) -> dict:
    files = [p for p in model_dir.rglob("*") if p.is_file()]
    return {"total_bytes": sum(p.stat().st_size for p in files),
            "files": {str(p.relative_to(model_dir)): p.stat().st_size for p in sorted(files)}}


def evaluate_all(systems: list, catalog: RobotCatalog, dev=None, heldout=None,
                 memory_cases=None, threshold: float = 0.5, log=print) -> dict:
    """Run every system on every given set; returns the results dict the report is built
    from (per set, per system: `training.metrics.selection_metrics`)."""
    results = {"systems": [s.name for s in systems], "sets": {}, "memory": {}, "traces": {},
               "catalog": catalog.keys, "set_sizes": {}}
    sets = {}
    if dev:
        sets["dev"] = (dev, True)
        img = [r for r in dev if r["image_decides"] and r["image"]]
        if img:
            sets["image_with"], sets["image_without"] = (img, True), (img, False)
    if heldout:
        sets["heldout"] = (heldout, True)
    bitgen_preds = {}
    for set_name, (records, use_images) in sets.items():
        results["set_sizes"][set_name] = len(records)
        results["sets"][set_name] = {}
        for s in systems:
            t0 = time.perf_counter()
            preds, m = evaluate_set(s, records, catalog, use_images, threshold)
            results["sets"][set_name][s.name] = m
            log(f"  {set_name:14s} {s.name:16s} top-1 {m['top1']:.3f}  recall@3 "
                f"{m['recall_at_3']:.3f}  ({time.perf_counter() - t0:.1f}s)")
            if s.name == BITGEN:
                bitgen_preds[set_name] = preds
    resolve = lambda n: catalog.keys[catalog.index(n)]  # noqa: E731
    for set_name in ("dev", "heldout"):
        if set_name in bitgen_preds:
            results["traces"][set_name] = M.trace_metrics(bitgen_preds[set_name], resolve,
                                                          threshold)
    if "dev" in bitgen_preds:
        lat = [p.latency_ms for p in bitgen_preds["dev"] if p.latency_ms is not None]
        if lat:
            results["latency_ms"] = {"p50": float(np.percentile(lat, 50)),
                                     "p95": float(np.percentile(lat, 95)), "n": len(lat)}
    if memory_cases:
        results["set_sizes"]["memory"] = len(memory_cases)
        for s in systems:
            _, results["memory"][s.name] = evaluate_memory(s, memory_cases)
            mm = results["memory"][s.name]
            log(f"  {'memory':14s} {s.name:16s} " + "  ".join(
                f"{k} {mm[k]:.3f}" for k in ("efficacy", "paraphrase", "locality", "forget")
                if mm[k] is not None))
    return results


def build_systems(args, catalog, train, log=print) -> list:
    systems = []
    if not args.baselines_only:
        model_dir = Path(args.model_dir)
        if not model_dir.is_dir():
            raise InputError(f"model directory {model_dir} does not exist: train and export a "
                             "model first, or run with --baselines-only")
        systems.append(RuntimePredictor(model_dir, args.threads, args.max_trace_tokens))
    names = args.baselines or list(BASELINES)
    if not train:
        needs = [n for n in names if n in ("prior", "tfidf_lr", "minilm_lr")]
        if needs:
            log(f"no --train-data: skipping {', '.join(needs)} (they learn from the corpus)")
            names = [n for n in names if n not in needs]
    # every requested baseline may have been dropped above: build none (an empty list would
    # mean "all" to build_baselines, which then fit on no records)
    for b in (build_baselines(catalog, names, args.cache_dir, args.threads) if names else []):
        t0 = time.perf_counter()
        b.fit(train or [])
        log(f"fit {b.name} on {len(train or [])} records ({time.perf_counter() - t0:.1f}s)")
        systems.append(BaselinePredictor(b))
    return systems


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default="models/default", help="exported BitGen model")
    ap.add_argument("--dev", help="hand-written dev set JSONL (data/dev/tasks.jsonl)")
    ap.add_argument("--memory-cases", help="memory-edit cases JSONL")
    ap.add_argument("--train-data", help="generated training corpus (folder or JSONL)")
    ap.add_argument("--heldout", help="held-out generator templates JSONL")
    ap.add_argument("--out", default="reports/eval", help="report directory")
    ap.add_argument("--train-logs", nargs="*", default=[],
                    help="stage1/stage2 logs (JSONL {'step', ...} or CSV) for training curves")
    ap.add_argument("--fp32-checkpoint", help="the same model in fp32 (torch checkpoint)")
    ap.add_argument("--fp32-model-dir", help="the same model exported in fp32 (runtime dir)")
    ap.add_argument("--fp32-predictions", help="fp32 predictions on the dev set, "
                    "`bitgen select --batch` format")
    ap.add_argument("--baselines-only", action="store_true", help="skip BitGen")
    ap.add_argument("--baselines", nargs="*", choices=list(BASELINES), help="subset to run")
    ap.add_argument("--max-train", type=int, default=0, help="subsample the corpus (0 = all)")
    ap.add_argument("--catalog", help="fleet catalog YAML (default: the model's, else shipped)")
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "bitgen"),
                    help="MiniLM embedding cache")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-trace-tokens", type=int, default=96,
                    help="trace length BitGen may generate (a full step-form trace needs ~60)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not (args.dev or args.heldout or args.memory_cases):
        ap.error("give at least one of --dev, --heldout, --memory-cases")
    try:
        catalog = RobotCatalog.load(args.catalog)
        train = load_train_records(args.train_data, catalog) if args.train_data else []
        if args.max_train and len(train) > args.max_train:
            pick = np.random.default_rng(args.seed).choice(len(train), args.max_train, False)
            train = [train[i] for i in sorted(pick)]
        systems = build_systems(args, catalog, train)
        if systems and isinstance(systems[0], RuntimePredictor) and not args.catalog:
            catalog = systems[0].rt.catalog
        dev = load_records(args.dev, catalog) if args.dev else None
        heldout = load_records(args.heldout, catalog) if args.heldout else None
        cases = load_memory_cases(args.memory_cases, catalog) if args.memory_cases else None
        results = evaluate_all(systems, catalog, dev, heldout, cases, args.threshold)
        results["train_records"] = len(train)
        if not args.baselines_only:
            bitgen = systems[0]
            results["model"] = {"model_id": getattr(bitgen.rt, "model_id", None),
                                "dir": str(bitgen.model_dir), **model_size(bitgen.model_dir)}
            fp32 = None
            if args.fp32_predictions and dev:
                by_id = load_prediction_file(args.fp32_predictions, dev, catalog)
                fp32 = M.selection_metrics([by_id[r["id"]] for r in dev],
                                           [r["robots"] for r in dev], catalog.keys)
            elif args.fp32_checkpoint and dev:
                fp32 = evaluate_set(CheckpointPredictor(args.fp32_checkpoint, "fp32",
                                                        args.threads), dev, catalog, True,
                                    args.threshold)[1]
            elif args.fp32_model_dir and dev:
                fp32 = evaluate_set(RuntimePredictor(args.fp32_model_dir, args.threads), dev,
                                    catalog, True, args.threshold)[1]
            if fp32 is not None:
                t = results["sets"]["dev"][BITGEN]["top1"]
                results["ternary_vs_fp32"] = {"ternary_top1": t, "fp32_top1": fp32["top1"],
                                              "delta": t - fp32["top1"]}
        results["training"] = load_training_logs(args.train_logs) if args.train_logs else None
    except BitGenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results["targets"] = check_targets(results)
    results["args"] = vars(args)
    paths = write_report(results, args.out)
    print(format_targets(results["targets"]))
    print(f"report: {paths['md']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
