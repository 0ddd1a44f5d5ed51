"""evaluate.py: the Predictor pipeline, the targets' PASS/FAIL logic, and the CLI end to end."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bitgen_core.catalog import RobotCatalog
from training import evaluate as E
from training.baselines import PriorBaseline, TfidfLogRegBaseline
from training.metrics import Prediction
from training.report import check_targets, format_targets

ROOT = Path(__file__).resolve().parents[2]
FIX = Path(__file__).parent / "fixtures"
CATALOG = RobotCatalog.load()


class SceneAwarePredictor:
    """A real, simple system behind the Predictor protocol: TF-IDF for the text, the scene's
    colour when the image is given, facts that ground a robot drop it, and a step-form trace
    naming the chosen robots. It stands in for BitGen where the model is not trained yet."""
    name = E.BITGEN
    COLOURS = {"underwater": (10, 40, 160), "drone": (150, 200, 255), "legged": (120, 90, 60)}

    def __init__(self, train):
        self.text = TfidfLogRegBaseline(CATALOG).fit(train)

    def predict(self, task, image_path, facts):
        p = dict(zip(CATALOG.keys, self.text.predict_proba([task])[0]))
        if image_path:
            rgb = np.asarray(Image.open(image_path).convert("RGB")).reshape(-1, 3).mean(0)
            best = min(self.COLOURS, key=lambda k: np.abs(rgb - self.COLOURS[k]).sum())
            p[best] = 0.99
        for f in facts:
            for r in CATALOG:
                if any(a in f["text"].lower() for a in (r.key, *r.aliases)):
                    p[r.key] = 0.01
        robots = sorted(p, key=p.get, reverse=True)
        pred = Prediction(robots, [float(p[r]) for r in robots], latency_ms=1.0)
        names = ", ".join(CATALOG.get(r).name for r in pred.chosen())
        pred.trace = f"environment: scene → family; needs: task → {names}; selected: {names}"
        return pred


@pytest.fixture(scope="module")
def results():
    train = E.load_train_records(FIX / "train.jsonl", CATALOG)
    systems = [SceneAwarePredictor(train),
               E.BaselinePredictor(PriorBaseline(CATALOG).fit(train)),
               E.BaselinePredictor(TfidfLogRegBaseline(CATALOG).fit(train))]
    res = E.evaluate_all(systems, CATALOG, E.load_records(FIX / "dev_tasks.jsonl", CATALOG),
                         E.load_records(FIX / "heldout.jsonl", CATALOG),
                         E.load_memory_cases(FIX / "memory_cases.jsonl", CATALOG),
                         log=lambda *_: None)
    res["targets"] = check_targets(res)
    return res


def test_loaders_resolve_images_and_normalise_robot_names(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "t.jsonl").write_text(json.dumps(
        {"id": 1, "task": "go", "robots": ["Robot with Legs", "UAV"], "image": "img/a.png"}) + "\n")
    Image.new("RGB", (4, 4)).save(tmp_path / "img" / "a.png")
    r = E.load_records(tmp_path / "t.jsonl", CATALOG)[0]
    assert r["robots"] == ["legged", "drone"] and r["id"] == "1"
    assert r["image"] == str(tmp_path / "img" / "a.png") and r["facts"] == []
    (tmp_path / "bad.jsonl").write_text('{"task": "go", "robots": ["drone"]}\nnot json\n')
    with pytest.raises(E.InputError, match="bad.jsonl line 2"):
        E.load_records(tmp_path / "bad.jsonl", CATALOG)


def test_train_loader_drops_held_out_splits(tmp_path):
    lines = [{"task": "a", "robots": ["drone"], "split": "train"},
             {"task": "b", "robots": ["drone"], "split": "heldout"},
             {"task": "c", "robots": ["drone"]}]
    (tmp_path / "gen.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    assert [r["task"] for r in E.load_train_records(tmp_path, CATALOG)] == ["a", "c"]


def test_image_decides_subset_is_scored_with_and_without_the_image(results):
    assert results["set_sizes"]["image_with"] == 6
    assert results["sets"]["image_with"][E.BITGEN]["top1"] == 1.0
    assert results["sets"]["image_without"][E.BITGEN]["top1"] < 0.7
    # text-only baselines cannot tell the difference
    for s in ("prior", "tfidf_lr"):
        assert (results["sets"]["image_with"][s]["top1"]
                == results["sets"]["image_without"][s]["top1"])


def test_memory_cases_run_write_then_forget(results):
    m = results["memory"][E.BITGEN]
    assert m["n_cases"] == 3 and m["n_paraphrases"] == 4 and m["n_unrelated"] == 4
    assert m["efficacy"] == 1.0 and m["forget"] == 1.0 and m["locality"] == 1.0
    assert m["fact_paraphrase"] == 1.0          # "quadcopter" is a drone alias
    assert results["memory"]["prior"]["efficacy"] == pytest.approx(1 / 3)  # prior never moves


def test_memory_cases_in_generator_format_are_read():
    cases = E.load_memory_cases(FIX / "memory_cases.jsonl", CATALOG)
    gen = next(c for c in cases if c["id"] == "mem-gen-format")
    assert gen["facts"] == [{"key": "uav_down", "text": "The UAV is out of service"}]
    assert gen["paraphrases"] == ["Survey the bridge towers from the sky"]
    assert gen["fact_paraphrases"] == ["Our quadcopter cannot fly today"]
    assert gen["unrelated"] == ["Use a wrench to fix the kitchen valve"]
    assert gen["unrelated_gold"] == [["humanoid"]]
    assert next(c for c in cases if c["id"] == "mem-drone")["unrelated_gold"] == [[], []]
    assert gen["before"] == ["drone"] and gen["after"] == ["wheeled", "legged"]


def test_traces_are_scored_for_bitgen_only(results):
    assert results["traces"]["dev"]["well_formed"] == 1.0
    assert results["traces"]["dev"]["consistent"] == 1.0
    assert results["latency_ms"]["p50"] == 1.0


def test_targets_pass_fail_and_skip_follow_the_measured_figures(results):
    rows = {r["name"]: r for r in results["targets"]}
    assert rows["image withheld drops image-decides top-1"]["status"] == "PASS"
    assert rows["traces consistent with selection"]["status"] == "PASS"
    assert rows["memory edit efficacy"]["status"] == "PASS"
    dev_top1 = results["sets"]["dev"][E.BITGEN]["top1"]
    assert rows["dev top-1 in gold"]["measured"] == dev_top1
    assert rows["dev top-1 in gold"]["status"] == ("PASS" if dev_top1 >= 0.9 else "FAIL")
    best = max(m["top1"] for s, m in results["sets"]["dev"].items() if s != E.BITGEN)
    assert rows["dev top-1 ahead of every baseline"]["status"] == \
        ("PASS" if dev_top1 > best else "FAIL")
    assert rows["ternary within 1 point of fp32 (dev top-1)"]["status"] == "SKIP"
    text = format_targets(results["targets"])
    assert "PASS: image withheld drops image-decides top-1: measured" in text


def test_fp32_predictions_file_is_matched_by_record_id(tmp_path):
    dev = E.load_records(FIX / "dev_tasks.jsonl", CATALOG)
    path = tmp_path / "fp32.jsonl"
    path.write_text("\n".join(json.dumps({"id": r["id"], "robots": CATALOG.names,
                                          "confidences": [0.9, 0.5, 0.3, 0.2, 0.1]})
                              for r in dev[:-1]))
    with pytest.raises(E.InputError, match="no prediction for 1 dev records"):
        E.load_prediction_file(path, dev, CATALOG)


def test_missing_model_dir_is_reported_clearly(tmp_path, capsys):
    code = E.main(["--model-dir", str(tmp_path / "nope"), "--dev",
                   str(FIX / "dev_tasks.jsonl"), "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "--baselines-only" in err


def test_cli_baselines_only_end_to_end(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "training" / "evaluate.py"), "--baselines-only",
         "--dev", str(FIX / "dev_tasks.jsonl"), "--heldout", str(FIX / "heldout.jsonl"),
         "--memory-cases", str(FIX / "memory_cases.jsonl"),
         "--train-data", str(FIX / "train.jsonl"), "--out", str(out),
         "--train-logs", str(FIX / "stage1_log.jsonl"), str(FIX / "stage2_log.csv"),
         "--baselines", "prior", "keyword", "tfidf_lr"],   # MiniLM: see test_baselines
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "PASS: stage 1 + stage 2 wall time: measured 30.000" in proc.stdout
    assert "SKIP: dev top-1 in gold" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert set(report["sets"]["dev"]) == {"prior", "keyword", "tfidf_lr"}
    assert set(report["sets"]) == {"dev", "heldout", "image_with", "image_without"}
    assert report["sets"]["heldout"]["tfidf_lr"]["top1"] >= 0.9
    for png in ("confusion.png", "reliability.png", "memory.png", "training_curves.png"):
        assert (out / png).is_file()


@pytest.fixture(scope="module")
def nano_model(tmp_path_factory):
    """A random nano BitGen, saved and exported for real (as tests/runtime does)."""
    import torch

    from bitgen_core.config import BitGenConfig
    from bitgen_core.model import BitGenModel
    from training.export import export_model
    torch.set_num_threads(1)
    torch.manual_seed(7)
    root = tmp_path_factory.mktemp("nano")
    model = BitGenModel(BitGenConfig.preset("nano", vision_kind="ternary_student"),
                        pretrained=False).eval()
    model.save(root / "nano.pt")
    export_model(model, root / "model", model_id="eval-nano")
    return root


def test_runtime_predictor_edits_and_forgets_through_the_real_runtime(nano_model):
    bitgen = E.RuntimePredictor(nano_model / "model", max_trace_tokens=8)
    fact = [{"key": "drone-status", "text": "The drone is grounded for high winds today."}]
    before = bitgen.predict("Survey the roof from above", None, [])
    with_fact = bitgen.predict("Survey the roof from above", None, fact)
    assert [f.key for f in bitgen.rt.memory.list()] == ["drone-status"]
    after = bitgen.predict("Survey the roof from above", None, [])
    assert bitgen.rt.memory.list() == []
    assert sorted(before.robots) == sorted(CATALOG.keys) and with_fact.latency_ms > 0
    assert after.robots == before.robots                   # forget is exact
    assert after.probs == pytest.approx(before.probs, abs=1e-6)


def test_cli_with_model_and_fp32_checkpoint(nano_model, tmp_path, capsys):
    out = tmp_path / "r"
    code = E.main(["--model-dir", str(nano_model / "model"),
                   "--dev", str(FIX / "dev_tasks.jsonl"),
                   "--memory-cases", str(FIX / "memory_cases.jsonl"),
                   "--train-data", str(FIX / "train.jsonl"), "--baselines", "prior",
                   "--fp32-checkpoint", str(nano_model / "nano.pt"),
                   "--max-trace-tokens", "8", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["systems"] == ["bitgen", "prior"]
    assert report["model"]["model_id"] == "eval-nano" and report["model"]["total_bytes"] > 0
    assert report["memory"]["bitgen"]["forget"] == 1.0
    tv = report["ternary_vs_fp32"]
    assert tv["delta"] == pytest.approx(tv["ternary_top1"] - tv["fp32_top1"])
    assert "ternary within 1 point of fp32 (dev top-1): measured" in printed
    assert "dev top-1 ahead of every baseline" in printed


def test_corpus_baselines_without_train_data_are_skipped_not_fit_on_nothing():
    """--baselines prior with no --train-data: prior is dropped and nothing else is built
    (an empty name list must not fall back to "every baseline", fit on zero records)."""
    args = E.argparse.Namespace(baselines_only=True, baselines=["prior"], cache_dir=None, threads=1)
    logged = []
    assert E.build_systems(args, CATALOG, None, log=logged.append) == []
    assert any("skipping prior" in m for m in logged)
