"""The numpy decode step (runtime/decode_np.py) computes what decode.onnx computes: same state and
new K/V for any cache length, with and without an image; rotating each key once at its stream
position equals the graph's rotation by cache slot, evictions included; and the runtime's
traces are those of the onnxruntime decode."""
from __future__ import annotations

import numpy as np
import pytest

from bitgen_core.kvcache_np import SinkKVCache
from bitgen_core.runtime import BitGenRuntime
from bitgen_core.runtime.decode_np import NumpyDecoder
from bitgen_core.runtime.engine import load_model_files
from bitgen_core.runtime.table_rows import TableRows

TASKS = ["inspect the cracked chimney on the roof", "carry crates across the warehouse",
         "search the collapsed garage for people", "check the ferry hull below the waterline",
         "deliver a first-aid kit up the stairs", "patrol the fence at night",
         "photograph the flooded underpass", "open the valve in the pump room"]


@pytest.fixture(scope="module")
def files(exported):
    return load_model_files(exported.directory)


@pytest.fixture(scope="module")
def image_tokens(files):
    rng = np.random.default_rng(3)
    size = files.config["vision"]["image_size"]
    x = rng.standard_normal((1, 3, size, size)).astype(np.float32)
    return files.sessions["vision"].run(None, {"images": x})[0]


def test_export_carries_the_numpy_decode_parameters(files):
    dec = NumpyDecoder.from_model_files(files)
    assert dec is not None and len(dec.layers) == files.model_config.n_layers
    cross = [i for i, layer in enumerate(dec.layers) if layer.xq is not None]
    assert cross == list(files.model_config.cross_attn_layers)
    # the ternary matrices are the packed codes, exactly
    w = dec.layers[0].qkv.w
    assert set(np.unique(w)) <= {-1.0, 0.0, 1.0}
    assert np.array_equal(w, files.ternary["blocks.0.attn.qkv"].T.astype(np.float32))


def _onnx_step(files, x, cache, feeds):
    cfg = files.model_config
    past_k, past_v = cache.past((cfg.n_layers, 1, cfg.n_heads, 0, cfg.head_dim))
    return files.sessions["decode"].run(None, {"x": x, "past_k": past_k, "past_v": past_v, **feeds})


def _feeds(image_tokens, with_image):
    n_img = image_tokens.shape[1]
    return ({"image_tokens": image_tokens, "image_mask": np.ones((1, n_img), bool)} if with_image else
            {"image_tokens": np.zeros_like(image_tokens), "image_mask": np.zeros((1, n_img), bool)})


@pytest.mark.parametrize("length", [0, 1, 9, 40])
@pytest.mark.parametrize("with_image", [False, True])
def test_step_matches_the_onnx_decode_graph(files, image_tokens, length, with_image):
    cfg = files.model_config
    dec = NumpyDecoder.from_model_files(files)
    rng = np.random.default_rng(length + 100 * with_image)
    shape = (cfg.n_layers, 1, cfg.n_heads, length, cfg.head_dim)
    past = (rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32))

    def cache_with_past():
        c = SinkKVCache(cfg.n_sink, cfg.window)
        c.append(*past)
        dec.attach(c)
        return c
    cache = cache_with_past()
    x = files.embed[np.array([[int(rng.integers(0, cfg.vocab_size))]])]
    ref = _onnx_step(files, x, cache, _feeds(image_tokens, with_image))
    state = dec.step(x[0, 0], cache, dec.bind_image(image_tokens if with_image else None))
    assert len(cache) == length + 1
    got = (state, cache.k[..., -1:, :], cache.v[..., -1:, :])
    for name, a, b in zip(("state", "k_new", "v_new"), ref, got):
        assert a.shape == b.shape and b.dtype == np.float32, name
        # float32 rounding only: the int8 codes, hence the integer matmuls, are the same
        np.testing.assert_allclose(b, a, atol=2e-5, rtol=1e-5, err_msg=name)
    if with_image:   # the image really enters the step
        plain = dec.step(x[0, 0], cache_with_past(), None)
        assert np.abs(plain - state).max() > 1e-4


