"""BitLinear / ternary math: quantisers, STE, training, packing, torch<->numpy<->ONNX agreement."""

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from bitgen_core import ternary
from bitgen_core.quant import (BitLinear, RMSNorm, activation_quant_int, bitlinear_layers,
                               set_export_mode, training_form, weight_quant_int)

torch.set_num_threads(1)


def test_ternarize_values_and_absmean_scale():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, size=(17, 33)).astype(np.float32)
    q, gamma = ternary.ternarize(w)
    assert q.dtype == np.int8 and q.shape == w.shape
    assert set(np.unique(q).tolist()) == {-1, 0, 1}
    assert gamma == pytest.approx(np.abs(w).mean(), rel=1e-6)
    # RoundClip(W / gamma): entries within gamma/2 of zero vanish, the rest keep their sign
    np.testing.assert_array_equal(q == 0, np.abs(w) < gamma / 2)
    np.testing.assert_array_equal(np.sign(w[q != 0]), q[q != 0])


def test_ternarize_hand_example():
    w = np.array([[0.9, -0.1, -2.0, 0.2]], dtype=np.float32)  # mean|w| = 0.8
    q, gamma = ternary.ternarize(w)
    assert gamma == pytest.approx(0.8)
    np.testing.assert_array_equal(q, [[1, 0, -1, 0]])


def test_activation_quant_matches_formula():
    x = np.array([[0.5, -1.0, 0.25, 0.0], [3.0, 1.5, -0.01, 2.9]], dtype=np.float32)
    x_q, scale = ternary.quantize_activations(x)
    assert x_q.dtype == np.int8 and scale.shape == (2, 1)
    np.testing.assert_allclose(scale[:, 0], [1.0 / 127, 3.0 / 127], rtol=1e-6)
    np.testing.assert_array_equal(x_q[0], [64, -127, 32, 0])  # 63.5 -> 64 (half to even)
    np.testing.assert_array_equal(x_q[1], [127, 64, 0, 123])  # 63.5 -> 64, 122.77 -> 123
    # zero tokens stay zero instead of dividing by zero
    z_q, z_s = ternary.quantize_activations(np.zeros((1, 5), np.float32))
    assert np.all(z_q == 0) and np.all(np.isfinite(z_s))


def test_torch_quantisers_match_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 7, 40)).astype(np.float32)
    w = rng.normal(size=(24, 40)).astype(np.float32)
    codes, scale = activation_quant_int(torch.from_numpy(x))
    x_q, s_np = ternary.quantize_activations(x)
    np.testing.assert_array_equal(codes.numpy().astype(np.int8), x_q)
    np.testing.assert_allclose(scale.numpy(), s_np, rtol=1e-7)
    wq, gamma = weight_quant_int(torch.from_numpy(w))
    q_np, g_np = ternary.ternarize(w)
    np.testing.assert_array_equal(wq.numpy().astype(np.int8), q_np)
    assert float(gamma) == pytest.approx(float(g_np), rel=1e-6)


def test_bitlinear_forward_equals_integer_reference():
    torch.manual_seed(0)
    layer = BitLinear(48, 20, bias=True, norm=True)
    with torch.no_grad():
        layer.norm.weight.uniform_(0.5, 1.5)
        layer.bias.normal_()
    x = torch.randn(2, 5, 48) * 3
    y = layer(x).detach().numpy()
    q, gamma = layer.ternary_weight()
    assert q.dtype == torch.int8 and set(q.unique().tolist()) <= {-1, 0, 1}
    ref = ternary.bitlinear_forward(x.numpy(), q.numpy(), float(gamma),
                                    norm_weight=layer.norm.weight.detach().numpy(),
                                    bias=layer.bias.detach().numpy())
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    # the float forward really is quantised: it differs from an unquantised linear layer
    plain = F.linear(layer.norm(x), layer.weight, layer.bias).detach().numpy()
    assert np.abs(plain - y).max() > 1e-2


