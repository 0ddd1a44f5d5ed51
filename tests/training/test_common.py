"""training/common.start_run: the start stage1/stage2 share (config + overrides, threads, seed)."""
import random

import numpy as np
import torch

from training import common as C


def test_start_run_reads_config_applies_overrides_and_seeds(tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("seed: 3\nthreads: 1\nsft: {steps: 10, lr: 1.0e-3}\n", encoding="utf-8")
    before = torch.get_num_threads()
    try:
        args, cfg, d, seed = C.start_run("test", cfg_file, ["--resume", "sft.steps=4", "data.train=[a, b]"])
        assert args.resume and seed == 3 and not d.on and d.main
        assert cfg["sft"] == {"steps": 4, "lr": 1.0e-3} and cfg["data"]["train"] == ["a", "b"]
        assert torch.get_num_threads() == 1
        draws = (random.random(), float(np.random.rand()), float(torch.rand(())))
        C.start_run("test", cfg_file, [])
        assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == draws
    finally:
        torch.set_num_threads(before)
