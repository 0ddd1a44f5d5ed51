"""Selection, calibration, memory and trace metrics for the evaluation report.

Every metric here works on plain Python/numpy values, so BitGen (through its runtime) and the
text baselines are scored by the same code. A prediction is the full ranking of the catalog
(best first) with one independent sigmoid probability per robot, as the selector outputs.

Definitions (the issue's targets quote these names):
- top1:              the first ranked robot is in the gold set.
- recall_at_3:       mean over examples of |gold ∩ top-3| / |gold| (gold has 1-3 robots, so a
                     perfect ranking always scores 1.0).
- all_gold_in_top3:  fraction of examples whose whole gold set is inside the top 3.
- f1_at_threshold:   sample-averaged set F1 of {robots with p ≥ threshold} against gold; an
                     empty set falls back to the top-1 robot (the node always answers).
- f1_at_k_gold:      sample-averaged set F1 of the top-|gold| robots (an oracle-size cut).
- per_robot:         precision/recall/support of the threshold sets, per robot.
- confusion:         rows = the gold's first robot, columns = the predicted top-1.
- ece:               expected calibration error of every (example, robot) sigmoid against
                     gold membership, equal-width bins: Σ_b n_b/N · |acc_b − conf_b|.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

DEFAULT_THRESHOLD = 0.5
DEFAULT_BINS = 10


@dataclass
class Prediction:
    """One answer: every catalog robot, best first, with its sigmoid probability."""
    robots: list[str]
    probs: list[float]
    trace: str | None = None
    latency_ms: float | None = None

    def top(self, k: int) -> list[str]:
        return self.robots[:k]

    def chosen(self, threshold: float = DEFAULT_THRESHOLD, max_k: int = 3) -> list[str]:
        """The robots the system commits to: p ≥ threshold, at least the top-1, at most max_k."""
        picked = [r for r, p in zip(self.robots, self.probs) if p >= threshold][:max_k]
        return picked or self.robots[:1]

    def prob_of(self, robot: str) -> float:
        return self.probs[self.robots.index(robot)]


# --- per-example scores ---------------------------------------------------------------------
def set_f1(pred: Iterable[str], gold: Iterable[str]) -> float:
    p, g = set(pred), set(gold)
    if not p and not g:
        return 1.0
    tp = len(p & g)
    if tp == 0:
        return 0.0
    precision, recall = tp / len(p), tp / len(g)
    return 2 * precision * recall / (precision + recall)


def top1_hit(pred: Prediction, gold: Sequence[str]) -> float:
    return float(pred.robots[0] in gold)


def recall_at_k(pred: Prediction, gold: Sequence[str], k: int = 3) -> float:
    return len(set(pred.top(k)) & set(gold)) / len(set(gold))


def all_gold_in_top_k(pred: Prediction, gold: Sequence[str], k: int = 3) -> float:
    return float(set(gold) <= set(pred.top(k)))


# --- aggregate selection metrics ------------------------------------------------------------
def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of a mean (resampling examples with replacement)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def confusion_matrix(preds: Sequence[Prediction], golds: Sequence[Sequence[str]],
                     labels: Sequence[str]) -> np.ndarray:
    """counts[i, j]: gold's first robot is labels[i] and the predicted top-1 is labels[j]."""
    idx = {k: i for i, k in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=int)
    for pred, gold in zip(preds, golds):
        m[idx[gold[0]], idx[pred.robots[0]]] += 1
    return m


def per_robot_precision_recall(preds: Sequence[Prediction], golds: Sequence[Sequence[str]],
                               labels: Sequence[str],
                               threshold: float = DEFAULT_THRESHOLD) -> dict[str, dict]:
    out = {}
    chosen = [set(p.chosen(threshold)) for p in preds]
    for r in labels:
        tp = sum(r in c and r in g for c, g in zip(chosen, golds))
        fp = sum(r in c and r not in g for c, g in zip(chosen, golds))
        fn = sum(r not in c and r in g for c, g in zip(chosen, golds))
        out[r] = {"precision": tp / (tp + fp) if tp + fp else 0.0,
                  "recall": tp / (tp + fn) if tp + fn else 0.0,
                  "support": tp + fn}
    return out


