"""How much the robot probabilities move when the memory read moves by 5e-4 (reports/parity/README.md).

    python reports/parity/read_sensitivity.py runs/stage2/model.pt runs/stage2_v3c/model.pt

For the first 40 dev tasks (torch, empty memory): the read z_read plus seeded noise scaled to a
max of 5e-4 (the size of the torch/runtime read difference on dev-100), then the largest change
of any robot probability. One thread.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bitgen_core.model import BitGenModel  # noqa: E402

torch.set_num_threads(1)
recs = [json.loads(x) for x in Path("data/dev/tasks.jsonl").read_text().splitlines() if x.strip()][:40]
for ckpt in sys.argv[1:]:
    m = BitGenModel.load(ckpt).eval()
    g = torch.Generator().manual_seed(0)
    changes = []
    with torch.no_grad():
        robot_emb = m.robot_embeddings()
        for r in recs:
            ids, mask = m._tokens([r["task"]], m.config.max_task_tokens)
            z_read, _ = m.read_memory(m.memory_key(m.encode_text(ids, mask)), None)
            prompt = torch.tensor([m.prompt_ids(r["task"])])
            p0 = torch.sigmoid(m.select_head(m.prefill(prompt, z_read)[0][:, -1], robot_emb)[0])
            noise = torch.randn(z_read.shape, generator=g)
            p1 = torch.sigmoid(m.select_head(m.prefill(prompt, z_read + noise / noise.abs().max() * 5e-4)[0][:, -1],
                                             robot_emb)[0])
            changes.append(float((p1 - p0).abs().max()))
    c = np.array(changes)
    print(f"{ckpt}: memory_read_norm {m.config.memory_read_norm}; probability change median {np.median(c):.4f}, "
          f"p90 {np.percentile(c, 90):.4f}, max {c.max():.4f}")
