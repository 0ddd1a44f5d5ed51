"""Ternary weights and int8 activations in plain numpy (BitNet b1.58). Torch-free.

This is the deployable half of `quant.BitLinear`: the exporter uses it to turn latent float
weights into ternary codes and 2-bit packed files, and the runtime uses it to reproduce the
layer's integer math without torch.

Conventions (shared bit-for-bit with `quant.py`):
- weights:     gamma = max(mean|W|, eps) (absmean, one scale per tensor),
               q = clip(round(W / gamma), -1, 1) as int8, so W ~= q * gamma.
- activations: per token (last axis) absmax, scale = max(max|x|, eps) / 127,
               x_q = clip(round(x / scale), -128, 127) as int8, so x ~= x_q * scale.
- rounding is round-half-to-even everywhere (numpy, torch and ONNX `Round` all agree).
- the layer output is y = (x_q @ q.T) * (scale * gamma): an int32 accumulation of int8
  products, which `MatMulInteger` computes exactly; ternary weights keep every partial sum
  far from int32 (or int16-pair) saturation.
- packing: code = q + 1 in {0, 1, 2}, four 2-bit codes per byte, little end first
  (value i of a group sits in bits 2i..2i+1); the flat array is zero-padded to a multiple of 4.
"""

from __future__ import annotations

import numpy as np

ACT_QMAX = 127  # int8 absmax grid; -128 is reachable only through clipping, as in BitNet
ACT_QMIN = -128


def ternarize(w: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, np.float32]:
    """Absmean ternary quantisation: returns (q int8 in {-1,0,1}, gamma float32)."""
    w = np.asarray(w, dtype=np.float32)
    gamma = np.float32(max(float(np.abs(w).mean()) if w.size else 0.0, eps))
    q = np.clip(np.round(w / gamma), -1, 1).astype(np.int8)
    return q, gamma


def quantize_activations(x: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Per-token int8 absmax quantisation over the last axis.

    Returns (x_q int8 with x's shape, scale float32 of shape x.shape[:-1] + (1,)), so that
    x ~= x_q * scale broadcasts. An all-zero token gets scale eps/127 and codes 0.
    """
    x = np.asarray(x, dtype=np.float32)
    amax = np.maximum(np.abs(x).max(axis=-1, keepdims=True), np.float32(eps))
    scale = (amax / np.float32(ACT_QMAX)).astype(np.float32)
    # x / scale: the same expression as quant.py and its ONNX graph, so all three round the
    # same float to the same integer.
    x_q = np.clip(np.round(x / scale), ACT_QMIN, ACT_QMAX).astype(np.int8)
    return x_q, scale


def bitlinear_forward(x: np.ndarray, q: np.ndarray, gamma: float,
                      norm_weight: np.ndarray | None = None, norm_eps: float = 1e-6,
                      bias: np.ndarray | None = None) -> np.ndarray:
    """Reference integer forward of a deployed BitLinear: RMSNorm -> int8 act -> int32 matmul.

    q is the (out, in) int8 ternary matrix from `ternarize`; norm_weight is the RMSNorm gain
    (None when the layer was built with norm=False).
    """
    x = np.asarray(x, dtype=np.float32)
    if norm_weight is not None:
        x = rms_norm(x, norm_weight, norm_eps)
    x_q, scale = quantize_activations(x)
    acc = np.matmul(x_q.astype(np.int32), q.astype(np.int32).T)
    y = acc.astype(np.float32) * (scale * np.float32(gamma))
    if bias is not None:
        y = y + bias.astype(np.float32)
    return y


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    inv = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps))
    return (x * inv * weight).astype(np.float32)


def pack_ternary(q: np.ndarray) -> np.ndarray:
    """Pack int8 ternary values (any shape) into uint8, four 2-bit codes per byte."""
    q = np.asarray(q)
    flat = q.reshape(-1).astype(np.int16)
    if flat.size and (flat.min() < -1 or flat.max() > 1):
        raise ValueError("pack_ternary: values must be in {-1, 0, 1}; ternarize the weights first")
    codes = (flat + 1).astype(np.uint8)
    pad = (-codes.size) % 4
    if pad:
        codes = np.concatenate([codes, np.ones(pad, dtype=np.uint8)])  # code 1 == value 0
    groups = codes.reshape(-1, 4)
    return (groups[:, 0] | (groups[:, 1] << 2) | (groups[:, 2] << 4) | (groups[:, 3] << 6)).astype(np.uint8)


def unpack_ternary(packed: np.ndarray, shape) -> np.ndarray:
    """Exact inverse of `pack_ternary`: uint8 bytes -> int8 array of `shape`."""
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    shape = tuple(int(s) for s in np.atleast_1d(shape)) if not isinstance(shape, tuple) else shape
    n = int(np.prod(shape, dtype=np.int64))
    if packed.size != (n + 3) // 4:
        raise ValueError(f"unpack_ternary: {packed.size} bytes cannot hold shape {shape} "
                         f"(need {(n + 3) // 4})")
    codes = np.stack([(packed >> s) & 0b11 for s in (0, 2, 4, 6)], axis=1).reshape(-1)[:n]
    if codes.size and codes.max() > 2:
        raise ValueError("unpack_ternary: invalid 2-bit code 3 (corrupt data)")
    return (codes.astype(np.int8) - 1).reshape(shape)
