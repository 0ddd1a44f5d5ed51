"""Evaluation metrics on small hand-computed cases."""
import math

import numpy as np
import pytest

from bitgen_core.catalog import RobotCatalog
from training import metrics as M

KEYS = ["drone", "underwater", "humanoid", "wheeled", "legged"]


def pred(order, probs=None, trace=None):
    probs = probs or [0.9, 0.6, 0.4, 0.2, 0.1]
    return M.Prediction(list(order), list(probs), trace)


A = pred(["drone", "legged", "wheeled", "humanoid", "underwater"])
B = pred(["wheeled", "humanoid", "drone", "legged", "underwater"])
C = pred(["underwater", "drone", "legged", "wheeled", "humanoid"])


def test_top1_recall_at_3_and_all_gold_in_top3_by_hand():
    golds = [["legged", "drone"], ["humanoid", "legged"], ["drone", "humanoid", "underwater"]]
    m = M.selection_metrics([A, B, C], golds, KEYS)
    # top-1: drone∈{legged,drone} yes; wheeled∈{humanoid,legged} no; underwater∈gold yes.
    assert m["top1"] == pytest.approx(2 / 3)
    # recall@3: 2/2, 1/2 (humanoid in top3, legged at rank 4), 2/3 (humanoid at rank 5).
    assert m["recall_at_3"] == pytest.approx((1 + 0.5 + 2 / 3) / 3)
    assert m["all_gold_in_top3"] == pytest.approx(1 / 3)
    assert m["n"] == 3


def test_set_f1_at_threshold_and_at_gold_size():
    golds = [["drone"], ["humanoid", "legged"]]
    m = M.selection_metrics([A, B], golds, KEYS, threshold=0.5)
    # threshold 0.5 chooses the first two of each ranking (p = 0.9, 0.6).
    # A: {drone, legged} vs {drone}: P=1/2 R=1 → F1=2/3. B: {wheeled, humanoid} vs
    # {humanoid, legged}: P=1/2 R=1/2 → 1/2.
    assert m["f1_at_threshold"] == pytest.approx((2 / 3 + 0.5) / 2)
    # top-|gold|: A top-1 {drone} → 1; B top-2 {wheeled, humanoid} → 1/2.
    assert m["f1_at_k_gold"] == pytest.approx(0.75)
    assert M.set_f1([], []) == 1.0 and M.set_f1(["drone"], ["legged"]) == 0.0


def test_chosen_set_falls_back_to_top1_and_caps_at_three():
    low = pred(KEYS, [0.3, 0.2, 0.1, 0.1, 0.0])
    assert low.chosen(0.5) == ["drone"]
    high = pred(KEYS, [0.9, 0.9, 0.9, 0.9, 0.9])
    assert high.chosen(0.5) == KEYS[:3]


def test_per_robot_precision_recall_and_confusion():
    golds = [["drone"], ["humanoid", "legged"]]
    m = M.selection_metrics([A, B], golds, KEYS)
    pr = m["per_robot"]
    # chosen: A {drone, legged}, B {wheeled, humanoid}
    assert pr["drone"] == {"precision": 1.0, "recall": 1.0, "support": 1}
    assert pr["legged"] == {"precision": 0.0, "recall": 0.0, "support": 1}
    assert pr["wheeled"]["precision"] == 0.0 and pr["humanoid"]["recall"] == 1.0
    cm = np.array(m["confusion"]["matrix"])
    assert cm[KEYS.index("drone"), KEYS.index("drone")] == 1
    assert cm[KEYS.index("humanoid"), KEYS.index("wheeled")] == 1
    assert cm.sum() == 2


def test_ece_with_known_bins():
    # bin [0.2,0.3): p=0.25 twice, one positive → |0.5-0.25| = 0.25, weight 2/4
    # bin [0.9,1.0]: p=0.95 and p=1.0, both positive → |1-0.975| = 0.025, weight 2/4
    probs = np.array([0.25, 0.25, 0.95, 1.0])
    labels = np.array([1, 0, 1, 1])
    rel = M.reliability(probs, labels, n_bins=10)
    assert rel["ece"] == pytest.approx(0.5 * 0.25 + 0.5 * 0.025)
    assert rel["bins"][2]["count"] == 2 and rel["bins"][2]["accuracy"] == 0.5
    assert rel["bins"][9]["count"] == 2 and rel["bins"][9]["confidence"] == pytest.approx(0.975)
    assert sum(b["count"] for b in rel["bins"]) == 4
    assert M.reliability(np.array([0.0, 1.0]), np.array([0, 1]))["ece"] == 0.0


