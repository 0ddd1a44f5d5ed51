"""glibc malloc arenas in a long-running, many-threaded node: capped, so RSS stays flat.

glibc gives each thread that meets a locked arena a new one, up to 8 per core (16 on 2
cores); the robot_selector has 27 threads (DDS, executor, inference worker, BLAS). Each
arena keeps its own freed memory, and after the first large free glibc raises its trim
threshold (up to 64 MB), so every arena holds on to what the biggest moment it served
needed. Measured on the shipped model (scripts/soak.py with BITGEN_MEMPROBE, the same load
for both runs, 9 min): malloc's bytes in use were flat at 71-73 MB either way and Python's
objects, the threads, mmapped blocks and file-backed pages did not grow; everything RSS
gained was arena heap. With 16 arenas the heaps held 103 MB for 72 MB in use (31 MB free
but resident); capped at 2 they held 87 MB (15 MB free) and RSS was 14 MB lower.

`limit_malloc_arenas()` applies the cap through `mallopt(M_ARENA_MAX)`. It must run before
the process starts its threads (the node calls it before importing rclpy and numpy): arenas
that already exist are kept. An explicit `MALLOC_ARENA_MAX` (or glibc tunable) in the
environment wins; off glibc (musl) nothing happens.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time

M_ARENA_MAX = -8          # glibc mallopt parameter
DEFAULT_ARENAS = 2


def limit_malloc_arenas(arenas: int = DEFAULT_ARENAS, env=os.environ) -> bool:
    """Cap glibc's malloc arenas at `arenas`; True if this call set the cap."""
    if env.get("MALLOC_ARENA_MAX") or "arena_max" in env.get("GLIBC_TUNABLES", ""):
        return False                  # the user (or the launch environment) chose already
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, int(arenas)))


class HeapTrimmer:
    """Gives freed heap memory back to the OS (`malloc_trim(0)`) at most every `period` s.

    Capping the arenas removes most of the slack, not all of it: an arena's footprint still
    ratchets up to the biggest moment it ever served (a selection while an edit encodes a
    fact, a longer prompt) and glibc keeps that high-water mark resident. `malloc_trim(0)`
    releases every free page of every arena, top and middle (MADV_DONTNEED), so RSS follows
    what is in use instead of the worst moment so far. The node calls `maybe_trim()` on its
    inference thread between selections, where a few ms of page walking delay nothing.
    """

    def __init__(self, period: float) -> None:
        self.period = float(period)
        self._libc = _libc()
        self._last = time.monotonic()
        self.trims = 0
        self.last_ms = 0.0

    def maybe_trim(self, period: float | None = None, now: float | None = None) -> bool:
        """Trim if `period` (default: the constructor's; <= 0 disables) has passed."""
        period = self.period if period is None else float(period)
        now = time.monotonic() if now is None else now
        if self._libc is None or period <= 0 or now - self._last < period:
            return False
        t0 = time.perf_counter()
        self._libc.malloc_trim(0)
        self.last_ms = (time.perf_counter() - t0) * 1000.0
        self._last = time.monotonic()
        self.trims += 1
        return True


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim          # noqa: B018 - glibc only (musl has none)
        return libc
    except (OSError, AttributeError):
        return None
