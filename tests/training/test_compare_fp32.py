"""compare_fp32.py: the paired statistics, and the comparison end to end on two nano checkpoints."""
import json
from pathlib import Path

import pytest
import torch

from training import compare_fp32 as CF

FIX = Path(__file__).parent / "fixtures"


def test_mcnemar_exact_p_matches_the_binomial_tail():
    assert CF.mcnemar_exact_p(0, 0) == 1.0
    assert CF.mcnemar_exact_p(3, 3) == 1.0
    assert CF.mcnemar_exact_p(0, 5) == pytest.approx(2 / 32)          # 2 * 0.5^5
    assert CF.mcnemar_exact_p(1, 9) == pytest.approx(2 * 11 / 1024)    # 2 * (1 + 10) / 2^10


def test_paired_counts_and_difference():
    a = [1, 1, 0, 0, 1, 1, 1, 0]
    b = [1, 0, 1, 0, 1, 0, 0, 0]
    p = CF.paired(a, b, n_boot=2000)
    assert (p["both_right"], p["only_a_right"], p["only_b_right"], p["both_wrong"]) == (2, 3, 1, 2)
    assert p["diff_points"] == pytest.approx(100 * 2 / 8)
    lo, hi = p["diff_ci95_points"]
    assert lo <= p["diff_points"] <= hi
    assert CF.paired(a, a)["diff_ci95_points"] == [0.0, 0.0]
    with pytest.raises(ValueError):
        CF.paired(a, b[:-1])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from bitgen_core.config import BitGenConfig
    from bitgen_core.model import BitGenModel
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("twins")
    for name, quantize in (("ternary", True), ("fp32", False)):
        torch.manual_seed(3)       # same initial weights: the twins differ only in quantization
        cfg = BitGenConfig.preset("nano", vision_kind="ternary_student", quantize=quantize)
        BitGenModel(cfg, pretrained=False).eval().save(root / f"{name}.pt")
    return root


def test_compare_end_to_end_on_nano_twins(checkpoints, tmp_path):
    out = tmp_path / "cmp"
    res = CF.main(["--ternary", str(checkpoints / "ternary.pt"), "--fp32", str(checkpoints / "fp32.pt"),
                   "--dev", str(FIX / "dev_tasks.jsonl"), "--memory-cases", str(FIX / "memory_cases.jsonl"),
                   "--heldout", str(FIX / "heldout.jsonl"), "--out", str(out)])
    n_dev = len((FIX / "dev_tasks.jsonl").read_text().splitlines())
    q = res["paired"]["dev"]["ternary-fp32"]
    assert q["n"] == n_dev and q["both_right"] + q["only_a_right"] + q["only_b_right"] + q["both_wrong"] == n_dev
    assert q["diff_points"] == pytest.approx(100 * (res["sets"]["dev"]["ternary"]["top1"]
                                                    - res["sets"]["dev"]["fp32"]["top1"]))
    assert set(res["sets"]) >= {"dev", "image_with", "image_without", "heldout"}
    assert set(res["memory"]) == {"ternary", "fp32"}
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    dev_rows = [r for r in rows if r["set"] == "dev"]
    assert len(dev_rows) == 2 * n_dev
    # the two systems really differ (quantized vs full-precision forward of the same weights)
    probs = {r["system"]: r["probs"] for r in dev_rows if r["id"] == dev_rows[0]["id"]}
    assert probs["ternary"] != probs["fp32"]
    assert json.loads((out / "comparison.json").read_text())["paired"]["dev"]["ternary-fp32"] == q


def test_swapped_checkpoints_are_refused(checkpoints, tmp_path):
    with pytest.raises(SystemExit, match="quantize"):
        CF.main(["--ternary", str(checkpoints / "fp32.pt"), "--fp32", str(checkpoints / "ternary.pt"),
                 "--dev", str(FIX / "dev_tasks.jsonl"), "--out", str(tmp_path / "x")])


def test_training_evals_pair_the_two_logs_by_step(tmp_path):
    def log(path, dev):
        rows = [{"step": 10, "phase": "sft", "loss": 1.0},
                {"step": 20, "phase": "sft", "dev_top1": dev, "val_top1": 0.9},
                {"step": 20, "phase": "final", "dev_top1": dev, "val_top1": 0.9}]
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        return str(path)
    rows = CF.training_evals(log(tmp_path / "t.jsonl", 0.80), log(tmp_path / "f.jsonl", 0.75))
    assert [(r["step"], r["phase"]) for r in rows] == [(20, "sft"), (20, "final")]
    assert rows[0]["dev_top1"]["diff_points"] == pytest.approx(5.0)
    assert "dev_image_with_top1" not in rows[0]
    assert "20 final" in CF.markdown({"paired": {}, "memory": {}, "training_evals": rows})
