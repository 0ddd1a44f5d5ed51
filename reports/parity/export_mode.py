"""Parity against the torch model's integer forward (quant.set_export_mode), for comparison.

    python reports/parity/export_mode.py --checkpoint runs/stage2/model.pt --model-dir models/default [--n 1000]

`training/parity.py` compares the runtime with the torch model's default forward, the
fake-quant form BitLinear trains with: F.linear over x + (codes*scale - x) and codes*gamma,
float sums of non-integer values. Export mode is the same module computing the BitNet math
the runtime does: int8 codes times ternary codes summed exactly, then one rescale. This runs
parity.py's inputs and `measure` with the model in export mode (robot embeddings, as
`select` computes them, in export mode too) and prints the same figures. Information only:
the bar of issue 5 is parity.py's.
"""
import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bitgen_core.model import BitGenModel  # noqa: E402
from bitgen_core.quant import set_export_mode  # noqa: E402
from bitgen_core.runtime import BitGenRuntime  # noqa: E402
from training.parity import load_inputs, measure  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--n", type=int, default=1000)
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = BitGenModel.load(a.checkpoint).eval()
    set_export_mode(model, True)
    rt = BitGenRuntime.load(a.model_dir, threads=1)
    r = measure(model, rt, load_inputs(ROOT / "data/dev/tasks.jsonl", ROOT / "data/dev/memory_cases.jsonl", a.n))
    print(f"{rt.model_id}, torch in export mode: {r['n']} inputs, same top-1 {r['top1_agreement']:.4f}, "
          f"max {r['max_prob_diff']:.5f}, p99 {r['p99_prob_diff']:.5f}, median {r['median_prob_diff']:.6f}")
    for w in r["worst"][:3]:
        print("  ", w)


if __name__ == "__main__":
    main()
