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


def test_exact_graphs_cached_compute_bit_for_bit_the_same(exported, tmp_path, monkeypatch):
    """prefill / selector / text encoder load from their cached optimised form (optimiser off)
    and give bit-identical selections to the model directory's graphs (cache off). The onnx
    decode backend, the one that still runs prefill.onnx (the numpy one prefills in numpy)."""
    monkeypatch.setenv("BITGEN_CACHE", str(tmp_path))
    BitGenRuntime.load(exported.directory, decode_backend="onnx")      # writes the cache
    cached = BitGenRuntime.load(exported.directory, decode_backend="onnx")
    for name in ("prefill", "selector", "text_encoder"):
        assert len(list((tmp_path / "graphs").glob(f"{name}-*.onnx"))) == 1
        assert cached._s[name].get_session_options().graph_optimization_level.name == "ORT_DISABLE_ALL"
    assert not list((tmp_path / "graphs").glob("head-*.onnx"))
    monkeypatch.setenv("BITGEN_GRAPH_CACHE", "0")
    plain = BitGenRuntime.load(exported.directory, decode_backend="onnx")
    assert plain._s["prefill"].get_session_options().graph_optimization_level.name == "ORT_ENABLE_BASIC"
    img = np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    for task, image in (("inspect the flooded culvert", img), ("carry crates up the stairs", None)):
        a = cached.select(task, image, max_trace_tokens=16)
        b = plain.select(task, image, max_trace_tokens=16)
        assert a.robots == b.robots and a.confidences == b.confidences and a.reasoning == b.reasoning
        assert np.array_equal(cached.encode_fact(task), plain.encode_fact(task))


def _rss_kb() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def test_trim_file_pages_leaves_outputs_and_writable_memory_alone(exported, monkeypatch):
    """Loading ends with the clean file-backed pages unmapped: RSS drops, everything still
    runs and gives the same selection as before the trim; BITGEN_TRIM_FILE_PAGES=0 skips it."""
    import sys
    if not sys.platform.startswith("linux"):
        return
    from bitgen_core.runtime.sessions import trim_file_pages
    monkeypatch.setenv("BITGEN_TRIM_FILE_PAGES", "0")
    rt = BitGenRuntime.load(exported.directory)
    assert trim_file_pages() == 0
    img = np.random.default_rng(2).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    before = rt.select("inspect the flooded culvert", img, max_trace_tokens=16)
    monkeypatch.setenv("BITGEN_TRIM_FILE_PAGES", "1")
    rss = _rss_kb()
    dropped = trim_file_pages()
    assert dropped > 1 << 20 and _rss_kb() < rss
    after = rt.select("inspect the flooded culvert", img, max_trace_tokens=16)
    assert (after.robots, after.confidences, after.reasoning) == (before.robots, before.confidences, before.reasoning)
    assert np.array_equal(rt.encode_fact("the east door is jammed"), rt.encode_fact("the east door is jammed"))


def test_load_trims_once_more_after_the_first_selection(exported, monkeypatch):
    import bitgen_core.runtime.engine as engine
    calls = []
    monkeypatch.setattr(engine, "trim_file_pages", lambda: calls.append(1) or 0)
    rt = BitGenRuntime.load(exported.directory)
    assert calls == [1] and rt._trim_after_first
    rt.select("inspect the flooded culvert", max_trace_tokens=4)
    rt.select("inspect the flooded culvert", max_trace_tokens=4)
    assert calls == [1, 1] and not rt._trim_after_first