def test_bootstrap_ci_brackets_the_mean_and_collapses_on_constant_data():
    hits = [1] * 80 + [0] * 20
    lo, hi = M.bootstrap_ci(hits, n_boot=2000, seed=1)
    assert lo < 0.8 < hi and 0.68 < lo and hi < 0.9
    assert M.bootstrap_ci([1.0] * 10) == (1.0, 1.0)
    assert all(math.isnan(x) for x in M.bootstrap_ci([]))


def test_memory_metrics_by_hand():
    o1 = M.MemoryOutcome("a", before="drone", after="legged", restored="drone",
                         gold_before=["drone"], gold_after=["legged", "humanoid"],
                         paraphrases=["legged", "drone"],
                         unrelated_without=["wheeled", "underwater"],
                         unrelated_with=["wheeled", "drone"],
                         unrelated_gold=[["wheeled"], ["underwater"]])
    o2 = M.MemoryOutcome("b", before="underwater", after="underwater", restored="drone",
                         gold_before=["underwater"], gold_after=["drone"],
                         paraphrases=["drone"], unrelated_without=["humanoid"],
                         unrelated_with=["humanoid"])
    m = M.memory_metrics([o1, o2])
    assert m["efficacy"] == 0.5            # o1 moved into gold-after, o2 did not
    assert m["paraphrase"] == pytest.approx(2 / 3)   # legged ✓, drone ✗, drone ✓
    assert m["locality"] == pytest.approx(2 / 3)     # wheeled kept, underwater lost, humanoid
    assert m["forget"] == 0.5              # o2 came back as drone, not underwater
    assert m["before_correct"] == 1.0
    assert m["n_paraphrases"] == 3 and m["n_unrelated"] == 3
    assert m["locality_gold"] == 0.5       # only o1's probes carry golds: wheeled ✓, drone ✗
    assert m["restored_correct"] == 0.5


CATALOG = RobotCatalog.load()


def resolve(name):
    return CATALOG.keys[CATALOG.index(name)]


@pytest.mark.parametrize("trace", [
    "environment: rooftop → aerial; needs: survey, camera → Drone, Robot with Legs; "
    "selected: Drone, Robot with Legs",
    "environment: rooftop -> aerial; needs: survey -> drone; selected: drone + legged.",
])
def test_good_traces_are_well_formed_and_consistent(trace):
    p = pred(["drone", "legged", "wheeled", "humanoid", "underwater"], trace=trace)
    m = M.trace_metrics([p], resolve)
    assert m == {"n": 1, "well_formed": 1.0, "consistent": 1.0,
                 "well_formed_and_consistent": 1.0, "first_matches_top1": 1.0}


@pytest.mark.parametrize("trace,well_formed", [
    ("selected: Drone", False),                                     # steps missing
    ("environment: roof; needs: survey → Drone; selected: Drone", False),   # no arrow
    ("environment: roof → aerial; needs: survey → Drone; selected: Drone", True),  # legged missing
    ("environment: roof → aerial; needs: survey → Drone; selected: Drone, Submarine X", True),
    (None, False),
])
def test_bad_traces_fail(trace, well_formed):
    p = pred(["drone", "legged", "wheeled", "humanoid", "underwater"], trace=trace)
    m = M.trace_metrics([p], resolve)
    assert m["well_formed"] == float(well_formed)
    assert m["consistent"] == 0.0


def test_trace_naming_the_wrong_first_robot_is_flagged():
    p = pred(["drone", "legged", "wheeled", "humanoid", "underwater"],
             trace="environment: a → b; needs: c → d; selected: Robot with Legs, Drone")
    m = M.trace_metrics([p], resolve)
    assert m["consistent"] == 1.0 and m["first_matches_top1"] == 0.0
