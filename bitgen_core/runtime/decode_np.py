"""The BitGen backbone's decode step (and prefill) in numpy: the trace's hot loop, without onnxruntime.

Why not the exported decode.onnx: at d=128 a decode step is a few hundred tiny operators, and
onnxruntime's per-node dispatch (measured here: ~1.7 ms a step for ~320 nodes) dwarfs the
arithmetic. The same step in numpy is ~200 vectorised calls, written so that each costs as
little as numpy allows: Python floats for per-token scalars, `rint` (round half to even,
what torch.round does) instead of the slower `np.round`, one slot write per token.

Why it is still exact BitNet math: activations are quantised per token to int8 codes exactly as
`ternary.quantize_activations` / `quant.activation_quant_int` do, and the integer matmul
codes x ternary is computed as a float32 BLAS matmul of integer-valued operands. Every product
is in [-128, 127] and every partial sum is at most 128 * in_features < 2**24, so float32
represents each partial sum exactly and the result equals MatMulInteger's int32 bit for bit
(the same argument quant.py makes for its fake-quant graph). The float parts (RMSNorm, rotary,
softmax, SiLU) follow the torch expressions; they differ from torch / onnxruntime only by
float32 rounding, the same latitude the onnxruntime graph has.

Constant cost per token however long the stream (StreamingLLM, kvcache_np.SinkKVCache): keys
are rotated once, when they enter the cache, at their *stream* position, and the query twice
-- at its stream position for the window keys, at its cache slot for the sinks. Rotary scores
depend on the distance between query and key only, and inside the window the distance in the
stream equals the distance in the cache, so this equals the torch model's rotate-by-cache-slot
(which re-rotates every cached key once evictions start) without touching the cached keys
again. Angles are computed in float64 from the integer position, so a stream of billions of
tokens keeps exact rotations. The image cross-attention keys/values depend only on the image:
`bind_image` computes them once per selection.

The prompt goes through the same code (`prefill`: the memory tokens from the memory read, then
one pass over [SINK][memory][task][SEP]), so prefill.onnx needs no session either.

    dec = NumpyDecoder.from_model_files(files)
    img = dec.bind_image(image_tokens)       # (1, N, d) or None
    state = dec.prefill(x, z_read, cache, img)   # x (L, d) embedded prompt, cache empty
    dec.attach(cache)                        # a SinkKVCache holding the prompt's K/V
    state = dec.step(x, cache, img)          # x (d,) embedded token -> (1, d); cache grows by one
"""
from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass

import numpy as np

try:   # ships with scikit-learn / scipy stacks; without it BLAS keeps its own thread count
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - exercised only where threadpoolctl is absent
    ThreadpoolController = None

from bitgen_core.errors import ModelLoadError
from bitgen_core.kvcache_np import SinkKVCache

ACT_QMAX = np.float32(127.0)


@dataclass
class _Linear:
    """A deployed BitLinear: RMSNorm gain, ternary codes as float32 (in, out), gamma."""
    norm: np.ndarray | None
    w: np.ndarray
    gamma: float
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
    gate: float | None = None


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




_TABULATED = 1024   # rotary positions kept in a table (256 kB); beyond, angles are computed per token


