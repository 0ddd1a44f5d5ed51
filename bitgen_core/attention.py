"""Causal self-attention with rotary positions and an attention-sink KV cache (StreamingLLM).

StreamingLLM's observation: softmax attention dumps surplus mass on the first tokens ("sinks"),
so a rolling window that evicts them collapses. Keeping the first S tokens plus the R most
recent ones keeps the model stable over an unbounded stream with constant memory.

The positional trick: keys are cached *before* rotary embedding, and positions are assigned by
slot inside the cache (0..L-1), not by position in the original stream. After an eviction the
surviving tokens are simply re-rotated at their new, contiguous positions, so the model never
sees a relative distance larger than it was trained on, and a stream of any length works.

Pieces:
- `Rotary`: rotate-half RoPE with a cached inverse-frequency buffer.
- `attend_with_cache(q, k, v, rotary, key_padding_mask)`: the pure function behind every
  forward: q holds the Tq newest tokens (pre-rotary), k/v hold all L cached tokens including
  those Tq (k pre-rotary); queries sit at positions L-Tq..L-1, causal among themselves.
- `SinkKVCache`: S sinks + R-token rolling window, sequence axis -2 (any leading dims, e.g.
  (B, H, L, hd) per layer or (layers, B, H, L, hd) for a whole model). `kvcache_np.SinkKVCache`
  is the numpy twin the runtime uses with the exported decode graph.
- `CausalSelfAttention`: BitLinear projections; `forward(x, padding_mask)` for full
  sequences; `prefill(x, cache)`, `step(x_t, cache)` for streaming; and `decode(x, past_k,
  past_v) -> (y, k_new, v_new)`, the cache-in/cache-out form to export as an ONNX graph
  (inputs x (B, T, D), past_k (B, H, L, hd) pre-rotary, past_v; the graph rotates with
  positions 0..L+T-1; outputs y and the new tokens' pre-rotary k and v, which the runtime
  appends to its numpy SinkKVCache, evicting as needed). A cache holds at most S+R past
  tokens, so a decode step attends over at most S+R+1 keys.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .quant import BitLinear


class Rotary(nn.Module):
    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError("rotary embedding needs an even head dimension")
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def cos_sin(self, positions: torch.Tensor, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.to(self.inv_freq.dtype).unsqueeze(-1) * self.inv_freq
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin


def attend_with_cache(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rotary: Rotary,
                      key_padding_mask: torch.Tensor | None = None,
                      scale: float | None = None) -> torch.Tensor:
    """Causal attention of the Tq newest tokens over all L cached tokens.

    q: (B, H, Tq, hd) pre-rotary; k, v: (B, H, L, hd) with k pre-rotary and the newest Tq
    tokens last; key_padding_mask: (B, L) bool, True where a key is real. Returns (B, H, Tq, hd).
    """
    tq, length = q.shape[-2], k.shape[-2]
    k_pos = torch.arange(length, device=k.device)
    q_pos = k_pos[length - tq:]  # the queries are the last Tq cache slots
    cos, sin = rotary.cos_sin(k_pos, k.dtype)
    k = Rotary.rotate(k, cos, sin)
    q = Rotary.rotate(q, cos[length - tq:], sin[length - tq:])
    scale = scale if scale is not None else 1.0 / math.sqrt(int(q.shape[-1]))
    scores = (q @ k.transpose(-1, -2)) * scale
    allowed = k_pos.unsqueeze(0) <= q_pos.unsqueeze(1)          # (Tq, L) causal
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask[:, None, None, :].to(torch.bool)
    # a finite floor instead of -inf: fully padded query rows get a harmless uniform average
    # rather than NaN, and the graph exports without special cases
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) @ v


class SinkKVCache:
    """First `sink_size` tokens + the `window_size` most recent ones; keys stored pre-rotary."""

    def __init__(self, sink_size: int = 4, window_size: int = 252):
        if sink_size < 0 or window_size < 1:
            raise ValueError("need sink_size >= 0 and window_size >= 1")
        self.sink_size, self.window_size = sink_size, window_size
        self.reset()

    @property
    def capacity(self) -> int:
        return self.sink_size + self.window_size

    def reset(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.stream_positions = torch.zeros(0, dtype=torch.long)  # original index of each slot
        self.seen = 0  # tokens appended since reset: the stream may be unbounded

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def past(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(k, v) to feed a decode step; empty (L=0) tensors shaped like `like` if nothing cached."""
        if self.k is None:
            empty = like.new_zeros(*like.shape[:-2], 0, like.shape[-1])
            return empty, empty
        return self.k, self.v

    def append(self, k_new: torch.Tensor, v_new: torch.Tensor) -> None:
        """Add T tokens (sequence axis -2) and evict the oldest non-sink tokens beyond capacity."""
        t = k_new.shape[-2]
        k_new, v_new = k_new.detach(), v_new.detach()
        self.k = k_new if self.k is None else torch.cat([self.k, k_new], dim=-2)
        self.v = v_new if self.v is None else torch.cat([self.v, v_new], dim=-2)
        self.stream_positions = torch.cat(
            [self.stream_positions, torch.arange(self.seen, self.seen + t)])
        self.seen += t
        if len(self) > self.capacity:
            keep = torch.cat([torch.arange(self.sink_size),
                              torch.arange(len(self) - self.window_size, len(self))])
            self.k = self.k.index_select(-2, keep.to(self.k.device)).contiguous()
            self.v = self.v.index_select(-2, keep.to(self.v.device)).contiguous()
            self.stream_positions = self.stream_positions[keep]


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, rope_base: float = 10000.0, norm: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        # one fused projection: a single RMSNorm + activation quantisation for q, k and v
        self.qkv = BitLinear(d_model, 3 * d_model, norm=norm)
        self.proj = BitLinear(d_model, d_model, norm=norm)
        self.rotary = Rotary(self.head_dim, rope_base)
        self.scale = 1.0 / math.sqrt(self.head_dim)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]  # each (B, H, T, hd); k not yet rotated

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = y.shape
        return self.proj(y.transpose(1, 2).reshape(b, t, self.d_model))

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None,
                return_kv: bool = False):
        """Full causal attention over x (B, T, D); padding_mask (B, T) True for real tokens.

        With return_kv, also returns the pre-rotary (k, v) to seed a SinkKVCache.
        """
        q, k, v = self._qkv(x)
        y = self._out(attend_with_cache(q, k, v, self.rotary, padding_mask, self.scale))
        return (y, k, v) if return_kv else y

    def decode(self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pure cache-in/cache-out step (the ONNX decode graph): returns (y, k_new, v_new)."""
        q, k_new, v_new = self._qkv(x)
        k = torch.cat([past_k, k_new], dim=-2)
        v = torch.cat([past_v, v_new], dim=-2)
        return self._out(attend_with_cache(q, k, v, self.rotary, scale=self.scale)), k_new, v_new

    def prefill(self, x: torch.Tensor, cache: SinkKVCache) -> torch.Tensor:
        """Process a prompt chunk (B, T, D) after whatever the cache holds, then cache it."""
        past_k, past_v = cache.past(x.new_zeros(x.shape[0], self.n_heads, 0, self.head_dim))
        y, k_new, v_new = self.decode(x, past_k, past_v)
        cache.append(k_new, v_new)
        return y

    def step(self, x_t: torch.Tensor, cache: SinkKVCache) -> torch.Tensor:
        """One streaming token: x_t (B, D) or (B, 1, D) -> y_t of the same shape."""
        squeeze = x_t.dim() == 2
        y = self.prefill(x_t.unsqueeze(1) if squeeze else x_t, cache)
        return y.squeeze(1) if squeeze else y
