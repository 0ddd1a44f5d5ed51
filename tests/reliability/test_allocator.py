"""bitgen_ros.allocator: the malloc arena cap and the heap trimmer keep a long-running node's
RSS flat (issue 7, item 6). Each case runs in a fresh interpreter: the arena cap only acts
before threads start, and a trim in the test process would measure pytest's heap."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bitgen_ros.allocator import HeapTrimmer, limit_malloc_arenas

REPO = Path(__file__).resolve().parents[2]
glibc = pytest.mark.skipif(HeapTrimmer(1.0)._libc is None, reason="not glibc")


def _run(code: str, env_extra: dict[str, str] | None = None) -> dict:
    import os
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=60, env=env, cwd=str(REPO))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


THREADS = """
    import json, threading
    from bitgen_ros.allocator import limit_malloc_arenas
    capped = limit_malloc_arenas(2)
    from bitgen_ros.memprobe import _arena_count, _libc
    barrier = threading.Barrier(8)
    def work():
        keep = [bytearray(4096) for _ in range(64)]   # > 512 B: served by malloc, not pymalloc
        barrier.wait()                                # all 8 threads alive at once
    threads = [threading.Thread(target=work) for _ in range(8)]
    [t.start() for t in threads]; [t.join() for t in threads]
    print(json.dumps({"capped": capped, "arenas": _arena_count(_libc())}))
"""


@glibc
def test_the_cap_keeps_eight_threads_in_two_arenas():
    capped = _run(THREADS)
    assert capped["capped"] is True and 1 <= capped["arenas"] <= 2, capped


@glibc
def test_an_explicit_malloc_arena_max_is_left_alone():
    assert limit_malloc_arenas(2, env={"MALLOC_ARENA_MAX": "4"}) is False
    assert limit_malloc_arenas(2, env={"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}) is False
    chosen = _run(THREADS, {"MALLOC_ARENA_MAX": "4"})
    assert chosen["capped"] is False and 2 < chosen["arenas"] <= 4, chosen


def test_the_trimmer_runs_only_when_its_period_has_passed():
    trimmer = HeapTrimmer(30.0)
    start = trimmer._last
    assert not trimmer.maybe_trim(now=start + 29.0)
    if trimmer._libc is None:
        assert not trimmer.maybe_trim(now=start + 31.0)       # nothing to call off glibc
        return
    assert trimmer.maybe_trim(now=start + 31.0) and trimmer.trims == 1
    assert not trimmer.maybe_trim(period=0.0, now=trimmer._last + 1e6)   # 0 disables
    assert trimmer.maybe_trim(period=0.5, now=trimmer._last + 1.0)       # a live new period


@glibc
def test_a_trim_gives_a_fragmented_heap_back_to_the_os():
    # 64 MB in 1 kB blocks, every 64th kept: the freed 63/64 sit below live blocks, where
    # glibc's own top-of-heap trimming cannot reach them; malloc_trim(0) can.
    res = _run("""
        import json
        from bitgen_ros.allocator import HeapTrimmer
        from bitgen_ros.diagnostics import rss_mb
        blocks = [bytearray(1024) for _ in range(64 * 1024)]
        keep = blocks[::64]
        del blocks
        before = rss_mb()
        trimmer = HeapTrimmer(1.0)
        trimmed = trimmer.maybe_trim(now=trimmer._last + 2.0)
        print(json.dumps({"before": before, "after": rss_mb(), "trimmed": trimmed,
                          "ms": trimmer.last_ms, "kept": len(keep)}))
    """)
    assert res["trimmed"], res
    assert res["before"] - res["after"] > 30.0, res          # most of the 63 MB freed
    assert res["ms"] < 500.0, res