class NumpyDecoder:
    def __init__(self, layers: list[_Layer], final_norm: np.ndarray, n_heads: int, rope_base: float,
                 rms_eps: float = 1e-6, act_eps: float = 1e-5):
        self.layers = layers
        self.final_norm = final_norm
        self.n_heads = int(n_heads)
        self.d = int(final_norm.shape[0])
        self.head_dim = self.d // self.n_heads
        self.rms_eps, self.act_eps = float(rms_eps), float(act_eps)
        self.scale = float(1.0 / np.sqrt(self.head_dim))
        # rotary.Rotary: inv_freq in float32, then positions * inv_freq in float32
        hd = self.head_dim
        self._inv_freq = (np.float32(1.0) / (np.float32(rope_base) ** (
            np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd)))).astype(np.float32)
        self._tables = (np.zeros((0, hd), np.float32),) * 2    # (cos, signed sin), one attribute:
        # swapped whole, so a selection on another thread never sees a cos without its sin
        self.memory_prefix: tuple[_Linear, np.ndarray] | None = None   # (memory_prefix_proj, memory_pos)

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
        gammas = {k: float(np.float32(v["gamma"])) for k, v in files.config["ternary"].items()}

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
                    layer.gate = float(np.float32(np.tanh(params[f"{p}.xattn.gate"].reshape(-1)[0])))
                layers.append(layer)
            final = params["norm.weight"]
        except KeyError as e:
            raise ModelLoadError(f"model file {rel} lacks {e}; re-export the model") from None
        dec = cls(layers, final, cfg.n_heads, cfg.rope_base, spec.get("rms_eps", 1e-6),
                  spec.get("act_eps", 1e-5))
        if cls.covers_prefill(files):   # exports since the numpy prefill; older ones keep prefill.onnx
            pre = spec["prefill_file"]
            try:
                with np.load(io.BytesIO(files.checked.contents[pre])) as z:
                    prefix = {k: np.ascontiguousarray(z[k], dtype=np.float32) for k in z.files}
                proj = lin("memory_prefix_proj")
                proj.norm, proj.bias = prefix.get("memory_prefix_proj.norm.weight"), prefix.get("memory_prefix_proj.bias")
                dec.memory_prefix = (proj, prefix["memory_pos"])
            except (KeyError, ValueError, OSError) as e:
                raise ModelLoadError(f"model file {pre} is invalid ({e}); re-export the model") from None
        return dec

    @staticmethod
    def covers_prefill(files) -> bool:
        """The export carries what `prefill` needs (else the runtime keeps prefill.onnx)."""
        spec = files.config.get("decode_numpy") or {}
        return spec.get("prefill_file") in files.checked.contents

    # ------------------------------------------------------------------ pieces
    # Per-token vectors are 1-D and per-token scalars Python floats: at this size each numpy
    # call costs more than its arithmetic (a float32 scalar op ~0.6 us, a Python one ~0.03 us).
    # A Python float meets a float32 array as float32 (NEP 50), and float64 products/quotients
    # of float32 values round to the float32 result, so the scalars are those of float32 math.
    def _rms(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x * (1.0 / math.sqrt(float(np.dot(x, x)) / x.shape[-1] + self.rms_eps)) * w

    def _bitlinear(self, x: np.ndarray, lin: _Linear) -> np.ndarray:
        """One token (d,) through RMSNorm -> int8 absmax codes -> ternary matmul -> rescale.
        No clip: |x| <= max|x| makes |x / scale| <= 127 (+ a rounding ulp), so the codes are
        always inside [-128, 127] already."""
        if lin.norm is not None:
            x = self._rms(x, lin.norm)
        scale = max(float(np.maximum.reduce(np.abs(x))), self.act_eps) / 127.0   # not .max(): its wrapper costs
        y = np.rint(x / scale) @ lin.w
        y *= scale * lin.gamma
        return y if lin.bias is None else y + lin.bias

    def _bitlinear_rows(self, x: np.ndarray, lin: _Linear) -> np.ndarray:
        """Several tokens (n, d): the image tokens of `bind_image`, once per selection."""
        if lin.norm is not None:
            x = x * (np.float32(1.0) / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(self.rms_eps))) * lin.norm
        scale = np.maximum(np.abs(x).max(axis=-1, keepdims=True), np.float32(self.act_eps)) / ACT_QMAX
        y = (np.rint(x / scale) @ lin.w) * (scale * np.float32(lin.gamma))
        return y if lin.bias is None else y + lin.bias

    def _table(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """cos and a signed sin for positions 0..n-1 (n <= _TABULATED), computed as torch's
        Rotary does (float32 positions x inv_freq): rotate(x) = x*cos + swap_halves(x)*sin,
        the same products as rotate-half's cat(-x2, x1)*sin (negation is exact)."""
        cos, sin = self._tables
        if cos.shape[0] < n:
            m = min(_TABULATED, max(n, 2 * cos.shape[0], 256))
            freqs = np.arange(m, dtype=np.float32)[:, None] * self._inv_freq
            cos, sin = self._cos_sin(np.concatenate([freqs, freqs], axis=-1))
            self._tables = (cos, sin)
        return cos, sin

    def _cos_sin(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sin = np.sin(emb).astype(np.float32)
        sin[..., :self.head_dim // 2] *= -1
        return np.cos(emb).astype(np.float32), sin

    def rotation(self, positions) -> tuple[np.ndarray, np.ndarray]:
        """(cos, signed sin) for an int or an array of positions, any size: tabulated ones as
        torch computes them, later ones from float64 angles (exact for any stream length)."""
        if isinstance(positions, int) and positions < self._tables[0].shape[0]:
            cos, sin = self._tables   # the per-token fast path
            return cos[positions], sin[positions]
        p = np.asarray(positions, dtype=np.int64)
        top = int(p.max()) + 1 if p.size else 0
        if top <= _TABULATED:
            cos, sin = self._table(top)
            return cos[p], sin[p]
        freqs = p[..., None].astype(np.float64) * self._inv_freq.astype(np.float64)
        return self._cos_sin(np.concatenate([freqs, freqs], axis=-1))

    def _rotate(self, x, cos, sin):
        half = self.head_dim // 2
        swapped = x.reshape(x.shape[:-1] + (2, half))[..., ::-1, :].reshape(x.shape)
        return x * cos + swapped * sin

    @staticmethod
    def _softmax(s: np.ndarray) -> np.ndarray:
        """Softmax over the last axis, shifted by the max over *all* rows (heads): the same
        result (softmax ignores a constant shift), one scalar reduction instead of a keepdims
        one. A row whose scores sit ~80 below another's would underflow to 0/0, so then the
        per-row shift is taken after all."""
        e = np.exp(s - s.max())
        total = e.sum(axis=-1, keepdims=True)
        if not total.all():
            e = np.exp(s - s.max(axis=-1, keepdims=True))
            total = e.sum(axis=-1, keepdims=True)
        e /= total
        return e

    def bind_image(self, image_tokens: np.ndarray | None):
        """Image tokens (1, N, d) -> per cross-attention layer (K^T (H, hd, N), V (H, N, hd)), or None."""
        if image_tokens is None:
            return None
        img = np.asarray(image_tokens, np.float32)[0]
        h, hd = self.n_heads, self.head_dim
        out = {}
        for i, layer in enumerate(self.layers):
            if layer.xkv is not None:
                kv = self._bitlinear_rows(img, layer.xkv).reshape(-1, 2, h, hd).transpose(1, 2, 0, 3)
                out[i] = (np.ascontiguousarray(kv[0].transpose(0, 2, 1)), np.ascontiguousarray(kv[1]))
        return out

    # ------------------------------------------------------------------ the stream
    def attach(self, cache: SinkKVCache) -> None:
        """Rotate the keys a cache holds (a prefill's) into its "k_rot" companion, each at
        its stream position; `step` then keeps it current one token at a time."""
        if cache.seen == 0:
            return
        n = cache.live_slots()
        pos = cache.live_positions()
        cos, sin = self.rotation(pos)
        k = cache.buffer("k")[..., :n, :]
        cache.buffer("k_rot")[..., :n, :] = self._rotate(k, cos, sin)

    def step_many(self, xs: np.ndarray, cache: SinkKVCache, image_kv=None,
                  all_states: bool = False, prompt: bool = False) -> np.ndarray:
        """xs (m, d) embedded tokens after the tokens in `cache` -> state (1, d) after the
        last one (all_states: (m, d), the state after each, for a draft to verify); all m
        written to the cache. One pass for the m tokens (causal attention inside the chunk)
        while the cache has never evicted and the chunk fits, else m `step`s.
        The trace grammar's forced runs and the capable-list drafts come here ("and high
        structures; needs:"): per-call overhead dominates at d=128, so a pass of 8 tokens
        costs about what 2-3 single steps do. The linear
        layers give bit-identical codes row by row (integer matmuls, float64 scalars as in
        `_bitlinear`); attention sums in another order, a float32 rounding apart.
        `prompt` (prefill's one pass): the input norms' sums of squares by one einsum over
        the rows instead of a dot per row (~1,000 dots in a 60-token prompt; 7.10 -> 6.65 ms
        a prefill under load 2.8, reports/bench/ab_norm_rows.txt). Only the prompt: its pass is the same
        whatever the trace does, while a trace token must get the same codes in a pass with a
        draft as alone, and for a few rows the dots are cheaper."""
        xs = np.asarray(xs, np.float32).reshape(-1, self.d)
        m = xs.shape[0]
        if m == 1 or cache.seen + m > cache.capacity:
            states = [self.step(x, cache, image_kv) for x in xs]
            return np.concatenate(states) if all_states else states[-1]
        h, hd, d = self.n_heads, self.head_dim, self.d
        t0 = cache.seen
        for _ in range(m):
            cache.advance(like=(len(self.layers), 1, h, hd))      # slots t0 .. t0+m-1, no eviction
        n = t0 + m
        kb, vb, kr = cache.buffer("k"), cache.buffer("v"), cache.buffer("k_rot")
        cos, sin = self.rotation(np.arange(t0, n))                 # (m, hd)
        causal = np.triu(np.full((m, m), -np.inf, np.float32), 1)  # chunk token j sees <= j
        x = xs
        rows = self._prompt_rows if prompt else self._rows
        for i, layer in enumerate(self.layers):
            qkv = rows(x, layer.qkv).reshape(m, 3, h, hd).transpose(1, 2, 0, 3)   # (3, H, m, hd)
            kb[i, 0, :, t0:n] = qkv[1]
            vb[i, 0, :, t0:n] = qkv[2]
            qk = self._rotate(qkv[:2], cos, sin)
            kr[i, 0, :, t0:n] = qk[1]
            s = qk[0] @ kr[i, 0, :, :n].transpose(0, 2, 1)                            # (H, m, n)
            s[..., t0:] += causal
            p = self._softmax(s * self.scale)
            x = x + rows((p @ vb[i, 0, :, :n]).transpose(1, 0, 2).reshape(m, d), layer.proj)
            if layer.xq is not None and image_kv is not None:
                ik_t, iv = image_kv[i]
                q = rows(x, layer.xq).reshape(m, h, hd).transpose(1, 0, 2)
                p = self._softmax((q @ ik_t) * self.scale)
                x = x + layer.gate * rows((p @ iv).transpose(1, 0, 2).reshape(m, d), layer.xo)
            up = rows(x, layer.up)
            a, b = up[:, :up.shape[1] // 2], up[:, up.shape[1] // 2:]
            x = x + rows(a / (1.0 + np.exp(-a)) * b, layer.down)
        if all_states:
            return np.stack([self._rms(r, self.final_norm) for r in x])
        return self._rms(x[-1], self.final_norm)[None]

    def prefill(self, x: np.ndarray, z_read: np.ndarray, cache: SinkKVCache, image_kv=None) -> np.ndarray:
        """The prefill graph in numpy: x (L, d) embedded [SINK][M placeholders][task][SEP],
        z_read (C,) the memory read -> state at [SEP] (1, d); the prompt's K/V (and rotated
        keys) written to the empty `cache`. Rows 1..M become the memory tokens, memory_pos +
        memory_prefix_proj(z_read) (BitGenModel.memory_tokens); then one pass of the backbone
        (step_many), which is what prefill.onnx computes, a float32 rounding apart."""
        if self.memory_prefix is None:
            raise ModelLoadError("this export has no numpy prefill parameters; re-export the model")
        if cache.seen:
            raise ValueError("prefill needs an empty cache")
        proj, pos = self.memory_prefix
        m = pos.shape[0]
        x = np.array(x, np.float32)
        x[1:1 + m] = pos + self._bitlinear(np.asarray(z_read, np.float32).reshape(-1), proj).reshape(m, self.d)
        return self.step_many(x, cache, image_kv, prompt=True)

    def _prompt_rows(self, x: np.ndarray, lin: _Linear) -> np.ndarray:
        """`_rows` with every row's RMS from one einsum (float32 sums of squares, the rest in
        float64 as `_rows`): for the prompt's many rows (step_many `prompt`)."""
        if lin.norm is not None:
            inv = 1.0 / np.sqrt(np.einsum("ij,ij->i", x, x).astype(np.float64) / x.shape[-1] + self.rms_eps)
            x = x * inv.astype(np.float32)[:, None] * lin.norm
        return self._quantised_rows(x, lin)

    def _rows(self, x: np.ndarray, lin: _Linear) -> np.ndarray:
        """`_bitlinear` for a few rows at once, with its scalars: per-row RMS and absmax scale
        in float64, rounded to float32 where `_bitlinear` meets them with a float32 array."""
        if lin.norm is not None:
            inv = np.array([1.0 / math.sqrt(float(np.dot(r, r)) / x.shape[-1] + self.rms_eps) for r in x])
            x = x * inv.astype(np.float32)[:, None] * lin.norm
        return self._quantised_rows(x, lin)

    def _quantised_rows(self, x: np.ndarray, lin: _Linear) -> np.ndarray:
        """Normed rows (m, d) -> int8 absmax codes per row -> ternary matmul -> rescale."""
        scale = np.maximum(np.abs(x).max(axis=-1).astype(np.float64), self.act_eps) / 127.0
        y = np.rint(x / scale.astype(np.float32)[:, None]) @ lin.w
        y *= (scale * lin.gamma).astype(np.float32)[:, None]
        return y if lin.bias is None else y + lin.bias

    def step(self, x: np.ndarray, cache: SinkKVCache, image_kv=None) -> np.ndarray:
        """x (d,) embedded token after the tokens in `cache` (attached) -> state (1, d),
        final-normed. Writes the token's K/V (pre-rotary, as decode.onnx returns them) and
        its rotated key into the cache: one slot, evicting the oldest window token when full."""
        h, hd, d = self.n_heads, self.head_dim, self.d
        t = cache.seen                   # the token's stream position
        past = len(cache)                # its cache slot in the torch model: the sinks' distance
        slot = cache.advance(like=(len(self.layers), 1, h, hd))
        n = cache.live_slots()
        kb, vb, kr = cache.buffer("k"), cache.buffer("v"), cache.buffer("k_rot")
        cos, sin = self.rotation(t)
        n_sink = cache.sink_size if past != t else 0   # sinks need their own query rotation
        if n_sink:
            cos_s, sin_s = self.rotation(past)
        x = np.asarray(x, np.float32).reshape(d)
        for i, layer in enumerate(self.layers):
            qkv = self._bitlinear(x, layer.qkv).reshape(3, h, 1, hd)
            kb[i, 0, :, slot] = qkv[1, :, 0]
            vb[i, 0, :, slot] = qkv[2, :, 0]
            qk = self._rotate(qkv[:2], cos, sin)
            kr[i, 0, :, slot] = qk[1, :, 0]
            keys = kr[i, 0, :, :n]                                             # (H, n, hd)
            s = qk[0] @ keys.transpose(0, 2, 1)                               # (H, 1, n)
            if n_sink:
                s[..., :n_sink] = self._rotate(qkv[0], cos_s, sin_s) @ keys[:, :n_sink].transpose(0, 2, 1)
            p = self._softmax(s * self.scale)
            x = x + self._bitlinear((p @ vb[i, 0, :, :n]).reshape(d), layer.proj)
            if layer.xq is not None and image_kv is not None:
                ik_t, iv = image_kv[i]
                q = self._bitlinear(x, layer.xq).reshape(h, 1, hd)
                p = self._softmax((q @ ik_t) * self.scale)
                x = x + layer.gate * self._bitlinear((p @ iv).reshape(d), layer.xo)
            up = self._bitlinear(x, layer.up)
            a, b = up[:up.shape[0] // 2], up[up.shape[0] // 2:]
            x = x + self._bitlinear(a / (1.0 + np.exp(-a)) * b, layer.down)
        return self._rms(x, self.final_norm)[None]
