"""A/B of two per-token micro-costs of the free trace stream, in one process, interleaved:
`np.abs(x).max()` (the ndarray.max wrapper) vs `np.maximum.reduce(np.abs(x))` in
NumpyDecoder._bitlinear, and np.stack vs np.concatenate of the re-scored head rows in
TableRows.__getitem__. "before" re-creates the old forms; "after" is the code as it is.

    OMP_NUM_THREADS=1 python reports/bench/ab_stream_micro.py [--model-dir models/default] [--rounds 8]

Prints the median tokens/s of 256-token free streams (bench.TASKS[1], as `bitgen bench` runs
them) and whether both forms give the same tokens."""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bitgen_core import bench  # noqa: E402
from bitgen_core.runtime import BitGenRuntime  # noqa: E402
from bitgen_core.runtime import decode_np as D, table_rows as TR  # noqa: E402


def bitlinear_before(self, x, lin):
    if lin.norm is not None:
        x = self._rms(x, lin.norm)
    scale = max(float(np.abs(x).max()), self.act_eps) / 127.0
    y = np.rint(x / scale) @ lin.w
    y *= scale * lin.gamma
    return y if lin.bias is None else y + lin.bias


def getitem_before(self, ids):
    if isinstance(ids, (int, np.integer)):
        return self.row(int(ids))
    idx = np.asarray(ids, dtype=np.int64)
    get, rows = self._rows.get, []
    for i in idx.reshape(-1).tolist():
        r = get(i)
        rows.append(r if r is not None else self.row(i))
    out = np.stack(rows) if rows else np.zeros((0, self.shape[1]), self.dtype)
    return out.reshape(idx.shape + (self.shape[1],))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default=str(ROOT / "models" / "default"))
    ap.add_argument("--rounds", type=int, default=8)
    a = ap.parse_args()
    rt = BitGenRuntime.load(a.model_dir, threads=1)
    forms = {"before": (bitlinear_before, getitem_before),
             "after": (D.NumpyDecoder._bitlinear, TR.TableRows.__getitem__)}
    task = bench.TASKS[1]

    def stream(n):
        return list(rt.trace_stream(task, None, max_new_tokens=n, ignore_eos=True))

    rates, tokens = {k: [] for k in forms}, {}
    for _ in range(a.rounds):
        for name, (bl, get) in forms.items():
            D.NumpyDecoder._bitlinear, TR.TableRows.__getitem__ = bl, get
            t = time.perf_counter()
            n = len(stream(256))
            rates[name].append(n / (time.perf_counter() - t))
            tokens.setdefault(name, stream(64))
    print(f"{rt.model_id}, {a.rounds} rounds of 256-token free streams, load {__import__('os').getloadavg()[0]:.2f}")
    for name, v in rates.items():
        print(f"  {name:6s} {np.median(v):.0f} tokens/s")
    print(f"  same tokens: {tokens['before'] == tokens['after']}")


if __name__ == "__main__":
    main()
