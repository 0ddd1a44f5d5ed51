"""Rotary + attention sinks: decode == full attention, the positional trick, constant memory,
torch/numpy cache agreement, and the exported cache-in/cache-out decode graph."""

import io

import numpy as np
import onnxruntime as ort
import pytest
import torch

from bitgen_core import kvcache_np
from bitgen_core.attention import CausalSelfAttention, Rotary, SinkKVCache, attend_with_cache
from bitgen_core.quant import set_export_mode

torch.set_num_threads(1)


def make_attn(d=32, h=4, seed=0):
    torch.manual_seed(seed)
    return CausalSelfAttention(d, h).eval()


def test_rotary_matches_complex_rotation_and_is_relative():
    rot = Rotary(8)
    x = torch.randn(5, 8)
    pos = torch.arange(5)
    cos, sin = rot.cos_sin(pos)
    y = Rotary.rotate(x, cos, sin)
    # reference: pairs (x_i, x_{i+4}) as complex numbers times exp(i * pos * theta_i)
    theta = 10000.0 ** (-torch.arange(0, 8, 2).float() / 8)
    z = torch.complex(x[:, :4], x[:, 4:]) * torch.polar(torch.ones(5, 4), pos[:, None] * theta)
    torch.testing.assert_close(y, torch.cat([z.real, z.imag], -1), rtol=1e-5, atol=1e-5)
    # scores depend only on the relative distance
    q, k = torch.randn(8), torch.randn(8)

    def score(m, n):
        cm, sm = rot.cos_sin(torch.tensor([m]))
        cn, sn = rot.cos_sin(torch.tensor([n]))
        return (Rotary.rotate(q, cm, sm) * Rotary.rotate(k, cn, sn)).sum()
    torch.testing.assert_close(score(7, 3), score(104, 100), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(score(7, 3), score(7, 5), atol=1e-3)


def test_decode_equals_full_attention_while_the_stream_fits():
    attn = make_attn()
    x = torch.randn(2, 14, 32)
    with torch.no_grad():
        full = attn(x)
        cache = SinkKVCache(sink_size=4, window_size=12)  # 16 >= 14: nothing evicted
        steps = torch.stack([attn.step(x[:, t], cache) for t in range(14)], dim=1)
        cache2 = SinkKVCache(sink_size=4, window_size=12)
        chunked = torch.cat([attn.prefill(x[:, :6], cache2)] +
                            [attn.step(x[:, t:t + 1], cache2) for t in range(6, 14)], dim=1)
    torch.testing.assert_close(steps, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-5)
    assert len(cache) == 14 and cache.stream_positions.tolist() == list(range(14))


def test_after_eviction_positions_are_reassigned_inside_the_cache():
    attn = make_attn(seed=1)
    s, r, total = 2, 5, 20
    x = torch.randn(1, total, 32)
    cache = SinkKVCache(sink_size=s, window_size=r)
    with torch.no_grad():
        for t in range(total):
            kept = cache.stream_positions.tolist()
            y = attn.step(x[:, t], cache)
            # the same tokens run as one contiguous sequence (positions 0..L-1) give y_t
            ref = attn(x[:, kept + [t]])[:, -1]
            torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    # and it is not what the un-evicted full attention would give
    assert not torch.allclose(y, attn(x)[:, -1], atol=1e-3)


def test_ten_thousand_steps_constant_memory_sinks_kept_oldest_evicted():
    attn = make_attn(d=16, h=2, seed=2)
    s, r = 4, 8
    cache = SinkKVCache(sink_size=s, window_size=r)
    sizes = set()
    with torch.no_grad():
        x = torch.randn(10_000, 1, 16)
        first_k = None
        for t in range(10_000):
            y = attn.step(x[t], cache)
            if t == s - 1:
                first_k = cache.k[..., :s, :].clone()
            if t >= s + r:
                sizes.add((tuple(cache.k.shape), tuple(cache.v.shape)))
    assert torch.isfinite(y).all()
    assert sizes == {((1, 2, s + r, 8), (1, 2, s + r, 8))}
    assert cache.seen == 10_000
    assert cache.stream_positions.tolist() == list(range(s)) + list(range(10_000 - r, 10_000))
    torch.testing.assert_close(cache.k[..., :s, :], first_k)  # sinks untouched


def test_torch_and_numpy_caches_agree():
    rng = np.random.default_rng(0)
    tc, nc = SinkKVCache(3, 6), kvcache_np.SinkKVCache(3, 6)
    for t in [1, 2, 1, 5, 1, 12, 1, 1, 3]:  # chunks smaller and larger than the capacity
        k = rng.standard_normal((2, 4, t, 8)).astype(np.float32)
        v = rng.standard_normal((2, 4, t, 8)).astype(np.float32)
        tc.append(torch.from_numpy(k), torch.from_numpy(v))
        nc.append(k, v)
        np.testing.assert_array_equal(tc.k.numpy(), nc.k)
        np.testing.assert_array_equal(tc.v.numpy(), nc.v)
        np.testing.assert_array_equal(tc.stream_positions.numpy(), nc.stream_positions)
    assert len(nc) == nc.capacity == 9 and nc.seen == tc.seen == 27
    assert nc.stream_positions.tolist() == [0, 1, 2] + list(range(21, 27))


def test_numpy_cache_ten_thousand_appends_constant_memory():
    nc = kvcache_np.SinkKVCache(4, 16)
    one = np.ones((2, 2, 1, 4), np.float32)
    sizes = set()
    for t in range(10_000):
        nc.append(one * t, -one * t)
        if t >= nc.capacity:
            sizes.add(nc.nbytes)
    assert len(sizes) == 1 and len(nc) == 20
    assert nc.k[0, 0, :, 0].tolist() == [0, 1, 2, 3] + list(range(9_984, 10_000))
    with pytest.raises(ValueError):
        nc.append(np.ones((2, 2, 1, 5), np.float32), np.ones((2, 2, 1, 5), np.float32))


def test_padding_mask_matches_unpadded_sequences():
    attn = make_attn(seed=3)
    a, b = torch.randn(1, 9, 32), torch.randn(1, 5, 32)
    batch = torch.cat([a, torch.cat([b, torch.randn(1, 4, 32)], 1)])
    mask = torch.tensor([[True] * 9, [True] * 5 + [False] * 4])
    with torch.no_grad():
        y = attn(batch, padding_mask=mask)
        torch.testing.assert_close(y[:1], attn(a), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(y[1:, :5], attn(b), rtol=1e-5, atol=1e-5)
        left = attn(batch, padding_mask=mask.flip(1))  # left padding: no NaN from empty rows
    assert torch.isfinite(left).all()


def test_attend_with_cache_is_causal_among_new_tokens():
    rot = Rotary(8)
    q, k, v = torch.randn(1, 1, 3, 8), torch.randn(1, 1, 7, 8), torch.randn(1, 1, 7, 8)
    out = attend_with_cache(q, k, v, rot)
    v2 = v.clone()
    v2[..., 6, :] += 10.0  # changing the last token must not affect the two earlier queries
    out2 = attend_with_cache(q, k, v2, rot)
    torch.testing.assert_close(out[..., :2, :], out2[..., :2, :])
    assert not torch.allclose(out[..., 2, :], out2[..., 2, :])


class _Decode(torch.nn.Module):
    def __init__(self, attn):
        super().__init__()
        self.attn = attn

    def forward(self, x, past_k, past_v):
        return self.attn.decode(x, past_k, past_v)


@pytest.mark.parametrize("integer", [False, True])
def test_exported_decode_graph_streams_with_numpy_cache(integer):
    attn = make_attn(seed=4)
    s, r, steps = 2, 6, 20
    x = torch.randn(steps, 1, 1, 32)
    prompt = torch.randn(1, 5, 32)
    with torch.no_grad():
        cache = SinkKVCache(s, r)
        expect_prompt = attn.prefill(prompt, cache).numpy()
        expect = [attn.step(x[t], cache).numpy() for t in range(steps)]
        if integer:
            set_export_mode(attn, True)
        buf = io.BytesIO()
        past = torch.zeros(1, 4, 3, 8)
        torch.onnx.export(_Decode(attn), (x[0], past, past), buf, opset_version=17, dynamo=False,
                          input_names=["x", "past_k", "past_v"], output_names=["y", "k_new", "v_new"],
                          dynamic_axes={"x": {0: "batch", 1: "new"}, "past_k": {0: "batch", 2: "past"},
                                        "past_v": {0: "batch", 2: "past"}})
    if integer:
        assert b"MatMulInteger" in buf.getvalue()
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    nc = kvcache_np.SinkKVCache(s, r)
    empty = np.zeros((1, 4, 0, 8), np.float32)
    y, k_new, v_new = sess.run(None, {"x": prompt.numpy(), "past_k": empty, "past_v": empty})
    np.testing.assert_allclose(y, expect_prompt, rtol=1e-4, atol=1e-4)  # same graph prefills
    nc.append(k_new, v_new)
    for t in range(steps):
        past_k, past_v = nc.past(empty_shape=(1, 4, 0, 8))
        y, k_new, v_new = sess.run(None, {"x": x[t].numpy(), "past_k": past_k, "past_v": past_v})
        nc.append(k_new, v_new)
        np.testing.assert_allclose(y, expect[t], rtol=1e-4, atol=1e-4)
    assert len(nc) == s + r
