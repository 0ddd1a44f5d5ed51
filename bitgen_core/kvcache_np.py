"""Attention-sink KV cache in numpy (StreamingLLM), the runtime's twin of
`attention.SinkKVCache`. Torch-free.

The runtime drives the exported decode graph (x, past_k, past_v) -> (y, k_new, v_new):

    cache = SinkKVCache(sink_size=4, window_size=252)
    past_k, past_v = cache.past(empty_shape=(n_layers, 1, n_heads, 0, head_dim))
    y, k_new, v_new = session.run(None, {"x": x, "past_k": past_k, "past_v": past_v})
    cache.append(k_new, v_new)          # evicts the oldest non-sink tokens beyond capacity

Keys are stored before rotary embedding; the graph rotates them with positions 0..L-1 taken
from their slots in the cache, so evicting tokens just shifts the survivors to contiguous
positions (the StreamingLLM positional trick) and the stream can run forever in constant
memory. The sequence axis is -2; leading dims are free ((B, H, L, hd) or (layers, B, H, L, hd)).
"""

from __future__ import annotations

import numpy as np


class SinkKVCache:
    def __init__(self, sink_size: int = 4, window_size: int = 252):
        if sink_size < 0 or window_size < 1:
            raise ValueError("need sink_size >= 0 and window_size >= 1")
        self.sink_size, self.window_size = int(sink_size), int(window_size)
        self.reset()

    @property
    def capacity(self) -> int:
        return self.sink_size + self.window_size

    def reset(self) -> None:
        self.k: np.ndarray | None = None
        self.v: np.ndarray | None = None
        self.stream_positions = np.zeros(0, dtype=np.int64)  # original index of each slot
        self.seen = 0

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    @property
    def nbytes(self) -> int:
        return 0 if self.k is None else self.k.nbytes + self.v.nbytes

    def past(self, empty_shape: tuple[int, ...] | None = None, dtype=np.float32
             ) -> tuple[np.ndarray, np.ndarray]:
        """Cached (k, v) for the next decode step; zero-length arrays of `empty_shape` if empty."""
        if self.k is None:
            if empty_shape is None:
                raise ValueError("cache is empty: pass empty_shape=(..., 0, head_dim)")
            empty = np.zeros(empty_shape, dtype=dtype)
            return empty, empty.copy()
        return self.k, self.v

    def append(self, k_new: np.ndarray, v_new: np.ndarray) -> None:
        """Add T tokens (axis -2), then keep the sinks and the `window_size` newest tokens."""
        k_new, v_new = np.asarray(k_new), np.asarray(v_new)
        if k_new.shape != v_new.shape:
            raise ValueError(f"k {k_new.shape} and v {v_new.shape} must have the same shape")
        if self.k is not None and k_new.shape[:-2] + k_new.shape[-1:] != self.k.shape[:-2] + self.k.shape[-1:]:
            raise ValueError(f"new tokens {k_new.shape} do not match the cache {self.k.shape}")
        t = k_new.shape[-2]
        self.k = k_new.copy() if self.k is None else np.concatenate([self.k, k_new], axis=-2)
        self.v = v_new.copy() if self.v is None else np.concatenate([self.v, v_new], axis=-2)
        self.stream_positions = np.concatenate(
            [self.stream_positions, np.arange(self.seen, self.seen + t, dtype=np.int64)])
        self.seen += t
        n = len(self)
        if n > self.capacity:
            keep = np.concatenate([np.arange(self.sink_size), np.arange(n - self.window_size, n)])
            self.k = np.ascontiguousarray(np.take(self.k, keep, axis=-2))
            self.v = np.ascontiguousarray(np.take(self.v, keep, axis=-2))
            self.stream_positions = self.stream_positions[keep]

    def positions(self) -> np.ndarray:
        """Rotary positions the decode graph assigns to the cached slots (0..L-1)."""
        return np.arange(len(self), dtype=np.int64)
