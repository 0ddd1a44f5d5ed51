"""Write the evaluation report: report.md (side-by-side tables), report.json (every number) and
PNG plots (confusion matrices, reliability diagram, memory-edit results, training curves).

`write_report(results, out_dir)` takes the results dict built by `training/evaluate.py`;
`load_training_logs(paths)` reads the stage1/stage2 logs for the training curves.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")       # files only: no display on a robot or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

BITGEN = "bitgen"          # the system name the targets are checked on
SET_TITLES = {"dev": "Dev set (hand-written)", "heldout": "Held-out generator templates",
              "image_with": "Image-decides subset, image given",
              "image_without": "Image-decides subset, image withheld"}
SELECTION_ROWS = [("top1", "top-1 in gold"), ("recall_at_3", "recall@3"),
                  ("all_gold_in_top3", "all gold in top-3"),
                  ("f1_at_threshold", "set F1 @ p≥threshold"),
                  ("f1_at_k_gold", "set F1 @ top-|gold|"), ("ece", "ECE (lower is better)")]
MEMORY_ROWS = [("efficacy", "edit efficacy"), ("paraphrase", "paraphrased queries"),
               ("locality", "locality (unrelated unchanged)"), ("forget", "forget restores"),
               ("fact_paraphrase", "fact reworded: efficacy"),
               ("before_correct", "correct before the edit"),
               ("locality_gold", "unrelated probe in its gold (fact in force)"),
               ("restored_correct", "after forget, in gold-before")]
TRACE_ROWS = [("well_formed", "well-formed"), ("consistent", "consistent with selection"),
              ("first_matches_top1", "first named robot = top-1")]
_ELAPSED_KEYS = ("elapsed_s", "wall_time_s", "time_s", "elapsed")


# --- training logs --------------------------------------------------------------------------
def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _triples_from_rows(rows: Iterable[dict]) -> list[tuple[float, str, float]]:
    """Rows in long ({step, metric, value}) or wide ({step, m1, m2, ...}) form → triples."""
    out = []
    for row in rows:
        step = _num(row.get("step"))
        if step is None:
            continue
        # training/common.py MetricsLog rows carry a "phase" (stage1, sft, grpo, ...): its
        # curves are kept apart as "phase/metric" since the step counter is shared.
        prefix = f"{row['phase']}/" if row.get("phase") else ""
        if "metric" in row and "value" in row:
            v = _num(row["value"])
            if v is not None:
                out.append((step, prefix + str(row["metric"]), v))
            continue
        for k, v in row.items():
            if k not in ("step", "phase") and _num(v) is not None:
                out.append((step, prefix + k, _num(v)))
    return out


def read_training_log(source) -> list[tuple[float, str, float]]:
    """(step, metric, value) triples from a JSONL/CSV path or an iterable of triples."""
    if not isinstance(source, (str, Path)):
        return [(float(s), str(m), float(v)) for s, m, v in source]
    p = Path(source)
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".csv":
        return _triples_from_rows(csv.DictReader(text.splitlines()))
    return _triples_from_rows(json.loads(line) for line in text.splitlines() if line.strip())


def load_training_logs(sources: Sequence, names: Sequence[str] | None = None) -> dict:
    """{"curves": {log: {metric: [[step, value], ...]}}, "total_minutes": float | None}.

    Wall time is the largest elapsed-seconds value of each log (keys elapsed_s, wall_time_s,
    time_s, elapsed), summed over logs: stage 1 + stage 2.
    """
    curves, minutes = {}, []
    for i, src in enumerate(sources):
        if names:
            name = names[i]
        elif isinstance(src, (str, Path)):   # runs/stage1/metrics.jsonl -> "stage1/metrics"
            name = Path(src).stem
            if any(Path(o).stem == name for o in sources if o is not src
                   and isinstance(o, (str, Path))):
                name = f"{Path(src).parent.name}/{name}"
        else:
            name = f"log{i}"
        series: dict[str, list] = {}
        for step, metric, value in read_training_log(src):
            series.setdefault(metric, []).append([step, value])
        for pts in series.values():
            pts.sort(key=lambda sv: sv[0])
        elapsed = [v for k in list(series) if k.split("/")[-1] in _ELAPSED_KEYS
                   for _, v in series.pop(k)]
        if elapsed:
            minutes.append(max(elapsed) / 60.0)
        curves[name] = series
    return {"curves": curves, "total_minutes": sum(minutes) if minutes else None}


# --- targets (issue 4, item 6 reports them) --------------------------------------------
# (name, set, metric, minimum); the set names are those of evaluate.py's results.
TARGETS = [
    ("dev top-1 in gold", "dev", "top1", 0.90),
    ("dev recall@3", "dev", "recall_at_3", 0.97),
    ("held-out templates top-1", "heldout", "top1", 0.98),
    ("image-decides top-1 with image", "image_with", "top1", 0.95),
    ("memory edit efficacy", "memory", "efficacy", 0.95),
    ("memory paraphrase", "memory", "paraphrase", 0.90),
    ("memory locality", "memory", "locality", 0.95),
    ("memory forget restores", "memory", "forget", 0.95),
    ("traces well-formed", "traces", "well_formed", 0.95),
    ("traces consistent with selection", "traces", "consistent", 0.95),
]
IMAGE_DROP_POINTS = 0.30      # top-1 with image − without image, on image-decides tasks
FP32_TOLERANCE = 0.01         # ternary dev top-1 at most 1 point below fp32
TRAIN_MINUTES = 60.0


def _measured(results, set_name, metric, system=BITGEN):
    if set_name == "memory":
        return (results["memory"].get(system) or {}).get(metric)
    if set_name == "traces":
        return (results["traces"].get("dev") or {}).get(metric)
    return ((results["sets"].get(set_name) or {}).get(system) or {}).get(metric)


def check_targets(results: dict) -> list[dict]:
    """The issue's targets as PASS / FAIL / SKIP rows with the measured figures."""
    rows = []

    def add(name, target, measured, ok, detail=""):
        status = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
        rows.append({"name": name, "target": target, "measured": measured, "status": status,
                     "detail": detail})

    for name, set_name, metric, thr in TARGETS:
        v = _measured(results, set_name, metric)
        add(name, f">= {thr:.2f}", v, None if v is None else v >= thr,
            "" if v is not None else "BitGen not evaluated on this set")
    dev = results["sets"].get("dev") or {}
    if BITGEN in dev and len(dev) > 1:
        others = {s: m["top1"] for s, m in dev.items() if s != BITGEN}
        best = max(others, key=others.get)
        add("dev top-1 ahead of every baseline", f"> {best} {others[best]:.3f}",
            dev[BITGEN]["top1"], dev[BITGEN]["top1"] > others[best])
    else:
        add("dev top-1 ahead of every baseline", "> best baseline", None, None,
            "needs BitGen and baselines on the dev set")
    w, wo = (_measured(results, "image_with", "top1"), _measured(results, "image_without", "top1"))
    add("image withheld drops image-decides top-1", f">= {IMAGE_DROP_POINTS:.2f} drop",
        None if w is None or wo is None else w - wo,
        None if w is None or wo is None else w - wo >= IMAGE_DROP_POINTS,
        "" if w is None or wo is None else f"with {w:.3f}, without {wo:.3f}")
    fp = results.get("ternary_vs_fp32")
    add("ternary within 1 point of fp32 (dev top-1)", f">= -{FP32_TOLERANCE:.2f}",
        fp["delta"] if fp else None, (fp["delta"] >= -FP32_TOLERANCE) if fp else None,
        f"ternary {fp['ternary_top1']:.3f}, fp32 {fp['fp32_top1']:.3f}" if fp
        else "no fp32 model given (--fp32-checkpoint/--fp32-model-dir/--fp32-predictions)")
    minutes = (results.get("training") or {}).get("total_minutes")
    add("stage 1 + stage 2 wall time", f"<= {TRAIN_MINUTES:.0f} min", minutes,
        None if minutes is None else minutes <= TRAIN_MINUTES,
        "" if minutes is not None else ("training logs carry no elapsed time"
                                        if results.get("training") else "no --train-logs given"))
    return rows


