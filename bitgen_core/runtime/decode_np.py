"""One decode step of the BitGen backbone in numpy: the trace's hot loop, without onnxruntime.

Why not the exported decode.onnx: at d=128 a decode step is a few hundred tiny operators, and
onnxruntime's per-node dispatch (measured here: ~1.7 ms a step for ~320 nodes) dwarfs the
arithmetic. The same step in numpy is a few dozen vectorised calls.

Why it is still exact BitNet math: activations are quantised per token to int8 codes exactly as
`ternary.quantize_activations` / `quant.activation_quant_int` do, and the integer matmul
codes x ternary is computed as a float32 BLAS matmul of integer-valued operands. Every product
is in [-128, 127] and every partial sum is at most 128 * in_features < 2**24, so float32
represents each partial sum exactly and the result equals MatMulInteger's int32 bit for bit
(the same argument quant.py makes for its fake-quant graph). The float parts (RMSNorm, rotary,
softmax, SiLU) follow the torch expressions; they differ from torch / onnxruntime only by
float32 rounding, the same latitude the onnxruntime graph has.

The image cross-attention keys/values depend only on the image, so `bind_image` computes them
once per selection instead of in every step (the ONNX graph recomputes them each token).

    dec = NumpyDecoder.from_model_files(files)
    img = dec.bind_image(image_tokens)           # (1, N, d) or None
    state, k_new, v_new, rot = dec.step(x, past_k, past_v, img)   # decode.onnx's contract + rot
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

try:   # ships with scikit-learn / scipy stacks; without it BLAS keeps its own thread count
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - exercised only where threadpoolctl is absent
    ThreadpoolController = None

from bitgen_core.errors import ModelLoadError

ACT_QMAX = np.float32(127.0)
ACT_QMIN = np.float32(-128.0)


@dataclass
class _Linear:
    """A deployed BitLinear: RMSNorm gain, ternary codes as float32 (in, out), gamma."""
    norm: np.ndarray | None
    w: np.ndarray
    gamma: np.float32
    bias: np.ndarray | None


@dataclass
class _Layer:
    qkv: _Linear
    proj: _Linear
    up: _Linear
    down: _Linear
    xq: _Linear | None = None
    xkv: _Linear | None = None
    xo: _Linear | None = None
    gate: np.float32 | None = None


class BlasThreads:
    """Hold BLAS (numpy's OpenBLAS) to the runtime's thread budget during a decode step.

    The step's matmuls are tiny ((1 x 128) @ (128 x 704); the image keys (16 x 128) @ (128 x 256)):
    OpenBLAS splits such products over all cores by default, and on a busy 2-core robot
    computer waiting for its worker thread to be scheduled costs far more than the product
    (measured under load: 28 ms for the image keys, trace 163 -> 72 ms for 32 tokens with one
    BLAS thread). The runtime holds the limit for a whole selection / stream (entering costs
    tens of us) rather than changing the process for good."""

    def __init__(self, threads: int):
        self._blas = None
        if ThreadpoolController is not None:
            blas = ThreadpoolController().select(user_api="blas")
            if blas.lib_controllers:
                self._blas = blas
        self.threads = max(1, int(threads))

    def __call__(self):
        return self._blas.limit(limits=self.threads) if self._blas is not None else contextlib.nullcontext()


class NumpyDecoder:
    def __init__(self, layers: list[_Layer], final_norm: np.ndarray, n_heads: int, rope_base: float,
                 rms_eps: float = 1e-6, act_eps: float = 1e-5):
        self.layers = layers
        self.final_norm = final_norm
        self.n_heads = int(n_heads)
        self.d = int(final_norm.shape[0])
        self.head_dim = self.d // self.n_heads
        self.rms_eps, self.act_eps = np.float32(rms_eps), np.float32(act_eps)
        self.scale = np.float32(1.0 / np.sqrt(self.head_dim))
        # rotary.Rotary: inv_freq in float32, then positions * inv_freq in float32
        hd = self.head_dim
        self._inv_freq = (np.float32(1.0) / (np.float32(rope_base) ** (
            np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd)))).astype(np.float32)
        self._tables = (np.zeros((0, hd), np.float32),) * 2    # (cos, signed sin), one attribute:
        # swapped whole, so a selection on another thread never sees a cos without its sin

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_model_files(cls, files) -> "NumpyDecoder | None":
        """Build from a loaded ModelFiles; None when the export predates the numpy decode
        parameters (the runtime then keeps decode.onnx)."""
        spec = files.config.get("decode_numpy")
        if not spec:
            return None
        rel = spec["file"]
        try:
            with np.load(io.BytesIO(files.checked.contents[rel])) as z:
                params = {k: np.ascontiguousarray(z[k], dtype=np.float32) for k in z.files}
        except (KeyError, ValueError, OSError) as e:
            raise ModelLoadError(f"model file {rel} is invalid ({e}); re-export the model") from None
        cfg = files.model_config
        gammas = {k: np.float32(v["gamma"]) for k, v in files.config["ternary"].items()}

        def lin(name: str) -> _Linear:
            if name not in files.ternary:
                raise ModelLoadError(f"{rel}: packed weights for {name} are missing; re-export the model")
            return _Linear(params.get(f"{name}.norm.weight"),
                           np.ascontiguousarray(files.ternary[name].T, dtype=np.float32),
                           gammas[name], params.get(f"{name}.bias"))

        layers = []
        try:
            for i in range(cfg.n_layers):
                p = f"blocks.{i}"
                layer = _Layer(lin(f"{p}.attn.qkv"), lin(f"{p}.attn.proj"), lin(f"{p}.ffn.up"),
                               lin(f"{p}.ffn.down"))
                if i in cfg.cross_attn_layers:
                    layer.xq, layer.xkv, layer.xo = (lin(f"{p}.xattn.{n}") for n in ("q", "kv", "o"))
                    layer.gate = np.float32(np.tanh(params[f"{p}.xattn.gate"].reshape(-1)[0]))
                layers.append(layer)
            final = params["norm.weight"]
        except KeyError as e:
            raise ModelLoadError(f"model file {rel} lacks {e}; re-export the model") from None
        return cls(layers, final, cfg.n_heads, cfg.rope_base, spec.get("rms_eps", 1e-6),
                   spec.get("act_eps", 1e-5))

    # ------------------------------------------------------------------ pieces
    # Per-token vectors are 1-D and the per-token scalars numpy float32 scalars: at this size
    # each numpy call costs more than its arithmetic, so the step is written in as few calls
    # as the torch expressions allow.
    def _rms(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        inv = np.float32(1.0) / np.sqrt(np.dot(x, x) / np.float32(x.shape[-1]) + self.rms_eps)
        return x * inv * w

    def _bitlinear(self, x: np.ndarray, lin: _Linear) -> np.ndarray:
        """One token (d,) through RMSNorm -> int8 absmax codes -> ternary matmul -> rescale.
        No clip: |x| <= max|x| makes |x / scale| <= 127 (+ a rounding ulp), so the codes are
        always inside [-128, 127] already."""
        if lin.norm is not None:
            x = self._rms(x, lin.norm)
        scale = max(np.abs(x).max(), self.act_eps) / ACT_QMAX
        y = np.round(x / scale) @ lin.w
        y *= scale * lin.gamma
        return y if lin.bias is None else y + lin.bias

    def _bitlinear_rows(self, x: np.ndarray, lin: _Linear) -> np.ndarray:
        """Several tokens (n, d): the image tokens of `bind_image`, once per selection."""
        if lin.norm is not None:
            x = x * (np.float32(1.0) / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.rms_eps)) * lin.norm
        scale = np.maximum(np.abs(x).max(axis=-1, keepdims=True), self.act_eps) / ACT_QMAX
        y = (np.round(x / scale) @ lin.w) * (scale * lin.gamma)
        return y if lin.bias is None else y + lin.bias

    def _rotary(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """cos and a signed sin for slots 0..n-1: rotate(x) = x*cos + swap_halves(x)*sin_signed,
        the same products as rotate-half's cat(-x2, x1)*sin (negation is exact)."""
        cos, sin = self._tables
        if cos.shape[0] < n:   # positions are cache slots, so n <= S+R+1: grows once
            m = max(n, 2 * cos.shape[0], 64)
            freqs = np.arange(m, dtype=np.float32)[:, None] * self._inv_freq
            emb = np.concatenate([freqs, freqs], axis=-1)
            half = self.head_dim // 2
            sin = np.sin(emb).astype(np.float32)
            sin[:, :half] *= -1
            cos = np.cos(emb).astype(np.float32)
            self._tables = (cos, sin)
        return cos[:n], sin[:n]

    def _rotate(self, x, cos, sin):
        half = self.head_dim // 2
        return x * cos + np.concatenate([x[..., half:], x[..., :half]], axis=-1) * sin

    @staticmethod
    def _softmax(s: np.ndarray) -> np.ndarray:
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def bind_image(self, image_tokens: np.ndarray | None):
        """Image tokens (1, N, d) -> per cross-attention layer (K, V) (H, N, hd), or None."""
        if image_tokens is None:
            return None
        img = np.asarray(image_tokens, np.float32)[0]
        h, hd = self.n_heads, self.head_dim
        out = {}
        for i, layer in enumerate(self.layers):
            if layer.xkv is not None:
                kv = self._bitlinear_rows(img, layer.xkv).reshape(-1, 2, h, hd).transpose(1, 2, 0, 3)
                out[i] = (np.ascontiguousarray(kv[0]), np.ascontiguousarray(kv[1]))
        return out

    # ------------------------------------------------------------------ the step
    def step(self, x: np.ndarray, past_k: np.ndarray, past_v: np.ndarray, image_kv=None,
             rotated: list[np.ndarray] | None = None):
        """x (1, 1, d) embedded token; past_k/past_v (n_layers, 1, H, L, hd) pre-rotary ->
        (state (1, d) final-normed, k_new, v_new (n_layers, 1, H, 1, hd), rotated).

        The first three are decode.onnx's contract. `rotated` is, per layer, the cached keys
        already rotated at their slots (H, L+1, hd, this token included); hand it back on the
        next step when the cache only grew by this token, and the step rotates just the new
        key instead of all L (the same products: a slot's rotation depends on its position
        only). After an eviction the slots move: pass None and everything is rotated afresh."""
        h, hd, d = self.n_heads, self.head_dim, self.d
        x = np.asarray(x, np.float32).reshape(d)
        past = past_k.shape[-2]
        cos, sin = self._rotary(past + 1)
        reuse = rotated is not None and all(r.shape[1] == past for r in rotated)
        k_out = np.empty((len(self.layers), 1, h, 1, hd), np.float32)
        v_out = np.empty_like(k_out)
        rot_out = []
        for i, layer in enumerate(self.layers):
            qkv = self._bitlinear(x, layer.qkv).reshape(3, h, 1, hd)
            k_out[i, 0], v_out[i, 0] = qkv[1], qkv[2]
            if reuse:   # the new token's q and k share the last slot: one rotation for both
                qk = self._rotate(qkv[:2], cos[past], sin[past])
                q, k = qk[0], np.concatenate([rotated[i], qk[1]], axis=1)
            else:
                q = self._rotate(qkv[0], cos[past], sin[past])
                k = self._rotate(np.concatenate([past_k[i, 0], qkv[1]], axis=1), cos, sin)   # (H, L, hd)
            rot_out.append(k)
            v = np.concatenate([past_v[i, 0], qkv[2]], axis=1)
            p = self._softmax((q @ k.transpose(0, 2, 1)) * self.scale)                 # (H, 1, L)
            x = x + self._bitlinear((p @ v).reshape(d), layer.proj)
            if layer.xq is not None and image_kv is not None:
                ik, iv = image_kv[i]
                q = self._bitlinear(x, layer.xq).reshape(h, 1, hd)
                p = self._softmax((q @ ik.transpose(0, 2, 1)) * self.scale)
                x = x + layer.gate * self._bitlinear((p @ iv).reshape(d), layer.xo)
            up = self._bitlinear(x, layer.up)
            a, b = up[:up.shape[0] // 2], up[up.shape[0] // 2:]
            x = x + self._bitlinear(a / (np.float32(1.0) + np.exp(-a)) * b, layer.down)
        return self._rms(x, self.final_norm)[None], k_out, v_out, rot_out
