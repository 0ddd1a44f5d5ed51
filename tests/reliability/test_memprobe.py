"""bitgen_ros.memprobe, the soak's opt-in memory probe: off unless asked for, and when on,
one JSON line per period that separates anonymous from file-backed memory, malloc's bytes
in use from its kept free bytes, and (with tracemalloc) Python's own allocations."""
from __future__ import annotations

import json
import time

from bitgen_ros import memprobe


def test_the_probe_is_off_without_its_variable():
    assert memprobe.start_from_environment({}) is None


def test_smaps_rollup_splits_anonymous_and_file_backed_memory():
    smaps = memprobe.smaps_rollup()
    if not smaps:                                   # not Linux >= 4.14
        return
    assert smaps["Rss"] >= smaps["Anonymous"] > 0


def test_a_sample_line_names_where_the_memory_is(tmp_path):
    path = tmp_path / "probe.jsonl"
    probe = memprobe.start_from_environment({"BITGEN_MEMPROBE": str(path),
                                             "BITGEN_MEMPROBE_PERIOD": "0.2"})
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not path.exists()
                                               or len(path.read_text().splitlines()) < 2):
            time.sleep(0.05)
    finally:
        probe.stop()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) >= 2 and lines[1]["t"] > lines[0]["t"]
    rec = lines[-1]
    assert rec["threads"] >= 2 and rec["gc_objects"] > 1000   # this thread + the probe's
    if memprobe._libc() is not None:                             # glibc >= 2.33
        assert rec["malloc_arenas"] >= 1
        assert rec["malloc_uordblks"] > 0 and rec["malloc_fordblks"] >= 0


def test_tracemalloc_growth_points_at_the_allocating_line(tmp_path):
    import tracemalloc
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start(1)
    try:
        probe = memprobe.MemProbe(str(tmp_path / "p.jsonl"), 1.0, trace=True)
        probe.sample(0.0)                                         # the baseline
        hoard = [bytearray(1000) for _ in range(2000)]           # ~2 MB from this line
        rec = probe.sample(1.0)
    finally:
        if not was_tracing:
            tracemalloc.stop()
    assert len(hoard) == 2000
    assert rec["py_traced"] > 2_000_000
    assert "test_memprobe.py" in rec["py_top_growth"][0], rec["py_top_growth"][:3]