def test_stream_position_rotation_equals_the_graphs_slot_rotation_after_evictions(files, image_tokens):
    """Keys rotated once at their stream position, the query at its stream position and
    (for the sinks) its cache slot: the same state as decode.onnx, which rotates every cached
    key by its slot afresh, at every step of a stream that evicts (2 sinks, window 5)."""
    cfg = files.model_config
    dec = NumpyDecoder.from_model_files(files)
    rng = np.random.default_rng(5)
    cache = SinkKVCache(2, 5)
    shape = (cfg.n_layers, 1, cfg.n_heads, 4, cfg.head_dim)
    cache.append(rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32))
    dec.attach(cache)
    img, feeds = dec.bind_image(image_tokens), _feeds(image_tokens, True)
    for t in range(14):
        x = files.embed[np.array([[int(rng.integers(0, cfg.vocab_size))]])]
        ref_state = _onnx_step(files, x, cache, feeds)[0]
        state = dec.step(x[0, 0], cache, img)
        np.testing.assert_allclose(state, ref_state, atol=5e-5, rtol=1e-4, err_msg=f"step {t}")
    assert cache.seen == 18 and len(cache) == 7 and cache.live_slots() == 8


def test_rotation_far_into_a_stream_is_exact(files):
    """Positions beyond the table use float64 angles: the rotation at 10**9 still preserves
    norms and relative scores (q at m, k at n depends on m - n only)."""
    dec = NumpyDecoder.from_model_files(files)
    rng = np.random.default_rng(2)
    q, k = rng.standard_normal((2, dec.head_dim)).astype(np.float32)

    def score(m, n):
        return float(dec._rotate(q, *dec.rotation(m)) @ dec._rotate(k, *dec.rotation(n)))
    assert abs(score(10**9 + 7, 10**9 + 3) - score(7, 3)) < 1e-4
    assert abs(score(50_000, 49_990) - score(10, 0)) < 1e-4
    cos, sin = dec.rotation(np.array([3, 10**6]))
    assert cos.shape == (2, dec.head_dim) and cos.dtype == np.float32


def test_runtime_traces_equal_the_onnx_decode(exported):
    fast = BitGenRuntime.load(exported.directory, decode_backend="numpy")
    ref = BitGenRuntime.load(exported.directory, decode_backend="onnx")
    assert (fast.decode_backend, ref.decode_backend) == ("numpy", "onnx")
    rng = np.random.default_rng(11)
    same = 0
    for i, task in enumerate(TASKS):
        image = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) if i % 2 else None
        a = fast.select(task, image, max_trace_tokens=24)
        b = ref.select(task, image, max_trace_tokens=24)
        # the numpy runtime also prefills in numpy: probabilities a float32 rounding apart
        assert a.robots == b.robots
        np.testing.assert_allclose(a.confidences, b.confidences, atol=1e-5)
        same += a.reasoning == b.reasoning
    assert same >= len(TASKS) - 1, f"{same}/{len(TASKS)} traces identical"
    # a stream past the window (evictions: every slot re-rotated) stays on the same tokens
    n = fast.config.window + 40
    s_fast = list(fast.trace_stream(TASKS[0], max_new_tokens=n, ignore_eos=True))
    s_ref = list(ref.trace_stream(TASKS[0], max_new_tokens=n, ignore_eos=True))
    agree = sum(x == y for x, y in zip(s_fast, s_ref))
    assert len(s_fast) == n and agree >= 0.95 * n


def test_unknown_decode_backend_is_refused(exported):
    with pytest.raises(ValueError, match="decode_backend"):
        BitGenRuntime.load(exported.directory, decode_backend="cuda")


def test_numpy_runtime_builds_no_decode_session_and_reads_embedding_rows(exported):
    rt = BitGenRuntime.load(exported.directory)
    assert rt.decode_backend == "numpy" and "decode" not in rt._s
    assert isinstance(rt._embed, TableRows) and rt._lm_head is rt._embed     # tied head
    ref = BitGenRuntime.load(exported.directory, decode_backend="onnx")
    assert "decode" in ref._s
    np.testing.assert_array_equal(rt._embed[np.arange(50)], np.load(exported.directory / "weights" / "embed.npy")[:50])


