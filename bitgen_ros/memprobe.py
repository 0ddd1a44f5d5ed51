"""Where a long-running node's memory goes: an opt-in probe for soak runs (issue 7, item 6).

RSS alone cannot tell a leak from allocator behaviour. With `BITGEN_MEMPROBE=<file.jsonl>` in
the node's environment, a daemon thread appends one JSON line every `BITGEN_MEMPROBE_PERIOD`
seconds (default 10) with:
- `/proc/self/smaps_rollup`: resident anonymous vs file-backed memory (mapped model files,
  shared libraries) — a growth in `file_kb` is pages of mapped files being touched, not a leak;
- glibc `mallinfo2()` summed over all arenas: bytes in use (`uordblks`), free but kept
  (`fordblks`), mmapped blocks (`hblkhd`), and the number of arenas from `malloc_info()`:
  growing free bytes with flat in-use bytes is fragmentation, growing in-use bytes a leak in
  native code or in what Python holds;
- the process's thread count;
- with `BITGEN_MEMPROBE_TRACEMALLOC=1`, Python's traced memory (numpy data included) and the
  ten source lines whose allocations grew most since the first sample after start-up.
Nothing runs without the variable, and the probe only reads.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import re
import threading
import time


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        return libc
    except (OSError, AttributeError):      # not glibc >= 2.33: the malloc figures are absent
        return None


def smaps_rollup(pid: int | str = "self") -> dict[str, int]:
    """kB figures of /proc/PID/smaps_rollup (Rss, Anonymous, Private_Dirty, ...)."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        pass
    return out


def malloc_figures(libc) -> dict[str, int]:
    if libc is None:
        return {}
    info = libc.mallinfo2()
    figures = {k: int(getattr(info, k)) for k in ("arena", "hblkhd", "uordblks", "fordblks",
                                                   "keepcost")}
    figures["arenas"] = _arena_count(libc)
    return figures


def _arena_count(libc) -> int:
    """Number of malloc arenas, from malloc_info()'s XML written to an in-memory stream."""
    buf, size = ctypes.c_char_p(), ctypes.c_size_t()
    try:
        libc.open_memstream.restype = ctypes.c_void_p
        stream = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
        libc.malloc_info(0, ctypes.c_void_p(stream))
        libc.fclose(ctypes.c_void_p(stream))
        xml = ctypes.string_at(buf, size.value).decode()
        libc.free(buf)
    except (OSError, AttributeError, UnicodeDecodeError):
        return -1
    return len(re.findall(r"<heap nr=", xml))


def _threads() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return -1


class MemProbe:
    def __init__(self, path: str, period: float, trace: bool) -> None:
        self.path, self.period, self.trace = path, period, trace
        self.libc = _libc()
        self._baseline = None
        self._stop = threading.Event()

    def sample(self, t: float) -> dict:
        smaps = smaps_rollup()
        rec = {"t": round(t, 1), "rss_kb": smaps.get("Rss"), "anon_kb": smaps.get("Anonymous"),
               "file_kb": (smaps.get("Rss", 0) - smaps.get("Anonymous", 0)) if smaps else None,
               "threads": _threads(), "gc_objects": len(gc.get_objects())}
        rec |= {f"malloc_{k}": v for k, v in malloc_figures(self.libc).items()}
        if self.trace:
            import tracemalloc
            rec["py_traced"], rec["py_traced_peak"] = tracemalloc.get_traced_memory()
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)])
            if self._baseline is None:
                self._baseline = snap
            else:
                rec["py_top_growth"] = [
                    f"{s.traceback[0].filename}:{s.traceback[0].lineno} {s.size_diff:+d} B "
                    f"({s.count_diff:+d})"
                    for s in snap.compare_to(self._baseline, "lineno")[:10]]
        return rec

    def run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            with open(self.path, "a") as f:
                f.write(json.dumps(self.sample(time.monotonic() - start)) + "\n")
            self._stop.wait(self.period)

    def stop(self) -> None:
        self._stop.set()


def start_from_environment(env=os.environ) -> MemProbe | None:
    """Start the probe thread if BITGEN_MEMPROBE names a file."""
    path = env.get("BITGEN_MEMPROBE", "")
    if not path:
        return None
    trace = env.get("BITGEN_MEMPROBE_TRACEMALLOC", "0") == "1"
    if trace:
        import tracemalloc
        tracemalloc.start(1)
    probe = MemProbe(path, float(env.get("BITGEN_MEMPROBE_PERIOD", "10")), trace)
    threading.Thread(target=probe.run, name="bitgen-memprobe", daemon=True).start()
    return probe
