"""training/parity.py compares a torch checkpoint with its exported directory on real inputs
(dev-style tasks with images and memory facts) and says PASS/FAIL against the issue's bar;
a directory that is not that checkpoint's export fails it."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from training import parity


def _dev(tmp_path):
    img = tmp_path / "images"
    img.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(img / "a.png")
    tasks = [{"id": f"d{i}", "task": t, "robots": ["drone"], "image": "images/a.png" if i % 2 else None}
             for i, t in enumerate(["inspect the roof", "carry crates to the dock", "film the stadium",
                                    "check the ferry hull", "search the rubble for people"])]
    dev = tmp_path / "tasks.jsonl"
    dev.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    case = {"id": "m1", "fact": {"key": "drone-status", "text": "the drone is grounded"},
            "task": "film the stadium from above", "task_paraphrase": "get aerial shots of the stadium",
            "unrelated_task": "carry crates to the dock"}
    mem = tmp_path / "memory_cases.jsonl"
    mem.write_text(json.dumps(case) + "\n")
    return dev, mem


def test_inputs_cover_images_and_facts(tmp_path):
    dev, mem = _dev(tmp_path)
    inputs = parity.load_inputs(dev, mem, 100)
    assert len(inputs) == 8
    assert sum(x["image"] is not None for x in inputs) == 2
    assert sum(bool(x["facts"]) for x in inputs) == 3
    assert len(parity.load_inputs(dev, mem, 4)) == 4


def test_the_export_of_a_checkpoint_agrees_with_it(exported, tmp_path, monkeypatch):
    dev, mem = _dev(tmp_path)
    monkeypatch.chdir(tmp_path)      # a relative --dev path, as in the documented command
    dev, mem = dev.relative_to(tmp_path), mem.relative_to(tmp_path)
    out = tmp_path / "parity.json"
    rc = parity.main(["--checkpoint", str(exported.checkpoint), "--model-dir", str(exported.directory),
                      "--dev", str(dev), "--memory-cases", str(mem), "--traces", "3", "--out-json", str(out)])
    r = json.loads(out.read_text())
    assert r["n"] == 8 and r["with_image"] == 2 and r["with_facts"] == 3
    assert r["top1_agreement"] == 1.0 and r["max_prob_diff"] <= 0.02 and r["disagreements"] == []
    assert r["traces_compared"] == 3 and r["traces_identical"] >= 2
    assert len(r["trace_differences"]) == 3 - r["traces_identical"]
    assert rc == 1 and r["pass"] is False     # only 8 inputs: the bar asks for >= 200


def test_another_models_directory_fails_parity(exported, tmp_path):
    import torch

    from bitgen_core.config import BitGenConfig
    from bitgen_core.model import BitGenModel
    torch.manual_seed(99)
    other = BitGenModel(BitGenConfig.preset("nano", vision_kind="ternary_student"), pretrained=False).eval()
    ckpt = tmp_path / "other.pt"
    other.save(ckpt)
    dev, mem = _dev(tmp_path)
    out = tmp_path / "parity.json"
    parity.main(["--checkpoint", str(ckpt), "--model-dir", str(exported.directory), "--dev", str(dev),
                 "--memory-cases", str(mem), "--traces", "2", "--out-json", str(out)])
    r = json.loads(out.read_text())
    assert r["max_prob_diff"] > 0.02
    # each input whose top-1 differs is listed with both sides' probabilities of both robots
    assert len(r["disagreements"]) == r["top1_disagreements"]
    for d in r["disagreements"]:
        pair = {d["top1_torch"], d["top1_runtime"]}
        assert len(pair) == 2 and set(d["torch"]) == set(d["runtime"]) == pair
    # each compared trace that differs is listed with both sides' text
    assert r["traces_compared"] == 2 and len(r["trace_differences"]) == 2 - r["traces_identical"] > 0
    for d in r["trace_differences"]:
        assert d["torch"] != d["runtime"] and isinstance(d["runtime"], str)
