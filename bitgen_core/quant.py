"""BitLinear (BitNet b1.58): ternary weights, int8 activations, straight-through estimator.

Training keeps full-precision latent weights; every forward pass quantises them
(absmean -> {-1, 0, 1} * gamma) and the RMS-normalised input (per-token int8 absmax), and the
straight-through estimator `x + (quant(x) - x).detach()` lets the gradient flow to the latent
tensors as if the quantisers were the identity. Numbers match `ternary.py` exactly (same
eps, same expression order, round-half-to-even).

Three forward formulations of the same function:
- training (train mode, or gradients on): "fake-quant" — the dequantised tensors x_q*s and
  q*gamma go through a float `F.linear`, with the straight-through estimator. Exports to ONNX with either exporter
  (`torch.onnx.export(..., opset_version=17, dynamo=False)` or opset 18 with dynamo) as
  Abs/ReduceMax/Round/Clip/MatMul. Integer-valued float32 matmuls are exact while
  128 * in_features < 2**24, so even this graph reproduces the integer math.
- export mode (`set_export_mode(model, True)`): each BitLinear freezes its ternary codes into
  an int8 buffer (transposed, (in, out)) and computes `MatMulInteger(int8 x, int8 W) -> int32`,
  then rescales by scale_x * gamma. The ONNX graph then stores weights as int8 (4x smaller
  than float) and runs onnxruntime's integer kernel, which is how the runtime does BitNet
  math (onnxruntime has no ternary kernel). This needs the TorchScript exporter
  (`dynamo=False`, opset 17 or 18): `MatMulInteger` is emitted by a symbolic function.
  Call `set_export_mode(model, False)` to return to training; re-enter export mode after any
  weight update (the buffers are a snapshot).
- inference (eval mode and no gradients, e.g. `BitGenModel.load(...)` under `torch.no_grad()`):
  the integer math of export mode, int8 codes times ternary codes summed exactly (as float32,
  exact while 128 * in_features < 2**24) and then one rescale `acc * (scale_x * gamma)`. The
  fake-quant form is the same function but sums `x + (codes*scale - x)` and `codes*gamma` in
  float, and those rounding differences move int8 codes across a boundary in later layers; the
  torch model's answers then differ from the exported runtime's (which does integer math) by up
  to 0.02 in a robot's probability (reports/parity). The weight codes are cached per
  parameter version, so an optimizer step or a load re-quantises. `with training_form():`
  keeps the fake-quant form in eval mode too (GRPO's no-grad scoring of its own samples).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

ACT_QMAX = 127.0
ACT_QMIN = -128.0
QUANT_EPS = 1e-5


_TRAINING_FORM_ONLY = [False]


@contextlib.contextmanager
def training_form():
    """Within it, eval mode without gradients keeps the fake-quant training form (GRPO scores its
    sampled traces under no_grad and must get the numbers its gradient pass will see)."""
    before = _TRAINING_FORM_ONLY[0]
    _TRAINING_FORM_ONLY[0] = True
    try:
        yield
    finally:
        _TRAINING_FORM_ONLY[0] = before


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def activation_quant_int(x: torch.Tensor, eps: float = QUANT_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token absmax: integer-valued float codes in [-128, 127] and scale = max|x|/127."""
    scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=eps) / ACT_QMAX
    # x / scale (two correctly rounded divisions) exports as Div/Div, so numpy, torch and
    # onnxruntime produce the same float before Round and never disagree on a code.
    return (x / scale).round().clamp(ACT_QMIN, ACT_QMAX), scale


def weight_quant_int(w: torch.Tensor, eps: float = QUANT_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmean ternary: float codes in {-1, 0, 1} and gamma = mean|W| (clamped at eps)."""
    gamma = w.abs().mean().clamp(min=eps)
    return (w / gamma).round().clamp(-1.0, 1.0), gamma


def activation_quant(x: torch.Tensor) -> torch.Tensor:
    """Dequantised int8 activations with the straight-through estimator."""
    codes, scale = activation_quant_int(x)
    return x + (codes * scale - x).detach()


def weight_quant(w: torch.Tensor) -> torch.Tensor:
    """Dequantised ternary weights with the straight-through estimator."""
    codes, gamma = weight_quant_int(w)
    return w + (codes * gamma - w).detach()


class _MatMulInteger(torch.autograd.Function):
    """int8 x int8 -> int32 matmul that exports as ONNX `MatMulInteger` (inference only)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a.to(torch.int32), b.to(torch.int32))

    @staticmethod
    def symbolic(g, a, b):
        return g.op("MatMulInteger", a, b)