def test_inference_form_is_export_modes_integer_math_and_follows_weight_updates():
    """eval mode + no gradients: exactly export mode's numbers (the runtime's integer math);
    train mode or gradients on: the fake-quant STE form, which differs by float rounding."""
    torch.manual_seed(1)
    layer = BitLinear(96, 40, bias=True)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 11, 96) * 4
    layer.eval()
    with torch.no_grad():
        y_inf = layer(x)
        set_export_mode(layer, True)
        y_int = layer(x)
        set_export_mode(layer, False)
    assert torch.equal(y_inf, y_int)
    y_grad = layer(x)                       # eval mode but gradients on: the training form
    assert y_grad.requires_grad
    layer.train()
    with torch.no_grad():
        y_train = layer(x)                  # train mode under no_grad: the training form too
    assert torch.equal(y_train, y_grad.detach())
    layer.eval()
    with torch.no_grad(), training_form():  # GRPO's no-grad scoring keeps the training form
        assert torch.equal(layer(x), y_train)
    layer.train()
    assert not torch.equal(y_train, y_inf)  # float rounding of x + (codes*s - x) and codes*gamma
    torch.testing.assert_close(y_train, y_inf, rtol=1e-5, atol=1e-5)
    # a weight update (as an optimizer step makes) re-quantises the cached codes
    layer.eval()
    with torch.no_grad():
        layer.weight.mul_(-1.0)
        y_flipped = layer(x)
        set_export_mode(layer, True)
        want = layer(x)
        set_export_mode(layer, False)
    assert torch.equal(y_flipped, want) and not torch.allclose(y_flipped, y_inf)


def test_ste_gradient_reaches_latent_weights_and_inputs():
    torch.manual_seed(0)
    layer = BitLinear(16, 8, norm=False)
    x = torch.randn(4, 16, requires_grad=True)
    target = torch.randn(4, 8)
    F.mse_loss(layer(x), target).backward()

    # reference: same loss as a function of the *quantised* tensors as leaves
    codes, scale = activation_quant_int(x.detach())
    wq_codes, gamma = weight_quant_int(layer.weight.detach())
    xq = (codes * scale).requires_grad_()
    wq = (wq_codes * gamma).requires_grad_()
    F.mse_loss(F.linear(xq, wq), target).backward()

    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    torch.testing.assert_close(layer.weight.grad, wq.grad, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(x.grad, xq.grad, rtol=1e-6, atol=1e-7)
    # every latent entry gets gradient, including those quantised to 0 (identity STE)
    assert (wq_codes == 0).any() and (layer.weight.grad[wq_codes == 0] != 0).all()


def test_small_regression_trains_through_bitlinear():
    torch.manual_seed(0)
    teacher_q = torch.randint(-1, 2, (6, 12)).float() * 0.5  # a ternary map is reachable exactly
    x = torch.randn(512, 12)
    y = x @ teacher_q.t()
    student = BitLinear(12, 6, norm=False)
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    first = None
    for _ in range(400):
        loss = F.mse_loss(student(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = F.mse_loss(student(x), y).item()
    assert final < 0.01 * y.var().item(), (first, final)
    assert final < first / 50


def test_rmsnorm_unit_rms():
    x = torch.randn(3, 64) * 7
    y = RMSNorm(64)(x)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(3), rtol=1e-4, atol=1e-4)


def test_pack_known_bit_layout():
    packed = ternary.pack_ternary(np.array([-1, 0, 1, 1, -1], np.int8))
    # codes (q+1): 0,1,2,2 -> 0 | 1<<2 | 2<<4 | 2<<6 = 164 ; then 0 + padding zeros (code 1)
    assert packed.tolist() == [164, 0 | 1 << 2 | 1 << 4 | 1 << 6]
    with pytest.raises(ValueError):
        ternary.pack_ternary(np.array([2, 0], np.int8))
    with pytest.raises(ValueError):
        ternary.unpack_ternary(packed, (9,))


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 13), min_size=1, max_size=3), seed=st.integers(0, 2**31 - 1))
def test_pack_unpack_roundtrip_random_shapes(shape, seed):
    q = np.random.default_rng(seed).integers(-1, 2, size=shape).astype(np.int8)
    packed = ternary.pack_ternary(q)
    assert packed.dtype == np.uint8 and packed.size == (q.size + 3) // 4
    back = ternary.unpack_ternary(packed, q.shape)
    assert back.dtype == np.int8
    np.testing.assert_array_equal(back, q)


