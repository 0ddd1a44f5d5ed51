"""The report: markdown + JSON with the expected keys, valid PNGs, training logs parsed."""
import json
from pathlib import Path

import pytest
from PIL import Image

from bitgen_core.catalog import RobotCatalog
from training import evaluate as E
from training.baselines import KeywordBaseline, PriorBaseline
from training.report import check_targets, load_training_logs, read_training_log, write_report

FIX = Path(__file__).parent / "fixtures"
CATALOG = RobotCatalog.load()


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    train = E.load_train_records(FIX / "train.jsonl", CATALOG)
    systems = [E.BaselinePredictor(PriorBaseline(CATALOG).fit(train)),
               E.BaselinePredictor(KeywordBaseline(CATALOG).fit(train))]
    res = E.evaluate_all(systems, CATALOG, E.load_records(FIX / "dev_tasks.jsonl", CATALOG),
                         E.load_records(FIX / "heldout.jsonl", CATALOG),
                         E.load_memory_cases(FIX / "memory_cases.jsonl", CATALOG),
                         log=lambda *_: None)
    res["training"] = load_training_logs([FIX / "stage1_log.jsonl", FIX / "stage2_log.csv"])
    res["ternary_vs_fp32"] = {"ternary_top1": 0.91, "fp32_top1": 0.915, "delta": -0.005}
    res["targets"] = check_targets(res)
    out = tmp_path_factory.mktemp("report")
    return write_report(res, out), out


def test_report_files_exist_and_pngs_are_valid_images(written):
    paths, out = written
    assert set(paths) == {"md", "json", "confusion", "reliability", "memory", "training_curves"}
    for key in ("confusion", "reliability", "memory", "training_curves"):
        with Image.open(paths[key]) as im:
            im.verify()
        with Image.open(paths[key]) as im:
            assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 200


def test_report_json_has_every_section(written):
    _, out = written
    rep = json.loads((out / "report.json").read_text())
    assert {"sets", "memory", "traces", "targets", "training", "plots", "created",
            "ternary_vs_fp32", "systems", "set_sizes"} <= set(rep)
    dev = rep["sets"]["dev"]["keyword"]
    assert {"top1", "top1_ci95", "recall_at_3", "all_gold_in_top3", "f1_at_threshold",
            "f1_at_k_gold", "ece", "reliability", "per_robot", "confusion"} <= set(dev)
    assert len(dev["confusion"]["matrix"]) == len(CATALOG)
    assert rep["memory"]["prior"]["n_cases"] == 3
    fp32 = next(t for t in rep["targets"] if t["name"].startswith("ternary"))
    assert fp32["status"] == "PASS" and fp32["measured"] == pytest.approx(-0.005)


def test_report_markdown_puts_systems_side_by_side(written):
    _, out = written
    md = (out / "report.md").read_text()
    assert "| metric | prior | keyword |" in md
    for heading in ("## Targets", "## Dev set", "## Held-out generator templates",
                    "## Image-decides subset, image withheld", "## Memory edits",
                    "## Ternary vs fp32", "## Training", "## Plots"):
        assert heading in md
    assert "![confusion](confusion.png)" in md


def test_training_logs_in_every_accepted_form(tmp_path):
    logs = load_training_logs([FIX / "stage1_log.jsonl", FIX / "stage2_log.csv"])
    assert set(logs["curves"]) == {"stage1_log", "stage2_log"}
    assert logs["curves"]["stage1_log"]["loss"][0] == [0.0, 3.0]
    assert [s for s, _ in logs["curves"]["stage2_log"]["reward"]] == [0, 10, 20, 30]
    assert logs["total_minutes"] == pytest.approx(10.0 + 20.0)
    assert "elapsed_s" not in logs["curves"]["stage1_log"]
    triples = [(2, "loss", 0.5), (1, "loss", 1.0)]
    from_list = load_training_logs([triples], names=["run"])
    assert from_list["curves"]["run"]["loss"] == [[1.0, 1.0], [2.0, 0.5]]
    assert from_list["total_minutes"] is None
    wide = tmp_path / "wide.csv"
    wide.write_text("step,loss,acc\n0,1.5,0.2\n5,0.7,nan\n")
    assert read_training_log(wide) == [(0.0, "loss", 1.5), (0.0, "acc", 0.2), (5.0, "loss", 0.7)]


def test_metrics_log_phases_and_same_named_logs_stay_apart(tmp_path):
    # the rows training/common.py MetricsLog writes: one file per stage, a phase per row
    for stage, rows in {"stage1": [(10, "stage1", 2.0, 60.0), (20, "stage1", 1.0, 120.0)],
                        "stage2": [(5, "sft", 1.5, 30.0), (5, "grpo", 0.2, 300.0)]}.items():
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "metrics.jsonl").write_text("\n".join(
            json.dumps({"step": s, "phase": ph, "loss": v, "elapsed_s": e})
            for s, ph, v, e in rows))
    logs = load_training_logs([tmp_path / "stage1" / "metrics.jsonl",
                               tmp_path / "stage2" / "metrics.jsonl"])
    assert set(logs["curves"]) == {"stage1/metrics", "stage2/metrics"}
    assert logs["curves"]["stage2/metrics"] == {"sft/loss": [[5.0, 1.5]],
                                                "grpo/loss": [[5.0, 0.2]]}
    assert logs["total_minutes"] == pytest.approx((120.0 + 300.0) / 60)
