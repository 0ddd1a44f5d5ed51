"""kvcache_np.SinkKVCache's preallocated layout: one slot write per token, the spare slot a
decode step still attends to, companion buffers that follow the keys, and storage that grows
by doubling for a large (full-cache) window but never past sinks + window + 1."""
from __future__ import annotations

import numpy as np
import pytest

from bitgen_core.kvcache_np import SinkKVCache


def _tok(t: float, shape=(2, 1, 3, 1, 4)):
    return np.full(shape, t, np.float32), np.full(shape, -t, np.float32)


def test_advance_writes_in_place_and_the_spare_slot_keeps_the_last_evicted_token():
    c = SinkKVCache(2, 3)
    c.append(*_tok(0))
    ids = []
    for t in range(1, 9):
        slot = c.advance(like=(2, 1, 3, 4))
        c.buffer("k")[..., slot, :] = t
        c.buffer("v")[..., slot, :] = -t
        ids.append(slot)
    assert c.seen == 9 and len(c) == 5 and c.live_slots() == 6
    assert ids == [1, 2, 3, 4, 5, 2, 3, 4]           # sinks 0-1, then a ring of 3 + 1 slots
    assert c.stream_positions.tolist() == [0, 1, 6, 7, 8]
    assert c.k[0, 0, 0, :, 0].tolist() == [0, 1, 6, 7, 8]      # logical order
    # physical slots 0..5 hold the resident tokens and token 5, evicted by the last append
    assert sorted(c.live_positions().tolist()) == [0, 1, 5, 6, 7, 8]
    k = c.buffer("k")
    assert [int(k[0, 0, 0, s, 0]) for s in range(6)] == c.live_positions().tolist()


def test_storage_is_allocated_once_for_a_sink_window_cache():
    c = SinkKVCache(4, 16)
    c.append(*_tok(0, (2, 1, 3, 10, 4)))
    buf = c.buffer("k")
    for t in range(200):
        s = c.advance(like=(2, 1, 3, 4))
        c.buffer("k")[..., s, :] = t
    assert c.buffer("k") is buf and buf.shape[-2] == c.slots == 21
    assert c.nbytes == 2 * buf.nbytes


def test_full_cache_grows_by_doubling_and_companions_follow():
    c = SinkKVCache(4, 10**9)
    c.append(*_tok(1, (1, 1, 2, 5, 4)))
    rot = c.buffer("k_rot")
    rot[..., :5, :] = 7
    sizes = set()
    for t in range(5, 300):
        s = c.advance(like=(1, 1, 2, 4))
        assert s == t
        sizes.add(c.buffer("k").shape[-2])
    assert sorted(sizes) == [64, 128, 256, 512]
    assert c.buffer("k_rot").shape == c.buffer("k").shape
    assert (c.buffer("k_rot")[..., :5, :] == 7).all()       # kept across the growth
    assert len(c) == 300 and c.live_slots() == 300


def test_chunk_longer_than_the_ring_keeps_sinks_and_newest():
    c = SinkKVCache(2, 4)
    k = np.arange(20, dtype=np.float32).reshape(1, 20, 1) * np.ones((1, 20, 3), np.float32)
    slots, pos = c.append(k, -k)
    assert pos.tolist() == [0, 1, 15, 16, 17, 18, 19]
    assert c.k[0, :, 0].tolist() == [0, 1, 16, 17, 18, 19]
    assert sorted(c.live_positions().tolist()) == [0, 1, 15, 16, 17, 18, 19]


def test_companion_needs_keys_first():
    with pytest.raises(ValueError):
        SinkKVCache(4, 8).buffer("k_rot")
