"""Where the torch model and the exported runtime part on a task with a memory fact stored.

    python reports/parity/localize_memory.py --checkpoint runs/rank/stage2/sft_last.pt \
        --model-dir models/default --fact "Gale-force winds are hitting the wind farm." \
        --task "Check turbine 7's blades at the wind farm."

Prints the largest difference after each stage: the fact's and the task's memory encoding z
(and the task's pooled text state), the memory read with the fact stored, the prefill state at
[SEP] (each side's own read, and each side given the other's read), and the probabilities.
One thread. `localize.py` does the same for dev tasks with an empty memory.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from localize import diff, runtime_prefill  # noqa: E402

from bitgen_core.model import BitGenModel  # noqa: E402
from bitgen_core.runtime import BitGenRuntime  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--fact", required=True)
    ap.add_argument("--task", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    m = BitGenModel.load(a.checkpoint).eval()
    rt = BitGenRuntime.load(a.model_dir, threads=1)
    mem = m.new_memory()
    m.write_fact(mem, "fact", a.fact)
    assert rt.memory.write("fact", a.fact).success
    enc = lambda text: rt.tokenizer.encode(text, rt.config.max_task_tokens)  # noqa: E731
    ids, fids = enc(a.task), enc(a.fact)
    feeds = {"x": rt._embed[np.array([[rt._sink] + ids])], "mask": np.array([[0.0] + [1.0] * len(ids)], np.float32)}
    pooled_r, z_r = rt._s["text_encoder"].run(None, feeds)[:2]
    read_r, _ = rt.memory.read(z_r[0], ids)
    prompt = [rt._sink] + [rt._pad] * rt.config.n_memory_tokens + ids + [rt._sep]
    with torch.no_grad():
        t_ids = torch.tensor([ids])
        ones = torch.ones_like(t_ids)
        pooled_t = m.encode_text(t_ids, ones)
        z_t = m.memory_encoding(t_ids, ones)
        zf_t = m.memory_encoding(torch.tensor([fids]), torch.ones(1, len(fids), dtype=torch.long))
        read_t, _ = m.read_memory(z_t, mem, [ids])
        p_ids = torch.tensor([m.prompt_ids(a.task)])
        state_t = m.prefill(p_ids, read_t)[0][:, -1]
        state_t_on_r = m.prefill(p_ids, torch.from_numpy(read_r[None]))[0][:, -1]
        robot_emb = m.robot_embeddings()
        p_t = torch.sigmoid(m.select_head(state_t, robot_emb)[0])[0].numpy()
    state_r = runtime_prefill(rt, prompt, read_r)
    state_r_on_t = runtime_prefill(rt, prompt, read_t.numpy())
    p_r = rt._s["selector"].run(["probabilities"], {"state": np.asarray(state_r, np.float32).reshape(1, -1),
                                                    "robot_emb": rt.robot_embeddings})[0][0]
    print(f"{rt.model_id}; fact {a.fact!r}; task {a.task!r}")
    print(f"  fact z                    {diff(zf_t, rt._encode_ids(fids)):.2e}")
    print(f"  task pooled text state    {diff(pooled_t, pooled_r):.2e}   (|pooled| max {float(pooled_t.abs().max()):.2f})")
    print(f"  task z                    {diff(z_t, z_r):.2e}   (|z| max {float(z_t.abs().max()):.2f})")
    print(f"  memory read, fact stored  {diff(read_t, read_r):.2e}")
    print(f"  prefill state, own reads  {diff(state_t, state_r):.2e}")
    print(f"  prefill state, torch read {diff(state_t, state_r_on_t):.2e}")
    print(f"  prefill state, rt read    {diff(state_t_on_r, state_r):.2e}")
    print(f"  probabilities torch   {[round(float(x), 4) for x in p_t]}")
    print(f"  probabilities runtime {[round(float(x), 4) for x in p_r]}  (max diff {diff(p_t, p_r):.4f})")


if __name__ == "__main__":
    main()
