"""Stage 2 under torchrun: two processes, gloo on CPU, gradients averaged, rank 0 writes."""
import json
import os
import re
import socket
import subprocess
import sys

import pytest

from bitgen_core.data.generate import write_corpus
from training.common import REPO

SMOKE = str(REPO / "training" / "configs" / "smoke.yaml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_run_keeps_ranks_in_sync(tmp_path):
    corpus = tmp_path / "corpus"
    write_corpus(corpus, 60, seed=5, images=False, n_memory_cases=2, progress=False)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BITGEN_PROGRESS": "0", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(REPO / "training" / "stage2.py"), "--config", SMOKE,
           f"out={out}", f"data.train=[{corpus}/train.jsonl]", f"data.val={corpus}/val.jsonl",
           f"data.heldout={corpus}/heldout.jsonl", f"data.feature_cache={corpus}/cache",
           "model.vision_options=null", "model.overrides={vision_kind: none}",
           "sft.steps=3", "sft.log_every=3", "sft.eval_every=3", "grpo.steps=1"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=140, cwd=REPO, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    sums = dict(re.findall(r"rank (\d) parameter checksum (\S+)", p.stderr))
    assert set(sums) == {"0", "1"} and sums["0"] == sums["1"], p.stderr[-2000:]
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["step"]) for r in log] == [("sft", 3), ("grpo", 1), ("final", 4)]   # rank 0 only
    assert (out / "model.pt").exists() and (out / "state.pt").exists()
