"""A/B of the prompt pass's input RMSNorms in the numpy decoder: a Python dot per row (before) vs
one einsum over the rows (decode_np.NumpyDecoder._prompt_rows, after), in one run, interleaved.

    OMP_NUM_THREADS=1 python reports/bench/ab_norm_rows.py [--model-dir models/default] [--n 40] [--rounds 3]

Prints the median prefill / trace / total ms of `select` (no image) over the first n dev tasks,
each task run with both forms in turn, `rounds` times."""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bitgen_core.runtime import BitGenRuntime  # noqa: E402
from bitgen_core.runtime import decode_np as D  # noqa: E402


def prompt_rows_before(self, x, lin):
    """What the prompt's pass used before: `_rows`, a Python dot per row for the RMS."""
    return self._rows(x, lin)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=str(ROOT / "models" / "default"))
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    rt = BitGenRuntime.load(a.model_dir, threads=1)
    forms = {"before": prompt_rows_before, "after": D.NumpyDecoder._prompt_rows}
    tasks = [json.loads(line)["task"] for line in (ROOT / "data/dev/tasks.jsonl").read_text().splitlines()][:a.n]
    got = {k: {"prefill": [], "trace": [], "total": []} for k in forms}
    same = 0
    for _ in range(a.rounds):
        for t in tasks:
            out = {}
            for name, prompt_rows in forms.items():
                D.NumpyDecoder._prompt_rows = prompt_rows
                s = rt.select(t)
                out[name] = (s.robots[0], s.reasoning)
                for k in got[name]:
                    got[name][k].append(s.latency_ms[k])
            same += out["before"] == out["after"]
    print(f"{rt.model_id}, {a.n} dev tasks x {a.rounds} rounds, load {__import__('os').getloadavg()[0]:.2f}")
    for name in forms:
        print(f"  {name:6s} " + "  ".join(f"{k} {np.median(v):.2f} ms" for k, v in got[name].items()))
    print(f"  same top-1 and trace: {same}/{a.n * a.rounds}")


if __name__ == "__main__":
    main()