def format_targets(rows: list[dict]) -> str:
    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"
    return "\n".join(f"{r['status']}: {r['name']}: measured {fmt(r['measured'])} "
                     f"(target {r['target']}){'; ' + r['detail'] if r['detail'] else ''}"
                     for r in rows)



# --- plots ----------------------------------------------------------------------------------
def plot_confusion(per_system: dict, path: Path, title: str) -> None:
    n = len(per_system)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.0 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    for ax, (system, m) in zip(axes.ravel(), per_system.items()):
        labels, mat = m["confusion"]["labels"], np.array(m["confusion"]["matrix"])
        ax.imshow(mat, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        for (i, j), v in np.ndenumerate(mat):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                    color="white" if v > mat.max() / 2 else "black")
        ax.set_title(f"{system} (top-1 {m['top1']:.2f})", fontsize=9)
        ax.set_xlabel("predicted top-1")
        ax.set_ylabel("gold (first robot)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_reliability(per_system: dict, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    for system, m in per_system.items():
        bins = [b for b in m["reliability"] if b["count"]]
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-",
                label=f"{system} (ECE {m['ece']:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability (per robot)",
           ylabel="fraction in gold", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_memory(memory: dict, path: Path) -> None:
    keys = [k for k, _ in MEMORY_ROWS[:4]]
    systems = list(memory)
    width = 0.8 / max(len(systems), 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, s in enumerate(systems):
        vals = [memory[s].get(k) or 0.0 for k in keys]
        ax.bar(np.arange(len(keys)) + i * width, vals, width, label=s)
    ax.set_xticks(np.arange(len(keys)) + width * (len(systems) - 1) / 2,
                  ["edit efficacy", "paraphrased query", "locality", "forget restores"])
    ax.set(ylim=(0, 1.3), yticks=np.linspace(0, 1, 6), ylabel="rate", title="Memory edits")
    ax.legend(fontsize=8, ncol=3, loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_training(curves: dict, path: Path, max_metrics: int = 12) -> None:
    metrics = sorted({m for series in curves.values() for m in series})[:max_metrics]
    cols = min(3, max(len(metrics), 1))
    rows = max(1, math.ceil(len(metrics) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, metric in zip(axes.ravel(), metrics):
        for log, series in curves.items():
            if metric in series:
                steps, vals = zip(*series[metric])
                ax.plot(steps, vals, label=log)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(metrics):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- markdown -------------------------------------------------------------------------------
def _f(v, digits=3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def _selection_table(per_system: dict) -> list[str]:
    systems = list(per_system)
    rows = [["n", *(str(per_system[s]["n"]) for s in systems)]]
    for key, label in SELECTION_ROWS:
        cells = []
        for s in systems:
            m = per_system[s]
            cell = _f(m.get(key))
            if key == "top1" and m.get("top1_ci95"):
                cell += f" [{_f(m['top1_ci95'][0])}, {_f(m['top1_ci95'][1])}]"
            cells.append(cell)
        rows.append([label, *cells])
    return _table(["metric", *systems], rows)


def _markdown(results: dict, plots: dict) -> str:
    lines = ["# BitGen evaluation report", "",
             f"Generated {results['created']}. Catalog: {', '.join(results.get('catalog', []))}."
             f" Training records for the baselines: {results.get('train_records', 0)}.", ""]
    if results.get("model"):
        lines += [f"Model: `{results['model'].get('model_id')}` from `{results['model']['dir']}`.",
                  ""]
    lines += ["Baselines read text only (task + memory facts as text); on the image-decides "
              "subset their figure is the same with and without the image.", "",
              "## Targets (issue 4)", ""]
    lines += _table(["status", "target", "measured", "threshold", "detail"],
                    [[t["status"], t["name"], _f(t["measured"]), t["target"], t["detail"]]
                     for t in results.get("targets", [])])
    for set_name, per_system in results["sets"].items():
        lines += [f"## {SET_TITLES.get(set_name, set_name)}", ""] + _selection_table(per_system)
    dev = results["sets"].get("dev")
    if dev:
        systems = list(dev)
        lines += ["### Per-robot precision / recall on the dev set (threshold sets)", ""]
        lines += _table(["robot", "support", *systems],
                        [[r, str(dev[systems[0]]["per_robot"][r]["support"]),
                          *(f"{_f(dev[s]['per_robot'][r]['precision'], 2)} / "
                            f"{_f(dev[s]['per_robot'][r]['recall'], 2)}" for s in systems)]
                         for r in dev[systems[0]]["per_robot"]])
    if results.get("memory"):
        systems = list(results["memory"])
        lines += ["## Memory edits", "",
                  "Baselines are stateless (facts are part of their input text), so their "
                  "'forget restores' is 1.0 by construction; BitGen's goes through the "
                  "runtime's memory write and forget.", ""]
        lines += _table(["metric", *systems],
                        [[label, *(_f(results["memory"][s].get(k)) for s in systems)]
                         for k, label in MEMORY_ROWS]
                        + [["cases / paraphrases / probes",
                            *(f"{results['memory'][s]['n_cases']} / "
                              f"{results['memory'][s]['n_paraphrases']} / "
                              f"{results['memory'][s]['n_unrelated']}" for s in systems)]])
    if results.get("traces"):
        sets = list(results["traces"])
        lines += ["## Reasoning traces (BitGen)", ""]
        lines += _table(["metric", *sets], [[label, *(_f(results["traces"][s].get(k))
                                                       for s in sets)]
                                             for k, label in TRACE_ROWS])
    if results.get("ternary_vs_fp32"):
        tv = results["ternary_vs_fp32"]
        lines += ["## Ternary vs fp32 (dev top-1)", ""]
        lines += _table(["ternary", "fp32", "delta"],
                        [[_f(tv["ternary_top1"]), _f(tv["fp32_top1"]), _f(tv["delta"])]])
    if results.get("model") or results.get("latency_ms"):
        lines += ["## Size and latency", ""]
        rows = []
        if results.get("model"):
            rows.append(["model files on disk", f"{results['model']['total_bytes'] / 1e6:.2f} MB"])
        if results.get("latency_ms"):
            lat = results["latency_ms"]
            rows += [["select p50 (dev, image given)", f"{lat['p50']:.1f} ms"],
                     ["select p95", f"{lat['p95']:.1f} ms"]]
        lines += _table(["measure", "value"], rows)
    training = results.get("training")
    if training and training.get("curves"):
        lines += ["## Training", "", f"Wall time (all logs): "
                  f"{_f(training.get('total_minutes'), 1)} min.", ""]
        lines += _table(["log", "metric", "last step", "last value"],
                        [[log, m, _f(pts[-1][0], 0), _f(pts[-1][1], 4)]
                         for log, series in training["curves"].items()
                         for m, pts in series.items()])
    if plots:
        lines += ["## Plots", ""] + [f"![{name}]({fname})" for name, fname in plots.items()] + [""]
    return "\n".join(lines)


# --- entry point ----------------------------------------------------------------------------
def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_report(results: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write report.md, report.json and the PNG plots into out_dir; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {**results, "created": _dt.datetime.now().isoformat(timespec="seconds")}
    plots: dict[str, str] = {}
    main_set = next((s for s in ("dev", "heldout", "image_with") if results["sets"].get(s)), None)
    if main_set:
        title = SET_TITLES.get(main_set, main_set)
        plot_confusion(results["sets"][main_set], out / "confusion.png", title)
        plot_reliability(results["sets"][main_set], out / "reliability.png", title)
        plots.update(confusion="confusion.png", reliability="reliability.png")
    if results.get("memory"):
        plot_memory(results["memory"], out / "memory.png")
        plots["memory"] = "memory.png"
    if results.get("training") and results["training"].get("curves"):
        plot_training(results["training"]["curves"], out / "training_curves.png")
        plots["training_curves"] = "training_curves.png"
    results["plots"] = plots
    (out / "report.json").write_text(json.dumps(results, indent=1, default=_jsonable),
                                     encoding="utf-8")
    (out / "report.md").write_text(_markdown(results, plots), encoding="utf-8")
    return {"md": out / "report.md", "json": out / "report.json",
            **{k: out / v for k, v in plots.items()}}