def _export(model, x, **kw):
    buf = io.BytesIO()
    torch.onnx.export(model, (x,), buf, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch", 1: "seq"}}, **kw)
    return onnx.load_from_string(buf.getvalue())


def _two_layer():
    torch.manual_seed(3)
    return torch.nn.Sequential(BitLinear(32, 64), torch.nn.GELU(), BitLinear(64, 16, bias=True)).eval()


def _run(proto, x):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_onnx_export_float_formulation_matches_torch():
    model = _two_layer()
    x = torch.randn(2, 5, 32)
    proto = _export(model, x, opset_version=17, dynamo=False)
    y = _run(proto, torch.randn(3, 7, 32).numpy())  # dynamic batch and sequence
    assert y.shape == (3, 7, 16)
    x2 = torch.randn(1, 4, 32)
    np.testing.assert_allclose(_run(proto, x2.numpy()), model(x2).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_onnx_export_mode_uses_matmulinteger_and_int8_weights():
    model = _two_layer()
    x = torch.randn(2, 6, 32)
    with torch.no_grad():
        y_float = model(x).numpy()
        set_export_mode(model, True)
        y_int = model(x).numpy()
    np.testing.assert_allclose(y_int, y_float, rtol=1e-4, atol=1e-4)
    proto = _export(model, x, opset_version=17, dynamo=False)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("MatMulInteger") == 2
    consts = list(proto.graph.initializer) + [a.t for n in proto.graph.node for a in n.attribute
                                              if a.type == onnx.AttributeProto.TENSOR]
    int8 = [tuple(t.dims) for t in consts if t.data_type == onnx.TensorProto.INT8]
    assert sorted(int8) == [(32, 64), (64, 16)]
    assert not any(t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2 for t in consts)
    np.testing.assert_allclose(_run(proto, x.numpy()), y_int, rtol=1e-5, atol=1e-5)
    # buffers are not persistent: the checkpoint format does not change in export mode
    assert not any("_w_int8_t" in k for k in model.state_dict())
    assert [n for n, _ in bitlinear_layers(model)] == ["0", "2"]
    set_export_mode(model, False)
    assert not model[0].export_mode


def test_deployable_modules_do_not_import_torch():
    import pathlib
    import subprocess
    import sys

    import bitgen_core
    root = pathlib.Path(bitgen_core.__file__).resolve().parent.parent
    code = ("import sys, bitgen_core.ternary, bitgen_core.memory_np, bitgen_core.kvcache_np; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_quantization_off_gives_the_full_precision_twin():
    from bitgen_core.quant import set_quantization
    torch.manual_seed(0)
    layer = BitLinear(16, 8)
    x = torch.randn(3, 16)
    ternary_out = layer(x)
    set_quantization(layer, False)
    fp_out = layer(x)
    assert torch.allclose(fp_out, F.linear(layer.norm(x), layer.weight))
    assert not torch.allclose(fp_out, ternary_out, atol=1e-3)
    with pytest.raises(ValueError, match="no ternary export"):
        layer.set_export_mode(True)
    set_quantization(layer, True)
    assert torch.equal(layer(x), ternary_out)


def test_model_config_quantize_false_builds_fp32_twin():
    from bitgen_core.config import BitGenConfig
    from bitgen_core.model import BitGenModel
    cfg = BitGenConfig.preset("nano", quantize=False, vision_kind="none")
    model = BitGenModel(cfg, pretrained=False)
    assert all(not m.quantize for _, m in bitlinear_layers(model))
    twin = BitGenModel(BitGenConfig.preset("nano", vision_kind="none"), pretrained=False)
    assert all(m.quantize for _, m in bitlinear_layers(twin))
