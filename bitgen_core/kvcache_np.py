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

Storage is preallocated, so a token costs one slot write, never a copy of the cache: S sink
slots, then a ring of R + 1 window slots. The spare slot holds the token evicted last, which a
decode step still attends to (torch attends over the S + R cached tokens *plus* the new one,
then evicts); `live_slots()` is that physical range, `k`/`v`/`past()` the logical S + R tokens
in stream order. A very large window (the full-cache baseline) grows its storage by doubling
until it holds the window. Companion buffers with the same slot layout (`buffer(name)`) let a
decoder keep per-slot data, e.g. keys already rotated, without a second bookkeeping.
"""

from __future__ import annotations

import numpy as np

_MIN_SLOTS = 64


class SinkKVCache:
    def __init__(self, sink_size: int = 4, window_size: int = 252):
        if sink_size < 0 or window_size < 1:
            raise ValueError("need sink_size >= 0 and window_size >= 1")
        self.sink_size, self.window_size = int(sink_size), int(window_size)
        self.reset()

    @property
    def capacity(self) -> int:
        return self.sink_size + self.window_size

    @property
    def slots(self) -> int:
        """Physical slots once fully grown: sinks + window + the spare."""
        return self.capacity + 1

    def reset(self) -> None:
        self._buf: dict[str, np.ndarray] = {}
        self.seen = 0

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self._buf.values())

    # ------------------------------------------------------------------ slots
    def slot_of(self, t: int) -> int:
        """Physical slot of stream token t (valid while t is resident)."""
        s = self.sink_size
        return t if t < s else s + (t - s) % (self.window_size + 1)

    def live_slots(self) -> int:
        """Slots [0, n) hold the tokens a decode step attends to: the resident ones, plus the
        token evicted by the last append (the spare slot) once the window is full."""
        return min(self.seen, self.slots)

    def buffer(self, name: str) -> np.ndarray:
        """A companion array shaped like the keys (created on first use, grown with them)."""
        if name not in self._buf:
            if "k" not in self._buf:
                raise ValueError("cache is empty: append keys and values first")
            self._buf[name] = np.zeros_like(self._buf["k"])
        return self._buf[name]

    def live_positions(self) -> np.ndarray:
        """Stream position of the token in each live slot (0..live_slots()-1)."""
        s, ring = self.sink_size, self.window_size + 1
        j = np.arange(self.live_slots(), dtype=np.int64)
        r = j - s
        last = self.seen - 1
        return np.where(j < s, j, s + r + ((last - s - r) // ring) * ring)

    def advance(self, like: tuple[int, ...]) -> int:
        """Count the next stream token and return its slot, storage grown to hold it; the
        caller writes its k/v (and companions) there. `like`: (leading dims..., head_dim)
        of one token, used when the cache is still empty."""
        slot = self.slot_of(self.seen)
        self._reserve(like, slot + 1)
        self.seen += 1
        return slot

    def rewind(self, n: int) -> None:
        """Drop the newest n tokens again (a rejected speculative draft, engine.py). Only
        while nothing was ever evicted (seen <= capacity): then every slot still holds the
        token it was written with, and dropping the newest ones leaves the cache exactly as
        if they had never been appended. Their slots are overwritten by the next tokens."""
        n = int(n)
        if n < 0 or n > self.seen:
            raise ValueError(f"cannot rewind {n} of {self.seen} tokens")
        if self.seen > self.capacity:
            raise ValueError("cannot rewind a cache that has evicted tokens")
        self.seen -= n

    def _reserve(self, like: tuple[int, ...], upto: int, dtype=np.float32) -> None:
        """Allocate (or grow by doubling) every buffer to hold physical slots [0, upto)."""
        k = self._buf.get("k")
        have = 0 if k is None else k.shape[-2]
        if have >= upto:
            return
        n = min(self.slots, max(upto, 2 * have, _MIN_SLOTS))
        shape = tuple(like[:-1]) + (n,) + tuple(like[-1:])
        dtype = dtype if k is None else k.dtype
        names = list(self._buf) or ["k", "v"]
        for name in names:
            new = np.zeros(shape, dtype)
            if name in self._buf:
                new[..., :have, :] = self._buf[name]
            self._buf[name] = new

    # ------------------------------------------------------------------ the cache API
    def append(self, k_new: np.ndarray, v_new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add T tokens (axis -2), keeping the sinks and the `window_size` newest tokens.
        Returns (slots, stream positions) of the new tokens still resident, for companions."""
        k_new, v_new = np.asarray(k_new), np.asarray(v_new)
        if k_new.shape != v_new.shape:
            raise ValueError(f"k {k_new.shape} and v {v_new.shape} must have the same shape")
        k = self._buf.get("k")
        if k is not None and k_new.shape[:-2] + k_new.shape[-1:] != k.shape[:-2] + k.shape[-1:]:
            raise ValueError(f"new tokens {k_new.shape} do not match the cache {k.shape}")
        t = k_new.shape[-2]
        pos = np.arange(self.seen, self.seen + t, dtype=np.int64)
        # of a chunk longer than the ring, only its sinks and its last R + 1 tokens land
        keep = (pos < self.sink_size) | (pos >= self.seen + t - (self.window_size + 1))
        pos, src = pos[keep], np.flatnonzero(keep)
        slots = np.array([self.slot_of(int(p)) for p in pos], dtype=np.int64)
        if len(slots):
            self._reserve(k_new.shape[:-2] + k_new.shape[-1:], int(slots.max()) + 1, k_new.dtype)
            if t == 1:
                s = int(slots[0])
                self._buf["k"][..., s, :] = k_new[..., 0, :]
                self._buf["v"][..., s, :] = v_new[..., 0, :]
            else:
                self._buf["k"][..., slots, :] = k_new[..., src, :]
                self._buf["v"][..., slots, :] = v_new[..., src, :]
        self.seen += t
        return slots, pos

    @property
    def stream_positions(self) -> np.ndarray:
        """Original stream index of each cached token, in cache (logical) order."""
        s = min(self.seen, self.sink_size)
        w = len(self) - s
        return np.concatenate([np.arange(s), np.arange(self.seen - w, self.seen)]).astype(np.int64)

    def _logical(self, name: str) -> np.ndarray | None:
        if name not in self._buf:
            return None
        slots = [self.slot_of(int(p)) for p in self.stream_positions]
        return np.ascontiguousarray(np.take(self._buf[name], slots, axis=-2))

    @property
    def k(self) -> np.ndarray | None:
        """Cached keys (pre-rotary) in cache order: sinks, then the window oldest first."""
        return self._logical("k")

    @property
    def v(self) -> np.ndarray | None:
        return self._logical("v")

    def past(self, empty_shape: tuple[int, ...] | None = None, dtype=np.float32
             ) -> tuple[np.ndarray, np.ndarray]:
        """Cached (k, v) for the next decode step; zero-length arrays of `empty_shape` if empty."""
        if "k" not in self._buf:
            if empty_shape is None:
                raise ValueError("cache is empty: pass empty_shape=(..., 0, head_dim)")
            empty = np.zeros(empty_shape, dtype=dtype)
            return empty, empty.copy()
        return self.k, self.v

    def positions(self) -> np.ndarray:
        """Rotary positions the decode graph assigns to the cached slots (0..L-1)."""
        return np.arange(len(self), dtype=np.int64)
