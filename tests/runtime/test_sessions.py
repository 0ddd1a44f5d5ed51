"""The per-machine cache of the optimised vision graph (runtime/sessions.py): the first load
writes it, later loads use it with the optimiser off and compute the same image tokens; a
damaged entry is rebuilt, never used; BITGEN_GRAPH_CACHE=0 leaves no file behind."""
from __future__ import annotations

import numpy as np

from bitgen_core.runtime import BitGenRuntime


def _tokens(rt):
    img = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    return rt.encode_image(img)


def test_second_load_uses_the_cached_optimised_graph(exported, tmp_path, monkeypatch):
    monkeypatch.setenv("BITGEN_CACHE", str(tmp_path))
    first = BitGenRuntime.load(exported.directory)
    cached = sorted((tmp_path / "graphs").glob("vision-*.onnx"))
    assert len(cached) == 1 and cached[0].with_suffix(".sha256").is_file()
    stamp = cached[0].stat().st_mtime_ns
    second = BitGenRuntime.load(exported.directory)
    assert cached[0].stat().st_mtime_ns == stamp            # read, not rewritten
    opts = second._s["vision"].get_session_options()
    assert opts.graph_optimization_level.name == "ORT_DISABLE_ALL"
    np.testing.assert_allclose(_tokens(second), _tokens(first), rtol=1e-5, atol=1e-5)


def test_damaged_cache_entry_is_rebuilt(exported, tmp_path, monkeypatch):
    monkeypatch.setenv("BITGEN_CACHE", str(tmp_path))
    ref = _tokens(BitGenRuntime.load(exported.directory))
    entry = next((tmp_path / "graphs").glob("vision-*.onnx"))
    entry.write_bytes(entry.read_bytes()[:-100] + b"\0" * 100)
    rt = BitGenRuntime.load(exported.directory)
    assert rt._s["vision"].get_session_options().graph_optimization_level.name == "ORT_ENABLE_ALL"
    np.testing.assert_allclose(_tokens(rt), ref, rtol=1e-5, atol=1e-5)
    again = BitGenRuntime.load(exported.directory)        # the rebuilt entry is good again
    assert again._s["vision"].get_session_options().graph_optimization_level.name == "ORT_DISABLE_ALL"


def test_cache_can_be_switched_off(exported, tmp_path, monkeypatch):
    monkeypatch.setenv("BITGEN_CACHE", str(tmp_path))
    monkeypatch.setenv("BITGEN_GRAPH_CACHE", "0")
    BitGenRuntime.load(exported.directory)
    assert not (tmp_path / "graphs").exists()
