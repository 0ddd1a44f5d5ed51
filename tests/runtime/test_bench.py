"""`bitgen bench` smoke run: every section is measured and reported (small counts: this proves
the harness, the figures themselves come from a real `bitgen bench` run)."""
from __future__ import annotations

import argparse
import json

from bitgen_core import bench


def test_bench_reports_every_target_with_the_machine(exported, tmp_path):
    args = argparse.Namespace(model=str(exported.directory), threads=1, checkpoint=str(exported.checkpoint),
                              out_json=str(tmp_path / "b.json"), out_md=str(tmp_path / "b.md"),
                              iterations=3, rss_selections=5, stream_tokens=110, quick=False)
    assert bench.main(args) == 0
    r = json.loads((tmp_path / "b.json").read_text())
    assert r["model_id"] == "test-nano"
    assert {"cpu", "cores", "avx2", "vnni", "onnxruntime"} <= set(r["machine"])
    assert set(r["select"]) == {"1", "2"} and r["select"]["1"]["p50_ms"] > 0
    assert 0 < r["select"]["1"]["cpu_p50_ms"] <= r["select"]["1"]["cpu_p95_ms"]
    # the same-run baseline: free trace decoding, selection by selection with the grammar's
    base = r["select"]["1"]["baseline"]
    assert base["iterations"] == 3 and base["p50_ms"] > 0 and "trace" in base["parts_p50_ms"]
    assert r["rss"]["selections"] == 5 and r["rss"]["torch_imported"] is False
    point = r["stream"]["sink"]["points"]["100"]
    assert point["ms_per_token"] > 0 and point["wall_ms_per_token"] > 0
    assert r["stream"]["full"]["full_cache"] is True
    split = r["trace"]["per_token_ms"]
    assert split["head"] > 0 and split["step"] > 0 and split["backend"] == "numpy"
    assert split["head_isolated"] > 0 and split["step_isolated"] > 0
    trace = r["trace"]
    assert trace["runs"] == 3 and trace["tokens"] > 0
    # CPU time never exceeds the wall clock of the same single-threaded stream
    assert trace["cpu_tokens_per_s"] >= trace["tokens_per_s"] * 0.99
    assert r["torch"]["p50_ms"] > 0 and r["torch"]["fixed_p50_ms"] > 0 and r["torch"]["weights"] == "checkpoint"
    assert r["fixed"]["p50_ms"] > 0
    speed = next(t for t in r["targets"] if t[0].startswith(">= 5x faster"))
    assert "on the same work" in speed[2] and "select as called" in speed[2]
    assert r["bytes"]["packed_over_fp32"] < 1 / 8
    names = [t[0] for t in r["targets"]]
    assert len(names) == 10 and all(t[1] in (True, False) for t in r["targets"])
    md = (tmp_path / "b.md").read_text()
    assert "| target | result | figure |" in md and "AVX2" in md and "output head / decode step" in md
    assert "tokens/s of CPU time" in md


def test_peak_rss_of_the_child_is_its_own_not_the_parents(exported):
    ballast = bytearray(400 * 2**20)        # the parent holds 400 MB, touched, while it forks
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    r = bench._run_child("rss", "--model", str(exported.directory), "--n", "2")
    del ballast
    assert "error" not in r, r
    assert r["rss_after_load_mb"] <= r["peak_rss_mb"] < 400


def test_torch_comparison_without_a_checkpoint_uses_the_directorys_architecture(exported):
    """No checkpoint: the torch side is the model directory's own architecture (config,
    catalog, tokenizer) with random weights, timed on the same fixed work."""
    r = bench._run_child("torch", "--model", str(exported.directory), "--n", "2")
    assert "error" not in r, r
    assert r["fixed_p50_ms"] > 0 and "random weights" in r["weights"]
    assert "p50_ms" not in r      # `select as called` needs the trained weights