@pytest.mark.parametrize("with_image", [False, True])
@pytest.mark.parametrize("length,m", [(0, 5), (9, 2), (9, 7), (40, 3)])
def test_a_run_of_tokens_in_one_pass_equals_one_step_each(files, image_tokens, with_image, length, m):
    """step_many (the trace grammar's forced runs) writes the same K/V and ends in the same
    state as m single steps; near the window's end it falls back to single steps."""
    cfg = files.model_config
    dec = NumpyDecoder.from_model_files(files)
    rng = np.random.default_rng(7 + length + m)
    shape = (cfg.n_layers, 1, cfg.n_heads, length, cfg.head_dim)
    past = (rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32))
    xs = files.embed[rng.integers(0, cfg.vocab_size, m)]
    img = dec.bind_image(image_tokens if with_image else None)

    def fresh():
        c = SinkKVCache(cfg.n_sink, cfg.window)
        if length:
            c.append(*past)
        dec.attach(c)
        return c
    one, many = fresh(), fresh()
    for x in xs:
        ref = dec.step(x, one, img)
    got = dec.step_many(xs, many, img)
    assert many.seen == one.seen == length + m
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-5)
    for name in ("k", "v", "k_rot"):
        np.testing.assert_allclose(many.buffer(name), one.buffer(name), atol=2e-5, rtol=1e-5, err_msg=name)
    # a chunk that would evict falls back to single steps and stays exact
    full = SinkKVCache(cfg.n_sink, cfg.window)
    full.append(*(rng.standard_normal(shape[:3] + (cfg.n_sink + cfg.window - 1, cfg.head_dim)).astype(np.float32)
                  for _ in range(2)))
    dec.attach(full)
    twin = SinkKVCache(cfg.n_sink, cfg.window)
    twin.append(full.k, full.v)
    dec.attach(twin)
    for x in xs:
        ref = dec.step(x, twin, img)
    np.testing.assert_array_equal(dec.step_many(xs, full, img), ref)


@pytest.mark.parametrize("with_image", [False, True])
def test_one_pass_gives_the_state_after_every_token(files, image_tokens, with_image):
    """step_many(all_states=True), the pass that verifies a draft: row j is the state after
    token j, as single steps give it."""
    cfg = files.model_config
    dec = NumpyDecoder.from_model_files(files)
    rng = np.random.default_rng(21)
    shape = (cfg.n_layers, 1, cfg.n_heads, 6, cfg.head_dim)
    past = [rng.standard_normal(shape).astype(np.float32) for _ in range(2)]
    xs = files.embed[rng.integers(0, cfg.vocab_size, 5)]
    img = dec.bind_image(image_tokens if with_image else None)
    one, many = SinkKVCache(cfg.n_sink, cfg.window), SinkKVCache(cfg.n_sink, cfg.window)
    for c in (one, many):
        c.append(*past)
        dec.attach(c)
    ref = np.concatenate([dec.step(x, one, img) for x in xs])
    got = dec.step_many(xs, many, img, all_states=True)
    assert got.shape == (5, cfg.d_model)
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-5)
    many.rewind(5)
    np.testing.assert_array_equal(got[-1:], dec.step_many(xs, many, img))


def test_a_rewound_cache_is_the_cache_that_never_saw_the_tokens(files):
    """SinkKVCache.rewind (a rejected draft): the next tokens see exactly what they would
    have seen; a cache that has evicted cannot rewind."""
    cfg = files.model_config
    dec = NumpyDecoder.from_model_files(files)
    rng = np.random.default_rng(22)
    shape = (cfg.n_layers, 1, cfg.n_heads, 4, cfg.head_dim)
    past = [rng.standard_normal(shape).astype(np.float32) for _ in range(2)]
    draft, real = (files.embed[rng.integers(0, cfg.vocab_size, k)] for k in (6, 3))
    a, b = SinkKVCache(cfg.n_sink, cfg.window), SinkKVCache(cfg.n_sink, cfg.window)
    for c in (a, b):
        c.append(*past)
        dec.attach(c)
    dec.step_many(draft, a, None, all_states=True)
    a.rewind(6)
    assert a.seen == b.seen == 4
    np.testing.assert_array_equal(dec.step_many(real, a, None), dec.step_many(real, b, None))
    np.testing.assert_array_equal(a.k, b.k)
    small = SinkKVCache(1, 3)
    small.append(*(rng.standard_normal((1, 1, 2, 5, 4)).astype(np.float32) for _ in range(2)))
    with pytest.raises(ValueError, match="evicted"):
        small.rewind(1)
    with pytest.raises(ValueError, match="rewind"):
        b.rewind(b.seen + 1)


