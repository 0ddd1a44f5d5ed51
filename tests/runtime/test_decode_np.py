"""The numpy decode step (runtime/decode_np.py) computes what decode.onnx computes: same state and
new K/V for any cache length, with and without an image; rotating only the new key equals
rotating the whole cache; and the runtime's traces are those of the onnxruntime decode."""
from __future__ import annotations

import numpy as np
import pytest

from bitgen_core.runtime import BitGenRuntime
from bitgen_core.runtime.decode_np import NumpyDecoder
from bitgen_core.runtime.engine import load_model_files

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


@pytest.mark.parametrize("length", [0, 1, 9, 40])
@pytest.mark.parametrize("with_image", [False, True])
def test_step_matches_the_onnx_decode_graph(files, image_tokens, length, with_image):
    cfg = files.model_config
    dec = NumpyDecoder.from_model_files(files)
    rng = np.random.default_rng(length + 100 * with_image)
    shape = (cfg.n_layers, 1, cfg.n_heads, length, cfg.head_dim)
    past_k = rng.standard_normal(shape).astype(np.float32)
    past_v = rng.standard_normal(shape).astype(np.float32)
    x = files.embed[np.array([[int(rng.integers(0, cfg.vocab_size))]])]
    n_img = cfg.n_image_tokens
    feeds = ({"image_tokens": image_tokens, "image_mask": np.ones((1, n_img), bool)} if with_image else
             {"image_tokens": np.zeros_like(image_tokens), "image_mask": np.zeros((1, n_img), bool)})
    ref = files.sessions["decode"].run(None, {"x": x, "past_k": past_k, "past_v": past_v, **feeds})
    got = dec.step(x, past_k, past_v, dec.bind_image(image_tokens if with_image else None))
    for name, a, b in zip(("state", "k_new", "v_new"), ref, got[:3]):
        assert a.shape == b.shape and b.dtype == np.float32, name
        # float32 rounding only: the int8 codes, hence the integer matmuls, are the same
        np.testing.assert_allclose(b, a, atol=2e-5, rtol=1e-5, err_msg=name)
    if with_image:   # the image really enters the step
        plain = dec.step(x, past_k, past_v, None)[0]
        assert np.abs(plain - got[0]).max() > 1e-4


def test_reusing_rotated_keys_equals_rotating_the_whole_cache(files, image_tokens):
    cfg = files.model_config
    dec = NumpyDecoder.from_model_files(files)
    rng = np.random.default_rng(5)
    shape = (cfg.n_layers, 1, cfg.n_heads, 6, cfg.head_dim)
    k = rng.standard_normal(shape).astype(np.float32)
    v = rng.standard_normal(shape).astype(np.float32)
    img = dec.bind_image(image_tokens)
    rotated = None
    for t in range(5):
        x = files.embed[np.array([[int(rng.integers(0, cfg.vocab_size))]])]
        fresh = dec.step(x, k, v, img, None)
        reused = dec.step(x, k, v, img, rotated)
        for a, b in zip(fresh, reused):
            if isinstance(a, list):
                for ra, rb in zip(a, b):
                    np.testing.assert_array_equal(ra, rb)
            else:
                np.testing.assert_array_equal(a, b)
        rotated = reused[3]
        k = np.concatenate([k, reused[1]], axis=-2)
        v = np.concatenate([v, reused[2]], axis=-2)
        assert all(r.shape[1] == k.shape[-2] for r in rotated)


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
        assert a.robots == b.robots and a.confidences == b.confidences
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


def test_numpy_runtime_builds_no_decode_session_and_maps_the_embedding(exported):
    rt = BitGenRuntime.load(exported.directory)
    assert rt.decode_backend == "numpy" and "decode" not in rt._s
    assert isinstance(rt._embed, np.memmap) and not rt._embed.flags.writeable
    ref = BitGenRuntime.load(exported.directory, decode_backend="onnx")
    assert "decode" in ref._s
    np.testing.assert_array_equal(np.asarray(rt._embed[:50]), np.load(exported.directory / "weights" / "embed.npy")[:50])
