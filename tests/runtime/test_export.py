"""training/export.py: what the model directory holds and how the ternary weights are stored."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from bitgen_core.errors import ModelLoadError
from bitgen_core.model import BitGenModel
from bitgen_core.quant import bitlinear_layers, set_export_mode
from bitgen_core.runtime.manifest import decode_t2, encode_t2, sha256_file, verify_model_dir

GRAPHS = ("vision", "text_encoder", "prefill", "decode", "selector", "head")


def test_directory_holds_every_part_and_the_manifest_lists_each_file(exported):
    d = exported.directory
    for name in GRAPHS:
        assert (d / f"{name}.onnx").is_file()
    for name in ("memory.npz", "tokenizer.json", "catalog.yaml", "config.json", "robot_embeddings.npy",
                 "weights/embed.npy"):
        assert (d / name).is_file()
    manifest = json.loads((d / "manifest.json").read_text())
    on_disk = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    for rel, entry in manifest["files"].items():
        assert (entry["sha256"], entry["bytes"]) == sha256_file(d / rel)
    assert manifest["model_id"] == "test-nano" and manifest["editable"] == ["catalog.yaml"]


def test_packed_files_hold_exactly_the_models_ternary_codes(exported):
    model = BitGenModel.load(exported.checkpoint)
    layers = bitlinear_layers(model)
    assert layers
    for name, layer in layers:
        q, gamma = decode_t2((exported.directory / "weights" / f"{name}.t2").read_bytes(), name)
        q_ref, g_ref = layer.ternary_weight()
        assert np.array_equal(q, q_ref.numpy()), name
        assert gamma == pytest.approx(float(g_ref), rel=1e-7)


def test_graphs_reference_packed_weights_instead_of_embedding_them(exported):
    cfg = json.loads((exported.directory / "config.json").read_text())
    n_external = 0
    for name in GRAPHS[:-1]:
        proto = onnx.load(str(exported.directory / f"{name}.onnx"), load_external_data=False)
        for init in proto.graph.initializer:
            if init.data_type == onnx.TensorProto.INT8 and len(init.dims) == 2:
                assert init.data_location == onnx.TensorProto.EXTERNAL, (name, init.name)
                n_external += 1
        ops = {n.op_type for n in proto.graph.node}
        if name != "vision":
            assert "MatMulInteger" in ops
        # activations reach MatMulInteger as uint8 with zero point 128 (the fast u8 x s8 kernel)
        for n in proto.graph.node:
            if n.op_type == "MatMulInteger":
                assert len(n.input) == 3
        assert not any(n.op_type == "Constant" and n.attribute[0].t.data_type == onnx.TensorProto.INT8
                       and len(n.attribute[0].t.dims) == 2 for n in proto.graph.node)
    assert n_external == sum(len(g["ternary"]) for g in cfg["graphs"].values())
    assert n_external >= len(cfg["ternary"])   # every layer is used by some graph


def test_a_graph_without_its_packed_weights_refuses_to_load(exported):
    with pytest.raises(Exception, match="bitgen-packed"):
        ort.InferenceSession(str(exported.directory / "decode.onnx"), providers=["CPUExecutionProvider"])


def test_packed_ternary_is_a_sixteenth_of_float32(exported):
    cfg = json.loads((exported.directory / "config.json").read_text())
    n = sum(int(np.prod(v["shape"])) for v in cfg["ternary"].values())
    packed = sum((exported.directory / "weights" / f"{k}.t2").stat().st_size for k in cfg["ternary"])
    assert packed <= 4 * n / 8
    assert packed < 4 * n / 15


def test_t2_round_trip_and_corruption_is_refused():
    q = np.random.default_rng(0).integers(-1, 2, size=(7, 13)).astype(np.int8)
    data = encode_t2(q, 0.25)
    back, gamma = decode_t2(data)
    assert np.array_equal(back, q) and gamma == 0.25
    with pytest.raises(ModelLoadError, match="packed ternary"):
        decode_t2(data[:-3])
    bad = bytearray(data)
    bad[-1] = 0xFF   # code 3 is not a ternary value
    with pytest.raises(ModelLoadError, match="packed ternary"):
        decode_t2(bytes(bad))


def test_verify_reports_the_model(exported):
    report = verify_model_dir(exported.directory)
    assert report.model_id == "test-nano"
    assert set(report.graphs) == set(GRAPHS)
    assert report.ternary_layers == len(bitlinear_layers(BitGenModel.load(exported.checkpoint)))
    assert "OK test-nano" in report.summary()


def test_a_forced_re_export_keeps_the_directorys_own_files_and_leaves_no_temporaries(exported, tmp_path):
    """`make model` re-exports into models/default with --force: the model card (not an export
    file) survives, export files are replaced, a file the old manifest listed is not kept."""
    from training.export import export_model
    target = tmp_path / "m"
    shutil.copytree(exported.directory, target)
    card = b"# Model card\nwritten by hand\n"
    (target / "MODEL_CARD.md").write_bytes(card)
    (target / "notes").mkdir()
    (target / "notes" / "ops.txt").write_text("calibrated 2026-12-07\n")
    (target / "config.json").write_text("{}")                  # damaged export file: replaced
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["files"]["old_graph.onnx"] = "0" * 64               # listed by the old export only
    (target / "manifest.json").write_text(json.dumps(manifest))
    (target / "old_graph.onnx").write_bytes(b"stale")
    model = BitGenModel.load(exported.checkpoint)
    export_model(model, target, model_id="test-nano", overwrite=True)
    torch.set_num_threads(1)
    assert (target / "MODEL_CARD.md").read_bytes() == card
    assert (target / "notes" / "ops.txt").read_text() == "calibrated 2026-12-07\n"
    assert not (target / "old_graph.onnx").exists()
    assert json.loads((target / "config.json").read_text())["model_id"] == "test-nano"
    assert verify_model_dir(target).model_id == "test-nano"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_export_refuses_to_overwrite_without_force(exported, tmp_path):
    from bitgen_core.errors import BitGenError
    from training.export import export_model
    model = BitGenModel.load(exported.checkpoint)
    target = tmp_path / "m"
    target.mkdir()
    with pytest.raises(BitGenError, match="--force"):
        export_model(model, target)
    torch.set_num_threads(1)


def test_a_smaller_camera_frame_is_carried_from_the_config_to_the_runtime(tmp_path):
    """image_size is part of the model: the encoder, the export's vision.onnx and the
    runtime's preprocessing all use it, and the runtime's image tokens equal torch's."""
    from bitgen_core.config import BitGenConfig
    from bitgen_core.errors import InputError
    from bitgen_core.runtime import BitGenRuntime
    from training.export import export_model

    with pytest.raises(InputError, match="image_size"):
        BitGenConfig.preset("nano", image_size=100)
    torch.manual_seed(7)
    model = BitGenModel(BitGenConfig.preset("nano", vision_kind="ternary_student", image_size=128),
                        pretrained=False).eval()
    assert model.vision.image_size == 128
    export_model(model, tmp_path / "m", model_id="test-nano-128")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["vision"]["image_size"] == 128 and cfg["model"]["image_size"] == 128
    frame = np.random.default_rng(3).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    got = BitGenRuntime.load(tmp_path / "m", threads=1).encode_image(frame)
    with torch.no_grad():
        want = model.encode_image(model.preprocess_image(frame)).numpy()
    assert got.shape == want.shape == (1, model.config.n_image_tokens, model.config.d_model)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_exporting_the_same_checkpoint_twice_gives_the_same_bytes(exported, tmp_path):
    """The export is a function of the checkpoint (no timestamp), so a rerun of the recipe
    can be checked file by file against the shipped directory."""
    from training.export import export_model
    model = BitGenModel.load(exported.checkpoint).eval()
    export_model(model, tmp_path / "again", model_id="test-nano")
    first = {p.relative_to(exported.directory): p.read_bytes() for p in exported.directory.rglob("*") if p.is_file()}
    again = {p.relative_to(tmp_path / "again"): p.read_bytes() for p in (tmp_path / "again").rglob("*") if p.is_file()}
    assert first.keys() == again.keys()
    assert [k for k in first if first[k] != again[k]] == []


def test_stored_robot_embeddings_are_the_torch_models_own(exported):
    """robot_embeddings.npy holds what the torch model selects with: its inference form (eval,
    no gradients), the integer math the exported graphs do, not the fake-quant training form
    (an int8 code flip away on the shipped model)."""
    model = BitGenModel.load(exported.checkpoint).eval()
    with torch.no_grad():
        want = model._robot_embeddings(model.catalog).float().numpy()
    np.testing.assert_array_equal(np.load(exported.directory / "robot_embeddings.npy"), want)
    with torch.no_grad():
        set_export_mode(model, True)
        integer = model._robot_embeddings(model.catalog).float().numpy()
        set_export_mode(model, False)
    np.testing.assert_array_equal(integer, want)
