"""A damaged model directory is refused by BitGenRuntime.load before any inference (issue 7
item 5): truncated or tampered files, a manifest that does not match, a missing file. The
error is a ModelLoadError that names the file, and no onnxruntime session was ever created."""
from __future__ import annotations

import json
import shutil

import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitgen_core.errors import ModelLoadError
from bitgen_core.runtime import BitGenRuntime


@pytest.fixture(scope="module")
def damaged(exported, tmp_path_factory):
    d = tmp_path_factory.mktemp("damaged") / "model"
    shutil.copytree(exported.directory, d)
    files = sorted(json.loads((d / "manifest.json").read_text())["files"])
    return d, [f for f in files if f != "catalog.yaml"]


@pytest.fixture()
def sessions_created(monkeypatch):
    created = []
    real = ort.InferenceSession

    def spy(*args, **kwargs):
        created.append(args[0])
        return real(*args, **kwargs)
    monkeypatch.setattr(ort, "InferenceSession", spy)
    return created


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_truncated_or_tampered_file_is_refused_before_inference(damaged, sessions_created, data):
    d, files = damaged
    rel = data.draw(st.sampled_from(files), label="file")
    path = d / rel
    original = path.read_bytes()
    mode = data.draw(st.sampled_from(["truncate", "flip", "append"]), label="mode")
    if mode == "truncate":
        cut = data.draw(st.integers(0, len(original) - 1), label="cut")
        damaged_bytes = original[:cut]
    elif mode == "flip":
        at = data.draw(st.integers(0, len(original) - 1), label="offset")
        bit = data.draw(st.integers(0, 7), label="bit")
        damaged_bytes = original[:at] + bytes([original[at] ^ (1 << bit)]) + original[at + 1:]
    else:
        damaged_bytes = original + data.draw(st.binary(min_size=1, max_size=64), label="tail")
    sessions_created.clear()
    try:
        path.write_bytes(damaged_bytes)
        with pytest.raises(ModelLoadError) as err:
            BitGenRuntime.load(d)
        assert rel in str(err.value)
        assert "\n" not in str(err.value)
        assert sessions_created == []
    finally:
        path.write_bytes(original)


def test_intact_copy_still_loads(damaged):
    d, _ = damaged
    assert BitGenRuntime.load(d).select("inspect the roof", max_trace_tokens=0).robots


def test_missing_file_is_named(model_copy, sessions_created):
    (model_copy / "decode.onnx").unlink()
    with pytest.raises(ModelLoadError, match="decode.onnx is missing"):
        BitGenRuntime.load(model_copy)
    assert sessions_created == []


def test_manifest_problems_are_refused(model_copy):
    m = json.loads((model_copy / "manifest.json").read_text())
    (model_copy / "manifest.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="manifest.json is unreadable"):
        BitGenRuntime.load(model_copy)
    bad = dict(m, format_version=99)
    (model_copy / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(ModelLoadError, match="format version 99"):
        BitGenRuntime.load(model_copy)
    escape = dict(m, files={**m["files"], "../outside.bin": {"sha256": "0" * 64, "bytes": 1}})
    (model_copy / "manifest.json").write_text(json.dumps(escape))
    with pytest.raises(ModelLoadError, match="invalid entry"):
        BitGenRuntime.load(model_copy)
    (model_copy / "manifest.json").unlink()
    with pytest.raises(ModelLoadError, match="manifest.json is missing"):
        BitGenRuntime.load(model_copy)


def test_missing_directory_says_what_to_do(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        BitGenRuntime.load(tmp_path / "nope")


def test_catalog_edit_needs_no_reexport_and_recomputes_robot_embeddings(model_copy, exported):
    import yaml
    base = BitGenRuntime.load(exported.directory)
    cat = yaml.safe_load((model_copy / "catalog.yaml").read_text())
    cat["robots"].append({"key": "boat", "name": "Surface Boat",
                          "description": "fast boat for rivers, lakes and harbours; carries cargo on water"})
    (model_copy / "catalog.yaml").write_text(yaml.safe_dump(cat))
    rt = BitGenRuntime.load(model_copy)
    assert rt.robot_embeddings.shape[0] == len(base.catalog) + 1
    # the recomputed embeddings of the old robots equal the ones exported with the model
    assert abs(rt.robot_embeddings[:-1] - base.robot_embeddings).max() < 1e-4
    sel = rt.select("ferry supplies across the harbour", max_trace_tokens=0)
    assert "boat" in sel.robots and len(sel.robots) == len(base.catalog) + 1
    cat["robots"] = "broken"
    (model_copy / "catalog.yaml").write_text(yaml.safe_dump(cat))
    with pytest.raises(ModelLoadError, match="catalog.yaml"):
        BitGenRuntime.load(model_copy)
