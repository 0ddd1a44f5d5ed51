"""Smoke version of the soak benchmark (issue 7, item 6): `scripts/soak.py` for 15 s.

tests/ros/test_node_soak.py covers the 30 FPS camera + 10 Hz tasks; this one runs the soak
script itself, which adds memory edits and forgets (with the edit token) during the load, so
the script keeps working and the figures it reports stay complete. It asserts that the run
completes, the node answers, every edit and forget succeeds, the audit log holds one record
per change, the memory ends with exactly the facts still expected, and every interval and
target has its figures. The targets themselves (RSS < 5 MB, p95 drift < 10%) are meant for
the 30-minute run (`python scripts/soak.py --minutes 30`); 15 s on a shared machine is noise.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed; run `make build`")
pytest.importorskip("bitgen_ros.msg", reason="bitgen_ros interfaces not built; run `make build`")

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = Path(os.environ.get("BITGEN_TEST_MODEL_DIR") or REPO / "models" / "default")
pytestmark = pytest.mark.skipif(not (MODEL_DIR / "manifest.json").is_file(),
                                reason=f"{MODEL_DIR}/manifest.json is absent: the shipped model "
                                       "has not been exported yet")


def test_soak_script_runs_with_edits_answers_and_reports_its_figures(tmp_path):
    cmd = [sys.executable, str(REPO / "scripts" / "soak.py"), "--seconds", "15",
           "--warmup", "3", "--interval", "3", "--width", "320", "--height", "240",
           "--edit-period", "4", "--live-facts", "2", "--max-trace-tokens", "8",
           "--model-dir", str(MODEL_DIR), "--out", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=150, cwd=str(REPO))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    res = json.loads((tmp_path / "soak.json").read_text())

    assert res["completed"] and res["node_died_at_s"] is None
    tot = res["totals"]
    assert tot["tasks_answered"] >= 10, tot
    # 18 s at one edit per 4 s (the most the node's default 30 changes/min allows, as each
    # edit after the second also forgets one), so about 5 edits + 3 forgets.
    assert tot["edits_and_forgets"] >= 6, tot
    assert tot["edits_ok"] == tot["edits_and_forgets"], tot["edit_failures"]
    assert tot["audit_log_records"] == tot["edits_and_forgets"]
    assert tot["memory_consistent"], (tot["memory_keys_at_end"], tot["memory_keys_expected"])

    assert len(res["intervals"]) == 5
    for row in res["intervals"]:
        assert row["rss_mb_median"] > 50, row             # the node's own RSS, sampled
        assert 0 < row["anon_mb_median"] < row["rss_mb_median"], row   # smaps_rollup split
        assert row["threads_max"] > 1 and row["load_avg_1min_mean"] is not None, row
        assert row["tasks_sent"] >= 20, row               # 10 Hz over 3 s
        assert row["frames_received"] is not None, row   # read from /diagnostics
    answered = [r for r in res["intervals"] if r["tasks_answered"]]
    assert answered and all(r["selection_p95_ms"] > 0 for r in answered)
    assert all(0 < r["selection_cpu_p95_ms"] for r in answered)       # the node's cpu stage
    for name in ("rss_growth_mb", "selection_p95_drift"):
        assert isinstance(res["targets"][name]["value"], float), res["targets"]
    assert res["machine"]["cores"] and res["machine"]["cpu"]

    md = (tmp_path / "soak.md").read_text()
    assert "RSS growth first -> last interval" in md
    assert "p95 selection latency drift" in md
    assert ("PASS: soak overall" in md) != ("FAIL: soak overall" in md)
