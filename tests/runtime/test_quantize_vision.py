"""int8 vision (training/quantize_vision.py): a nano BitGen with the real ImageNet
EfficientNet-Lite0 backbone is exported (real torch export), upgraded in place by the project's
command, and checked with real onnxruntime on rendered scenes: the tokens stay near float, the
upgraded directory verifies and loads, and damaged or swapped files are still refused.
About 15 s on a loaded 2-core machine (build + export + 12-scene calibration)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from bitgen_core.errors import BitGenError, ModelLoadError
from bitgen_core.runtime import BitGenRuntime
from bitgen_core.runtime.manifest import read_manifest, verify_model_dir
from training import quantize_vision as qv

CALIBRATION = 12
HELDOUT = 16
# Tolerances. Measured on this nano model (real backbone, random pooling projection and
# positions; 16 held-out renders): token cosine min 0.981 / mean 0.988, relative L2 error of
# the tokens minus their position embedding max 0.19 / mean 0.15 (shipped model: see
# scripts/bench_vision.py, `content_rel_err`). The bounds leave room for other CPUs' kernels.
MIN_COSINE = 0.95
MAX_CONTENT_ERROR = 0.35


@pytest.fixture(scope="module")
def lite_dirs(tmp_path_factory):
    """(float dir, int8 dir): one export, one in-place upgrade of a copy."""
    pytest.importorskip("efficientnet_lite_pytorch")
    import os

    import torch

    from bitgen_core.config import BitGenConfig
    from bitgen_core.model import BitGenModel
    from training.export import export_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    torch.manual_seed(7)
    root = tmp_path_factory.mktemp("lite0")
    model = BitGenModel(BitGenConfig.preset("nano", vision_kind="efficientnet_lite0"), pretrained=True).eval()
    export_model(model, root / "float", model_id="test-nano-lite0")
    shutil.copytree(root / "float", root / "int8")
    qv.quantize_directory(root / "int8", n_images=CALIBRATION, seed=11)
    return root / "float", root / "int8"


def _vision(d: Path):
    from bitgen_core.runtime.model_files import load_model_files
    files = load_model_files(d, threads=1, build_sessions=False)
    from bitgen_core.runtime.sessions import build_sessions
    others = tuple(n for n in files.config["graphs"] if n != "vision")
    return files, build_sessions(files, 1, skip=others)["vision"]


def test_int8_tokens_stay_near_float_on_rendered_scenes(lite_dirs):
    fdir, qdir = lite_dirs
    files, fs = _vision(fdir)
    _, qs = _vision(qdir)
    v = files.config["vision"]
    xs = qv.scene_images(HELDOUT, qv.HELDOUT_SEED, v["image_size"], v["mean"], v["std"])
    a = np.stack([fs.run(None, {"images": x[None]})[0][0] for x in xs])
    b = np.stack([qs.run(None, {"images": x[None]})[0][0] for x in xs])
    assert a.shape == b.shape and np.isfinite(b).all()
    fa, fb = a.reshape(len(xs), -1), b.reshape(len(xs), -1)
    cos = (fa * fb).sum(1) / np.linalg.norm(fa, axis=1) / np.linalg.norm(fb, axis=1)
    assert cos.min() >= MIN_COSINE, cos
    # the position embedding is added after the image content: compare the content part
    import onnx
    from onnx import numpy_helper
    proto = onnx.load(str(fdir / "vision.onnx"), load_external_data=False)
    pos = next(numpy_helper.to_array(i) for i in proto.graph.initializer if i.name == "pool.pos")
    ca, cb = a - pos, b - pos
    err = np.linalg.norm((ca - cb).reshape(len(xs), -1), axis=1) / np.linalg.norm(ca.reshape(len(xs), -1), axis=1)
    assert err.max() <= MAX_CONTENT_ERROR, err
    # and it really is an int8 graph now
    ops = {n.op_type for n in onnx.load(str(qdir / "vision.onnx"), load_external_data=False).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_upgraded_directory_verifies_loads_and_selects(lite_dirs):
    fdir, qdir = lite_dirs
    before, after = read_manifest(fdir), read_manifest(qdir)
    assert after["model_id"] == before["model_id"] == "test-nano-lite0"
    assert set(after["files"]) == set(before["files"])
    changed = {f for f in after["files"] if after["files"][f]["sha256"] != before["files"][f]["sha256"]}
    assert changed == {"vision.onnx", "config.json"}
    assert after["files"]["vision.onnx"]["bytes"] < before["files"]["vision.onnx"]["bytes"] / 2
    q = json.loads((qdir / "config.json").read_text())["vision"]["quantization"]
    assert q["calibration"] == {"source": q["calibration"]["source"], "images": CALIBRATION, "seed": 11}
    assert q["float_sha256"] == before["files"]["vision.onnx"]["sha256"]
    report = verify_model_dir(qdir)
    assert "vision" in report.graphs
    rt = BitGenRuntime.load(qdir)
    img = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    sel = rt.select("inspect the flooded basement", image=img, max_trace_tokens=4)
    assert len(sel.robots) == len(rt.catalog.keys) and np.isfinite(sel.confidences).all()
    assert sel.latency_ms["vision"] > 0
    with pytest.raises(BitGenError, match="already quantized"):     # not twice
        qv.quantize_directory(qdir, n_images=2)


def test_cli_upgrade_in_place(lite_dirs, tmp_path, capsys):
    fdir, _ = lite_dirs
    d = tmp_path / "m"
    shutil.copytree(fdir, d)
    (d / "MODEL_CARD.md").write_text("notes added after export, not a model file\n")
    assert qv.main(["--model-dir", str(d), "--images", "4", "--seed", "3"]) == 0
    assert "verify passed" in capsys.readouterr().out
    assert "MODEL_CARD.md" not in read_manifest(d)["files"]    # the card stays editable
    (d / "MODEL_CARD.md").write_text("edited again\n")
    verify_model_dir(d, load_graphs=False)


def test_damaged_or_swapped_int8_graph_is_refused(lite_dirs, tmp_path):
    fdir, qdir = lite_dirs
    d = tmp_path / "m"
    shutil.copytree(qdir, d)
    good = (d / "vision.onnx").read_bytes()
    (d / "vision.onnx").write_bytes(good[:1000] + bytes([good[1000] ^ 0xFF]) + good[1001:])
    with pytest.raises(ModelLoadError, match="vision.onnx fails its sha256"):
        BitGenRuntime.load(d)
    shutil.copy(fdir / "vision.onnx", d / "vision.onnx")       # the float graph under the int8 manifest
    with pytest.raises(ModelLoadError, match="vision.onnx"):
        verify_model_dir(d)
    (d / "vision.onnx").write_bytes(good)
    verify_model_dir(d)


def test_ternary_student_directory_is_refused_and_left_untouched(model_copy):
    manifest = (model_copy / "manifest.json").read_bytes()
    vision = (model_copy / "vision.onnx").read_bytes()
    with pytest.raises(BitGenError, match="no float convolution trunk"):
        qv.quantize_directory(model_copy, n_images=2)
    assert (model_copy / "manifest.json").read_bytes() == manifest
    assert (model_copy / "vision.onnx").read_bytes() == vision
    assert not [p for p in model_copy.iterdir() if p.name.startswith(".quantize-vision-")]


def test_corrupt_directory_is_not_upgraded(model_copy):
    (model_copy / "prefill.onnx").write_bytes(b"\0" * 10)
    with pytest.raises(ModelLoadError, match="prefill.onnx"):
        qv.quantize_directory(model_copy, n_images=2)


def test_quantized_graph_runs_in_the_session_cache(lite_dirs, tmp_path, monkeypatch):
    """The runtime caches the optimised form of the vision graph per machine; the int8 graph
    goes through it like the float one and computes the same tokens from the cache."""
    _, qdir = lite_dirs
    monkeypatch.setenv("BITGEN_CACHE", str(tmp_path))
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    _, first = _vision(qdir)
    assert len(list((tmp_path / "graphs").glob("vision-*.onnx"))) == 1
    _, second = _vision(qdir)
    assert second.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    np.testing.assert_allclose(second.run(None, {"images": x})[0], first.run(None, {"images": x})[0],
                               rtol=0, atol=1e-5)