def reliability(probs: np.ndarray, labels: np.ndarray, n_bins: int = DEFAULT_BINS) -> dict:
    """ECE and reliability bins over flattened probabilities and 0/1 labels.

    Bins are [0, 1/M), [1/M, 2/M), ... , [(M-1)/M, 1]; p = 1 falls in the last bin.
    """
    p = np.asarray(probs, dtype=float).ravel()
    y = np.asarray(labels, dtype=float).ravel()
    which = np.minimum((p * n_bins).astype(int), n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        mask = which == b
        n = int(mask.sum())
        conf = float(p[mask].mean()) if n else None
        acc = float(y[mask].mean()) if n else None
        if n:
            ece += n / p.size * abs(acc - conf)
        bins.append({"lo": b / n_bins, "hi": (b + 1) / n_bins, "count": n,
                     "confidence": conf, "accuracy": acc})
    return {"ece": float(ece) if p.size else float("nan"), "bins": bins}


def prob_matrix(preds: Sequence[Prediction], golds: Sequence[Sequence[str]],
                labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """[N, K] probabilities and gold multi-hot labels in catalog order."""
    p = np.array([[pred.prob_of(r) for r in labels] for pred in preds], dtype=float)
    y = np.array([[float(r in g) for r in labels] for g in golds], dtype=float)
    return p.reshape(len(preds), len(labels)), y.reshape(len(preds), len(labels))


def selection_metrics(preds: Sequence[Prediction], golds: Sequence[Sequence[str]],
                      labels: Sequence[str], threshold: float = DEFAULT_THRESHOLD,
                      n_bins: int = DEFAULT_BINS, seed: int = 0) -> dict:
    """Every selection metric of one system on one set (see the module docstring)."""
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions for {len(golds)} gold sets")
    if not preds:
        return {"n": 0}
    hits = [top1_hit(p, g) for p, g in zip(preds, golds)]
    p, y = prob_matrix(preds, golds, labels)
    rel = reliability(p, y, n_bins)
    return {
        "n": len(preds),
        "top1": float(np.mean(hits)),
        "top1_ci95": list(bootstrap_ci(hits, seed=seed)),
        "recall_at_3": float(np.mean([recall_at_k(p_, g) for p_, g in zip(preds, golds)])),
        "all_gold_in_top3": float(np.mean([all_gold_in_top_k(p_, g)
                                           for p_, g in zip(preds, golds)])),
        "f1_at_threshold": float(np.mean([set_f1(p_.chosen(threshold), g)
                                          for p_, g in zip(preds, golds)])),
        "f1_at_k_gold": float(np.mean([set_f1(p_.top(len(g)), g)
                                       for p_, g in zip(preds, golds)])),
        "threshold": threshold,
        "ece": rel["ece"],
        "reliability": rel["bins"],
        "per_robot": per_robot_precision_recall(preds, golds, labels, threshold),
        "confusion": {"labels": list(labels),
                      "matrix": confusion_matrix(preds, golds, labels).tolist()},
    }


# --- memory ---------------------------------------------------------------------------------
@dataclass
class MemoryOutcome:
    """What one system answered on one memory case (top-1 robots only)."""
    case_id: str
    before: str                       # task, no fact
    after: str                        # task, fact written
    restored: str                     # task, fact forgotten again
    gold_before: list[str]
    gold_after: list[str]
    paraphrases: list[str] = field(default_factory=list)       # top-1 per paraphrase, fact in
    unrelated_without: list[str] = field(default_factory=list)  # top-1 per probe, no fact
    unrelated_with: list[str] = field(default_factory=list)     # top-1 per probe, fact in
    fact_paraphrases: list[str] = field(default_factory=list)   # top-1, fact reworded
    unrelated_gold: list[list[str]] = field(default_factory=list)  # gold per probe, if known


def memory_metrics(outcomes: Sequence[MemoryOutcome]) -> dict:
    """Edit efficacy, paraphrase, locality and forget rates over memory cases.

    - efficacy:   after writing the fact, top-1 is in the case's gold-after set.
    - paraphrase: each paraphrased query, fact written, has its top-1 in gold-after
                  (pooled over all paraphrases of all cases).
    - locality:   each unrelated probe keeps its fact-free top-1 when the fact is written
                  (pooled over all probes).
    - fact_paraphrase: the fact written in other words moves top-1 into gold-after too.
    - forget:     after forgetting, the task's top-1 equals the top-1 before the write.
    - before_correct: sanity — without the fact, top-1 is in gold-before.
    - locality_gold / restored_correct: the stricter reading of locality and forget against
      the gold sets (probe top-1 in its gold with the fact in force; top-1 after forget in
      gold-before), where the cases give golds.
    """
    def rate(xs):
        return float(np.mean(xs)) if len(xs) else None

    para = [a in o.gold_after for o in outcomes for a in o.paraphrases]
    loc = [w == wo for o in outcomes
           for w, wo in zip(o.unrelated_with, o.unrelated_without)]
    return {
        "n_cases": len(outcomes),
        "n_paraphrases": len(para),
        "n_unrelated": len(loc),
        "efficacy": rate([o.after in o.gold_after for o in outcomes]),
        "paraphrase": rate(para),
        "locality": rate(loc),
        "fact_paraphrase": rate([a in o.gold_after for o in outcomes
                                 for a in o.fact_paraphrases]),
        "forget": rate([o.restored == o.before for o in outcomes]),
        "before_correct": rate([o.before in o.gold_before for o in outcomes]),
        "locality_gold": rate([w in g for o in outcomes
                               for w, g in zip(o.unrelated_with, o.unrelated_gold) if g]),
        "restored_correct": rate([o.restored in o.gold_before for o in outcomes]),
    }


# --- reasoning traces -----------------------------------------------------------------------
# The step grammar of the rationales: "environment: A → B; needs: C → D; selected: R1, R2".
# "->" is accepted for "→" so traces typed on a plain keyboard are not penalised.
TRACE_PATTERN = re.compile(
    r"^\s*environment:\s*(?P<env>[^;→]+?)\s*(?:→|->)\s*(?P<env_to>[^;]+?)\s*;"
    r"\s*needs:\s*(?P<needs>[^;→]+?)\s*(?:→|->)\s*(?P<needs_to>[^;]+?)\s*;"
    r"\s*selected:\s*(?P<selected>[^;]+?)\s*\.?\s*$")
_SPLIT = re.compile(r"\s*(?:,|\+|&|\band\b)\s*")


def parse_trace(trace: str | None) -> dict | None:
    """The trace's fields, or None when it does not follow the step grammar."""
    if not trace:
        return None
    m = TRACE_PATTERN.match(trace)
    if not m:
        return None
    names = [s for s in _SPLIT.split(m["selected"]) if s]
    return {**m.groupdict(), "selected_names": names}


def trace_metrics(preds: Sequence[Prediction], resolve: Callable[[str], str],
                  threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Rates of well-formed traces and of traces consistent with the selection.

    `resolve` maps a robot name/alias/key in a trace to its catalog key (raising on an
    unknown name, which counts as inconsistent). Consistent: the set of robots after
    "selected:" equals the system's chosen set (`Prediction.chosen`). `first_matches_top1`
    is the looser check that the first named robot is the ranked top-1.
    """
    well, consistent, first = [], [], []
    for pred in preds:
        parsed = parse_trace(pred.trace)
        well.append(parsed is not None)
        keys = None
        if parsed is not None:
            try:
                keys = [resolve(n) for n in parsed["selected_names"]]
            except (KeyError, ValueError):
                keys = None
        consistent.append(keys is not None and set(keys) == set(pred.chosen(threshold)))
        first.append(bool(keys) and keys[0] == pred.robots[0])
    n = len(preds)
    return {"n": n,
            "well_formed": float(np.mean(well)) if n else None,
            "consistent": float(np.mean(consistent)) if n else None,
            "well_formed_and_consistent": float(np.mean(consistent)) if n else None,
            "first_matches_top1": float(np.mean(first)) if n else None}
