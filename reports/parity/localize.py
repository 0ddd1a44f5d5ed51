"""Where the torch model and the exported runtime part on a dev task (reports/parity/README.md).

    python reports/parity/localize.py --checkpoint runs/stage2/model.pt --model-dir models/default dev-100 dev-129

Runs one dev task stage by stage through both and prints the largest difference after each:
the text encoder's pooled state and memory query z, the memory read, the prefill state at
[SEP] (with each side's own read, and with both given the torch read), and the selector
(each side's head on the other side's state). One thread.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bitgen_core.model import BitGenModel  # noqa: E402
from bitgen_core.runtime import BitGenRuntime  # noqa: E402


def runtime_prefill(rt, prompt: list[int], z_read: np.ndarray) -> np.ndarray:
    """The runtime's prefill, as BitGenRuntime._start runs it: the numpy backbone when the
    export carries the memory prefix (82334ca), else prefill.onnx. -> state at [SEP] (1, d)."""
    from bitgen_core.kvcache_np import SinkKVCache
    x = rt._embed[np.array(prompt)]
    z = np.asarray(z_read, np.float32).reshape(-1)
    if getattr(rt, "_np_prefill", False):
        return rt._np_decoder.prefill(x, z, SinkKVCache(rt.config.n_sink, rt.config.window))
    return rt._s["prefill"].run(None, {"x": x[None], "z_read": z[None], **rt._image_feeds(None)})[0]


def diff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64).ravel() - np.asarray(b, np.float64).ravel()).max())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--dev", default="data/dev/tasks.jsonl")
    ap.add_argument("ids", nargs="+")
    a = ap.parse_args()
    torch.set_num_threads(1)
    m = BitGenModel.load(a.checkpoint).eval()
    rt = BitGenRuntime.load(a.model_dir, threads=1)
    recs = {r["id"]: r for r in map(json.loads, Path(a.dev).read_text().splitlines()) if r}
    robot_emb = m.robot_embeddings()
    print(f"{rt.model_id}, prefill by {'numpy' if getattr(rt, '_np_prefill', False) else 'prefill.onnx'}; "
          f"robot embeddings: {diff(robot_emb, rt.robot_embeddings):.2e}")
    for i in a.ids:
        task = recs[i]["task"]
        ids = rt.tokenizer.encode(task, rt.config.max_task_tokens)
        pooled_r, z_r = rt._s["text_encoder"].run(None, {
            "x": rt._embed[np.array([[rt._sink] + ids])],
            "mask": np.array([[0.0] + [1.0] * len(ids)], np.float32)})[:2]
        read_r, _ = rt.memory.read(z_r[0])
        prompt = [rt._sink] + [rt._pad] * rt.config.n_memory_tokens + ids + [rt._sep]
        with torch.no_grad():
            t_ids = torch.tensor([ids])
            ones = torch.ones_like(t_ids)
            pooled_t = m.encode_text(t_ids, ones)
            z_t = m.memory_key(m.memory_features(pooled_t, m.embed(t_ids), ones))   # = memory_encoding
            read_t, _ = m.read_memory(z_t, None)
            p_ids = torch.tensor([m.prompt_ids(task)])
            state_t = m.prefill(p_ids, read_t)[0][:, -1]
            state_t_on_read_r = m.prefill(p_ids, torch.from_numpy(read_r[None].astype(np.float32)))[0][:, -1]
        state_r = runtime_prefill(rt, prompt, read_r)
        state_r_on_read_t = runtime_prefill(rt, prompt, read_t.numpy())
        sel = lambda s: rt._s["selector"].run(["probabilities"], {"state": np.asarray(s, np.float32).reshape(1, -1),
                                                                  "robot_emb": rt.robot_embeddings})[0][0]
        def head_t(s):
            with torch.no_grad():
                x = torch.as_tensor(np.asarray(s, np.float32).reshape(1, -1))
                return torch.sigmoid(m.select_head(x, robot_emb)[0])[0].numpy()
        p_t = head_t(state_t.numpy())
        p_r = sel(state_r)
        print(f"{i}: {task}")
        print(f"  text encoder pooled        {diff(pooled_t, pooled_r):.2e}   (|pooled| max {float(pooled_t.abs().max()):.2f})")
        print(f"  memory query z             {diff(z_t, z_r):.2e}")
        print(f"  memory read (empty memory) {diff(read_t, read_r):.2e}")
        print(f"  prefill state, own reads  {diff(state_t, state_r):.2e}")
        print(f"  prefill state, torch read {diff(state_t, state_r_on_read_t):.2e}")
        print(f"  prefill state, rt read    {diff(state_t_on_read_r, state_r):.2e}")
        print(f"  selector on the same state {diff(head_t(state_r), p_r):.2e}")
        print(f"  probabilities torch   {[round(float(x), 4) for x in p_t]}")
        print(f"  probabilities runtime {[round(float(x), 4) for x in p_r]}  (max diff {diff(p_t, p_r):.4f})")


if __name__ == "__main__":
    main()
