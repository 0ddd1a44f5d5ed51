"""What the camera frame's side costs in the vision encoder (the config's `image_size`).

    OMP_NUM_THREADS=1 python scripts/bench_vision_size.py [--sizes 224 192 160 128] [--runs 60]
        [--out-json reports/vision_size/vision_size.json]

The frozen EfficientNet-Lite0 backbone (the package's ImageNet weights) is exported to ONNX once
per size into a temp directory and run by onnxruntime the way the runtime runs the float
vision graph (every graph optimisation, one intra-op thread, sequential). The sizes take turns,
one call each, so every size sees the same machine; the figure is the median ms per frame and
its ratio to the first size, measured in this run. The token pooling and projection after the
backbone (a (16 x h*w) average and a 1280 -> d ternary matmul) are not included: they cost the
same at every size to within a few microseconds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 192, 160, 128])
    ap.add_argument("--runs", type=int, default=60, help="timed calls per size (after 5 warm-up calls)")
    ap.add_argument("--out-json", type=Path, default=None)
    args = ap.parse_args(argv)

    import numpy as np
    import onnxruntime as ort
    import torch

    from bitgen_core.runtime.sessions import session_options
    from bitgen_core.vision import load_efficientnet_lite0

    torch.set_num_threads(1)
    net = load_efficientnet_lite0(True).eval()

    class Backbone(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.n = n

        def forward(self, x):
            return self.n.extract_features(x)

    sessions, inputs, maps = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            x = torch.from_numpy(np.random.default_rng(size).standard_normal((1, 3, size, size), np.float32))
            path = Path(tmp) / f"lite0_{size}.onnx"
            torch.onnx.export(Backbone(net), (x,), str(path), opset_version=17, dynamo=False,
                              input_names=["images"], output_names=["features"])
            sessions[size] = ort.InferenceSession(str(path), session_options(1, exact=False),
                                                  providers=["CPUExecutionProvider"])
            inputs[size] = {"images": x.numpy()}
            maps[size] = list(sessions[size].run(None, inputs[size])[0].shape)
    for _ in range(5):
        for size in args.sizes:
            sessions[size].run(None, inputs[size])
    times = {size: [] for size in args.sizes}
    for _ in range(args.runs):
        for size in args.sizes:
            t = time.perf_counter()
            sessions[size].run(None, inputs[size])
            times[size].append((time.perf_counter() - t) * 1e3)
    base = float(np.median(times[args.sizes[0]]))
    rows = [{"size": s, "feature_map": maps[s], "ms_p50": float(np.median(times[s])),
             "ms_p95": float(np.percentile(times[s], 95)), "ratio_to_first": float(np.median(times[s])) / base}
            for s in args.sizes]
    out = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "load_average": os.getloadavg()[0], "onnxruntime": ort.__version__},
           "runs": args.runs, "sizes": rows}
    print(f"EfficientNet-Lite0 backbone, onnxruntime 1 thread, {args.runs} calls per size, load {out['machine']['load_average']:.2f}")
    for r in rows:
        print(f"  {r['size']:4d} px  map {r['feature_map'][2]}x{r['feature_map'][3]}  "
              f"p50 {r['ms_p50']:6.2f} ms  p95 {r['ms_p95']:6.2f} ms  x{r['ratio_to_first']:.2f}")
    if args.out_json:
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        args.out_json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