@pytest.mark.parametrize("with_image", [False, True])
def test_numpy_prefill_matches_the_prefill_graph(files, image_tokens, with_image):
    """decode_np.prefill (memory tokens from z_read, then one backbone pass) gives the state at
    [SEP] and the prompt's K/V that prefill.onnx gives."""
    cfg = files.model_config
    dec = NumpyDecoder.from_model_files(files)
    assert dec.memory_prefix is not None and NumpyDecoder.covers_prefill(files)
    rng = np.random.default_rng(31)
    tokens = files.config["tokens"]
    prompt = [tokens["sink"]] + [tokens["pad"]] * cfg.n_memory_tokens + \
        rng.integers(1000, cfg.vocab_size, 11).tolist() + [tokens["sep"]]
    z_read = rng.standard_normal(cfg.memory_dim).astype(np.float32)
    ref_state, ref_k, ref_v = files.sessions["prefill"].run(None, {
        "x": files.embed[np.array([prompt])], "z_read": z_read[None], **_feeds(image_tokens, with_image)})
    cache = SinkKVCache(cfg.n_sink, cfg.window)
    state = dec.prefill(files.embed[np.array(prompt)], z_read, cache,
                        dec.bind_image(image_tokens if with_image else None))
    np.testing.assert_allclose(state, ref_state, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(cache.k, ref_k, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(cache.v, ref_v, atol=2e-5, rtol=1e-5)
    # the memory read enters: another z_read, another state
    other = dec.prefill(files.embed[np.array(prompt)], -z_read, SinkKVCache(cfg.n_sink, cfg.window))
    assert np.abs(other - dec.prefill(files.embed[np.array(prompt)], z_read,
                                      SinkKVCache(cfg.n_sink, cfg.window))).max() > 1e-4


def test_runtime_prefills_in_numpy_and_older_exports_keep_the_graph(exported, model_copy):
    """An export with memory_prefix.npz prefills in numpy (no prefill.onnx session); one from
    before it runs prefill.onnx, and training/add_numpy_prefill.py upgrades it in place with
    the same parameters a fresh export writes, copied from prefill.onnx."""
    import json

    from bitgen_core.runtime.manifest import write_manifest
    from training.add_numpy_prefill import add_numpy_prefill
    rt = BitGenRuntime.load(exported.directory)
    assert rt._np_prefill and "prefill" not in rt._s
    ref = BitGenRuntime.load(exported.directory, decode_backend="onnx")
    assert not ref._np_prefill and "prefill" in ref._s
    a = rt.select(TASKS[2], max_trace_tokens=0)
    b = ref.select(TASKS[2], max_trace_tokens=0)
    assert a.robots[0] == b.robots[0]
    np.testing.assert_allclose(a.confidences, b.confidences, atol=1e-5)
    # an export from before the numpy prefill
    (model_copy / "memory_prefix.npz").unlink()
    config = json.loads((model_copy / "config.json").read_text())
    del config["decode_numpy"]["prefill_file"]
    (model_copy / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
    manifest = json.loads((model_copy / "manifest.json").read_text())
    write_manifest(model_copy, manifest["model_id"], only=[f for f in manifest["files"] if f != "memory_prefix.npz"])
    old = BitGenRuntime.load(model_copy)
    assert old.decode_backend == "numpy" and not old._np_prefill and "prefill" in old._s
    np.testing.assert_allclose(old.select(TASKS[2], max_trace_tokens=0).confidences, b.confidences, atol=1e-6)
    # upgraded in place: the fresh export's parameters, the same model id, numpy prefill
    add_numpy_prefill(model_copy)
    with np.load(model_copy / "memory_prefix.npz") as got, np.load(exported.directory / "memory_prefix.npz") as want:
        assert sorted(got.files) == sorted(want.files) and "memory_pos" in got.files
        for k in want.files:
            np.testing.assert_array_equal(got[k], want[k])
    up = BitGenRuntime.load(model_copy)
    assert up._np_prefill and "prefill" not in up._s and up.model_id == rt.model_id
    assert up.select(TASKS[2], max_trace_tokens=0).confidences == a.confidences


def test_the_prompt_pass_norms_all_rows_at_once_and_agrees_with_the_per_row_norm(files):
    """prefill's pass sums each row's squares in one einsum (`_prompt_rows`), the trace's
    passes with a dot per row (`_rows`): the same linear up to float32 rounding, the same
    int8 codes on all but a rounding boundary's worth of entries."""
    dec = NumpyDecoder.from_model_files(files)
    lin = dec.layers[0].qkv
    assert lin.norm is not None
    x = np.random.default_rng(4).standard_normal((60, dec.d)).astype(np.float32) * 3
    a, b = dec._prompt_rows(x, lin), dec._rows(x, lin)
    assert a.shape == b.shape == (60, lin.w.shape[1])
    scale = np.abs(b).max()
    assert np.abs(a - b).max() <= 0.02 * scale
    assert np.mean(np.isclose(a, b, rtol=0, atol=1e-5 * scale)) > 0.97
