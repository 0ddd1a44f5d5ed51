"""BitGenRuntime: the selection contract, streaming, bounded cache, input errors, no torch."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bitgen_core.errors import InputError
from bitgen_core.kvcache_np import SinkKVCache
from bitgen_core.runtime import BitGenRuntime, Selection

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def rt(exported):
    return BitGenRuntime.load(exported.directory)


def test_runtime_never_imports_torch(exported):
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from bitgen_core.runtime import BitGenRuntime
        rt = BitGenRuntime.load({str(exported.directory)!r})
        rt.memory.write("drone_grounded", "the drone is grounded")
        sel = rt.select("inspect the roof", np.zeros((64, 64, 3), np.uint8))
        assert sel.robots, sel
        print("torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_selection_ranks_every_robot_best_first(rt):
    sel = rt.select("carry the crates across the warehouse", top_k=2, max_trace_tokens=5)
    assert isinstance(sel, Selection)
    assert sorted(sel.robots) == sorted(rt.catalog.keys)
    assert sel.confidences == sorted(sel.confidences, reverse=True)
    assert all(0.0 <= c <= 1.0 for c in sel.confidences)
    assert sel.top_k == 2 and sel.model_id == "test-nano"
    assert set(sel.latency_ms) == {"vision", "memory", "prefill", "select", "trace", "total"}
    assert sel.latency_ms["total"] >= sel.latency_ms["trace"]
    assert rt.select("x", top_k=99, max_trace_tokens=0).top_k == len(rt.catalog)


def test_image_changes_the_answer_and_is_validated(rt):
    rng = np.random.default_rng(0)
    a = rt.select("inspect the area", rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), max_trace_tokens=0)
    b = rt.select("inspect the area", None, max_trace_tokens=0)
    assert a.confidences != b.confidences
    for bad in (np.zeros((10, 10, 3), np.float32), np.zeros((10, 10), np.uint8), "not an image"):
        with pytest.raises(InputError):
            rt.select("inspect the area", bad)


def test_bad_tasks_are_input_errors(rt):
    for task in ("", "   ", "x" * 5000, "a\x00b", None):
        with pytest.raises(InputError):
            rt.select(task)


def test_trace_is_streamed_piece_by_piece_as_generated(rt):
    pieces, during = [], []
    sel = rt.select("search the rubble for survivors", max_trace_tokens=16,
                    on_token=lambda p: pieces.append(p))
    assert pieces and "".join(pieces) == sel.reasoning
    # tokens arrive while the trace is being generated, one call per piece
    stream = rt.trace_stream("search the rubble for survivors", max_new_tokens=16)
    first = next(stream)
    during.append(first)
    during.extend(stream)
    assert len(during) <= 16


def test_stream_runs_past_the_window_at_constant_cache_size(rt):
    cfg = rt.config
    cache = SinkKVCache(cfg.n_sink, cfg.window)
    n = cfg.window + 150
    tokens = list(rt.trace_stream("patrol the fence", max_new_tokens=n, ignore_eos=True, cache=cache))
    assert len(tokens) == n
    assert len(cache) == cfg.n_sink + cfg.window
    assert cache.seen > n   # prompt + generated tokens went through; only sinks + window are kept


def test_threads_option_reaches_onnxruntime(exported):
    rt2 = BitGenRuntime.load(exported.directory, threads=2)
    opts = rt2._s["head"].get_session_options()
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1


def test_default_model_dir_comes_from_the_environment(exported, monkeypatch):
    monkeypatch.setenv("BITGEN_MODEL_DIR", str(exported.directory))
    assert BitGenRuntime.load().model_id == "test-nano"


def _mapped_rss_kb(path) -> int:
    """Resident kB of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        head = line.split(" ", 1)[0]
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_selections_keep_the_embedding_file_out_of_rss(exported, tmp_path):
    """Rows are read from the file (table_rows.py), never faulted in through a mapping."""
    import shutil
    d = tmp_path / "model"
    shutil.copytree(exported.directory, d)      # a file no other runtime of this process maps
    rt = BitGenRuntime.load(d)
    for task in ("inspect the roof", "carry the crates", "search the rubble", "check the hull"):
        rt.select(task, max_trace_tokens=16)
    assert _mapped_rss_kb((d / "weights" / "embed.npy").resolve()) == 0
    assert 0 < rt._embed.cached_rows < 2000