class BitLinear(nn.Module):
    """Drop-in `nn.Linear` with BitNet b1.58 quantisation (and its own RMSNorm by default)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, norm: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        # BitNet b1.58 normalises the input inside the layer so that the absmax grid sees a
        # well-scaled activation regardless of the residual stream's magnitude.
        self.norm = RMSNorm(in_features) if norm else None
        self.export_mode = False
        # quantize=False gives the full-precision twin of the same architecture, trained by
        # the same scripts, so the cost of ternary weights can be measured (not assumed).
        self.quantize = True
        self.register_buffer("_w_int8_t", torch.zeros(0, dtype=torch.int8), persistent=False)
        self.register_buffer("_gamma", torch.ones(()), persistent=False)
        self._inference_codes = None   # (weight version key, float codes, gamma), _forward_inference
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # same as nn.Linear
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            x = self.norm(x)
        if self.export_mode:
            return self._forward_integer(x)
        if not self.quantize:
            return F.linear(x, self.weight, self.bias)
        if not self.training and not torch.is_grad_enabled() and not _TRAINING_FORM_ONLY[0]:
            return self._forward_inference(x)
        return F.linear(activation_quant(x), weight_quant(self.weight), self.bias)

    def _forward_inference(self, x: torch.Tensor) -> torch.Tensor:
        """Export mode's integer math without its frozen buffers (see the module docstring)."""
        codes, scale = activation_quant_int(x)
        key = (self.weight._version, self.weight.data_ptr(), self.weight.dtype, self.weight.device)
        if self._inference_codes is None or self._inference_codes[0] != key:
            q, gamma = weight_quant_int(self.weight.detach().float())
            self._inference_codes = (key, q, gamma)
        _, q, gamma = self._inference_codes
        if -ACT_QMIN * self.in_features < 2 ** 24:   # every partial sum is an exact float32
            acc = F.linear(codes.float(), q)
        else:
            acc = torch.matmul(codes.to(torch.int32), q.to(torch.int32).t()).float()
        y = acc.to(x.dtype) * (scale * gamma)
        return y if self.bias is None else y + self.bias

    def _forward_integer(self, x: torch.Tensor) -> torch.Tensor:
        codes, scale = activation_quant_int(x)
        acc = _MatMulInteger.apply(codes.to(torch.int8), self._w_int8_t)
        y = acc.to(x.dtype) * (scale * self._gamma)
        return y if self.bias is None else y + self.bias

    @torch.no_grad()
    def ternary_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Deployable form: (int8 codes (out, in) in {-1,0,1}, float32 scalar gamma)."""
        codes, gamma = weight_quant_int(self.weight.detach().float())
        return codes.to(torch.int8), gamma.to(torch.float32)

    @torch.no_grad()
    def set_export_mode(self, enabled: bool = True) -> None:
        if enabled and not self.quantize:
            raise ValueError("a full-precision (quantize=False) BitLinear has no ternary export form")
        self.export_mode = enabled
        if enabled:
            q, gamma = self.ternary_weight()
            self._w_int8_t = q.t().contiguous()
            self._gamma = gamma
        else:
            self._w_int8_t = torch.zeros(0, dtype=torch.int8, device=self.weight.device)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, norm={self.norm is not None}, quantize={self.quantize}")


def set_export_mode(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch every BitLinear under `module` to (or from) the int8 MatMulInteger formulation."""
    for m in module.modules():
        if isinstance(m, BitLinear):
            m.set_export_mode(enabled)
    return module


def set_quantization(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Turn BitNet quantisation of every BitLinear under `module` on (default) or off (fp32 twin)."""
    for m in module.modules():
        if isinstance(m, BitLinear):
            m.quantize = enabled
    return module


def bitlinear_layers(module: nn.Module) -> list[tuple[str, BitLinear]]:
    """(qualified name, layer) for every BitLinear: what the exporter packs into weights/*.t2."""
    return [(n, m) for n, m in module.named_modules() if isinstance(m, BitLinear)]
