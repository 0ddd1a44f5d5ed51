"""Why training/quantize_vision.py keeps its defaults: the choices it makes, measured.

    OMP_NUM_THREADS=1 python scripts/vision_quant_ablation.py --float-dir FLOAT_MODEL_DIR

For each variant the float vision graph of FLOAT_MODEL_DIR is quantized with
`quantize_vision_graph` (the seeded 64-scene calibration) and compared with float on
--heldout rendered scenes (the held-out seed stream, never dev seeds):
  float_convs = 0, 1, 3, 6, 9     leading convolutions kept in float
  eight_bit_after_relu6           8-bit instead of 7-bit weights where the input is a ReLU6
                                  output, through the real kernels and emulated (the QDQ graph
                                  with onnxruntime's optimisations off runs Q/DQ as float ops,
                                  so no integer kernel and no saturation is involved)
Figures: relative L2 error of the pooled backbone features (the pooler's MatMul output, before
the ternary projection), token cosine, ms per image (1 thread, median of --runs), float ms in
the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from training import quantize_vision as qv  # noqa: E402

ALL, NONE = ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL


def _features_tensor(proto) -> str:
    """The pooler's MatMul output (the graph's only float MatMul): pooled backbone features,
    before RMSNorm and the ternary projection."""
    mm = [n for n in proto.graph.node if n.op_type == "MatMul"]
    if len(mm) != 1:
        raise SystemExit(f"expected one pooling MatMul in the vision graph, found {len(mm)}")
    return mm[0].output[0]


def _session(path: Path, feat: str, level):
    m = onnx.load(str(path))
    m.graph.output.append(onnx.helper.make_tensor_value_info(feat, onnx.TensorProto.FLOAT, None))
    p = path.with_suffix(".feat.onnx")
    onnx.save(m, str(p))
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.graph_optimization_level = level
    return ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])


def _outputs(s, xs):
    outs = [s.run(None, {"images": x[None]}) for x in xs]
    return np.stack([o[0][0] for o in outs]), np.stack([o[1][0] for o in outs])


def _interleaved_ms(a, b, x, runs):
    """Median ms of sessions a and b, one run of each in turn (same machine load)."""
    ta, tb = [], []
    for _ in range(runs):
        t = time.perf_counter()
        a.run(None, {"images": x[None]})
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        b.run(None, {"images": x[None]})
        tb.append(time.perf_counter() - t)
    return float(np.median(ta) * 1e3), float(np.median(tb) * 1e3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--float-dir", required=True)
    ap.add_argument("--heldout", type=int, default=100)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    d = Path(args.float_dir)
    cfg = json.loads((d / "config.json").read_text())
    v = cfg["vision"]
    if v.get("quantization"):
        raise SystemExit(f"{d} is already quantized; pass the float model directory")
    work = Path(tempfile.mkdtemp(prefix="bitgen-vq-ablation-"))
    proto = onnx.load(str(d / cfg["graphs"]["vision"]["file"]), load_external_data=False)
    qv.inline_packed(proto, d)
    full = work / "float.onnx"
    onnx.save(proto, str(full))
    feat = _features_tensor(proto)
    calib = qv.scene_images(qv.CALIBRATION_IMAGES, qv.CALIBRATION_SEED, v["image_size"], v["mean"], v["std"])
    xs = qv.scene_images(args.heldout, qv.HELDOUT_SEED, v["image_size"], v["mean"], v["std"])
    fsess = _session(full, feat, ALL)
    tf, ff = _outputs(fsess, xs)
    n = len(xs)
    rows = {"load_average_start": os.getloadavg()}

    def report(name, path, level):
        qsess = _session(path, feat, level)
        tq, fq = _outputs(qsess, xs)
        rel = np.linalg.norm((fq - ff).reshape(n, -1), axis=1) / np.linalg.norm(ff.reshape(n, -1), axis=1)
        a, b = tf.reshape(n, -1), tq.reshape(n, -1)
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        row = {"feature_rel_err_mean": float(rel.mean()), "feature_rel_err_max": float(rel.max()),
               "token_cos_mean": float(cos.mean()), "token_cos_min": float(cos.min())}
        if level == ALL:      # emulated graphs are for accuracy only
            fms, qms = _interleaved_ms(fsess, qsess, xs[0], args.runs)
            row.update({"ms": qms, "float_ms": fms, "ratio": qms / fms, "load_average": os.getloadavg()})
        rows[name] = row
        print(name, json.dumps(row), flush=True)

    for k in (0, 1, 3, 6, 9):
        out = work / f"fc{k}.onnx"
        qv.quantize_vision_graph(full, out, calib, float_convs=k)
        report(f"float_convs={k}", out, ALL)
    for eight in (False, True):
        out = work / f"e{int(eight)}.onnx"
        qv.quantize_vision_graph(full, out, calib, float_convs=qv.FLOAT_CONVS, eight_bit_after_relu6=eight)
        tag = "8bit_after_relu6" if eight else "7bit_everywhere"
        report(f"{tag}/real_kernels", out, ALL)
        report(f"{tag}/emulated", out, NONE)
    rows["load_average_end"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
