"""What the robot selector reports on /diagnostics, and the board probes behind it.

A robot's operator looks at `rqt_robot_monitor` or `ros2 topic echo /diagnostics`, not at
our logs: latency, how stale the camera is, what was dropped, memory use, CPU temperature
(a Pi throttles at 80-85 C and latency jumps), which model answers and how many facts it
holds. `NodeStats` is plain Python (thread-safe); `to_status` turns a snapshot into a
`diagnostic_msgs/DiagnosticStatus`.
"""

from __future__ import annotations

import collections
import glob
import os
import threading
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

# Thermal zone types that are the CPU/SoC on common boards (Pi: cpu-thermal, Jetson:
# CPU-therm, x86: x86_pkg_temp); others (battery, wifi) are ignored.
_CPU_ZONE_HINTS = ("cpu", "soc", "x86_pkg", "package", "tcpu")


def cpu_temperature_c(root: str = "/sys/class/thermal") -> float | None:
    """The hottest CPU-like thermal zone in degrees C, or None where the board exposes none."""
    best = None
    zones = sorted(glob.glob(os.path.join(root, "thermal_zone*")))
    for zone in zones:
        try:
            with open(os.path.join(zone, "type")) as f:
                kind = f.read().strip().lower()
            with open(os.path.join(zone, "temp")) as f:
                milli = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if any(h in kind for h in _CPU_ZONE_HINTS) or len(zones) == 1:
            best = milli / 1000.0 if best is None else max(best, milli / 1000.0)
    return best


def rss_mb(pid: int | None = None) -> float:
    """Resident set size in MiB, read from /proc (no psutil needed on the robot)."""
    path = f"/proc/{pid or os.getpid()}/statm"
    with open(path) as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


@dataclass
class Snapshot:
    state: str
    model_id: str
    fact_count: int
    selections: int
    last_latency_ms: float | None
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    frame_age_s: float | None
    frames_received: int
    frames_superseded: int
    frames_rejected: int
    frames_stale: int
    tasks_received: int
    tasks_dropped: int
    tasks_rejected: int
    queue_length: int
    rss_mb: float
    cpu_temp_c: float | None


class NodeStats:
    """Counters and a window of recent latencies, shared by the callbacks."""

    def __init__(self, window: int = 200) -> None:
        self._lock = threading.Lock()
        self._latencies: collections.deque[float] = collections.deque(maxlen=window)
        self.selections = 0
        self.frames_rejected = 0
        self.frames_stale = 0
        self.tasks_received = 0
        self.tasks_rejected = 0

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def record_latency(self, ms: float) -> None:
        with self._lock:
            self._latencies.append(float(ms))
            self.selections += 1

    def latency_percentiles(self) -> tuple[float | None, float | None, float | None]:
        with self._lock:
            lat = sorted(self._latencies)
            last = self._latencies[-1] if self._latencies else None
        if not lat:
            return None, None, None
        return last, _quantile(lat, 0.50), _quantile(lat, 0.95)


def _quantile(sorted_values: list[float], q: float) -> float:
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]


def _fmt(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.2f}{unit}"


def to_status(snap: Snapshot, name: str, *, max_frame_age: float,
              warn_temp_c: float = 80.0) -> DiagnosticStatus:
    """One DiagnosticStatus; WARN names the first thing an operator should look at."""
    level, message = DiagnosticStatus.OK, "selecting"
    if snap.state != "active":
        level, message = DiagnosticStatus.WARN, f"lifecycle state is {snap.state}"
    elif snap.cpu_temp_c is not None and snap.cpu_temp_c >= warn_temp_c:
        level, message = DiagnosticStatus.WARN, f"CPU at {snap.cpu_temp_c:.0f} C, may throttle"
    elif snap.frame_age_s is None or snap.frame_age_s > max_frame_age:
        level, message = DiagnosticStatus.WARN, "no fresh camera frame: selecting from text only"
    values = {
        "lifecycle_state": snap.state,
        "model_id": snap.model_id,
        "memory_fact_count": str(snap.fact_count),
        "selections": str(snap.selections),
        "latency_ms_last": _fmt(snap.last_latency_ms),
        "latency_ms_p50": _fmt(snap.p50_latency_ms),
        "latency_ms_p95": _fmt(snap.p95_latency_ms),
        "frame_age_s": _fmt(snap.frame_age_s),
        "frames_received": str(snap.frames_received),
        "frames_dropped": str(snap.frames_superseded + snap.frames_rejected),
        "frames_superseded": str(snap.frames_superseded),
        "frames_rejected": str(snap.frames_rejected),
        "frames_stale": str(snap.frames_stale),
        "tasks_received": str(snap.tasks_received),
        "tasks_dropped": str(snap.tasks_dropped),
        "tasks_rejected": str(snap.tasks_rejected),
        "task_queue_length": str(snap.queue_length),
        "rss_mb": _fmt(snap.rss_mb),
        "cpu_temp_c": _fmt(snap.cpu_temp_c),
    }
    return DiagnosticStatus(level=level, name=name, message=message,
                            hardware_id=snap.model_id or "bitgen",
                            values=[KeyValue(key=k, value=v) for k, v in values.items()])
