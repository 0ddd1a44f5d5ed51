"""Vision path of a selection, float vs int8, measured in one run (issue 5).

    OMP_NUM_THREADS=1 python scripts/bench_vision.py --float-dir FLOAT_MODEL_DIR [--int8-dir DIR]

Without --int8-dir the int8 directory is made here from a temporary copy of the float one by
the project's own upgrade (training/quantize_vision.py, default settings), so the figures are
of exactly what that command ships. The shipped models/default is int8 after the upgrade; its
float form is in git: `git archive <commit> models/default | tar -x -C /tmp/float` (see the
model card for the commit).

Parts (every figure one thread; ratios are int8 / float from this same run):
  latency   ms per image of the vision session (median of --runs, float and int8 interleaved),
            built the runtime's way (sessions.build_sessions, per-machine optimised-graph cache
            warm), and of `preprocess` on a 640x480 camera frame and on a 224x224 render
  tokens    image tokens of --heldout rendered scenes (a seed stream disjoint from calibration,
            never dev seeds): cosine and max |diff| of int8 vs float
  dev       every dev record with an image (data/dev/tasks.jsonl): top-1 in gold with the image
            (all are image-decides records), top-1 agreement int8 vs float, max |prob diff|;
            plus the dev tasks each paired with --pairs rendered scenes of their environment
            family for a larger agreement sample
  preprocess  where `preprocess` spends its time on a 640x480 frame (Pillow steps, the
            normalising table) and the two-step resize against a one-step one at 640x480,
            1280x720 and 1920x1080 (time, mean pixel difference on rendered scenes)
  rss       fresh process per configuration: RSS added by creating the vision session and by
            running it (psutil), float vs int8, with and without onnxruntime's arena and
            memory pattern
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def _load(model_dir):
    from bitgen_core.runtime.model_files import load_model_files
    from bitgen_core.runtime.sessions import build_sessions
    files = load_model_files(model_dir, threads=1, build_sessions=False)
    others = tuple(n for n in files.config["graphs"] if n != "vision")
    build_sessions(files, 1, skip=others)        # first build fills the graph cache
    sess = build_sessions(files, 1, skip=others)["vision"]
    return files, sess


def _tokens(sess, xs):
    return np.stack([sess.run(None, {"images": x[None]})[0][0] for x in xs])


def part_latency(fdir, qdir, runs):
    from bitgen_core.data.render import DEV_SEED_BASE, render_scene
    from bitgen_core.image_preprocess import preprocess
    _, fs = _load(fdir)
    _, qs = _load(qdir)
    scene = render_scene("road", DEV_SEED_BASE - 17).image
    frame = np.asarray(__import__("PIL.Image", fromlist=["Image"]).fromarray(scene).resize((640, 480)))
    x = preprocess(frame)
    for s in (fs, qs):
        for _ in range(5):
            s.run(None, {"images": x[None]})
    tf, tq, tp, tp224 = [], [], [], []
    for _ in range(runs):
        t = time.perf_counter(); fs.run(None, {"images": x[None]}); tf.append(time.perf_counter() - t)
        t = time.perf_counter(); qs.run(None, {"images": x[None]}); tq.append(time.perf_counter() - t)
        t = time.perf_counter(); preprocess(frame); tp.append(time.perf_counter() - t)
        t = time.perf_counter(); preprocess(scene); tp224.append(time.perf_counter() - t)
    med = lambda v: float(np.median(v) * 1e3)  # noqa: E731
    p95 = lambda v: float(np.percentile(v, 95) * 1e3)  # noqa: E731
    return {"runs": runs, "float_ms": med(tf), "int8_ms": med(tq), "ratio": med(tq) / med(tf),
            "float_p95_ms": p95(tf), "int8_p95_ms": p95(tq),
            "preprocess_640x480_ms": med(tp), "preprocess_224_ms": med(tp224)}


def part_tokens(fdir, qdir, n, seed):
    from training.quantize_vision import scene_images
    files, fs = _load(fdir)
    _, qs = _load(qdir)
    v = files.config["vision"]
    xs = scene_images(n, seed, v["image_size"], v["mean"], v["std"])
    a, b = _tokens(fs, xs), _tokens(qs, xs)
    fa, fb = a.reshape(n, -1), b.reshape(n, -1)
    cos = (fa * fb).sum(1) / np.linalg.norm(fa, axis=1) / np.linalg.norm(fb, axis=1)
    tok_cos = ((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)).ravel()
    # scale of a difference: how far apart the float tokens of two different scenes are
    other = np.roll(fa, 1, axis=0)
    between = (fa * other).sum(1) / np.linalg.norm(fa, axis=1) / np.linalg.norm(other, axis=1)
    # the learned position embedding is added after the image content and dominates the cosine:
    # the relative error of the content part (tokens minus positions) is the honest figure
    import onnx
    from onnx import numpy_helper
    proto = onnx.load(str(Path(fdir) / files.config["graphs"]["vision"]["file"]), load_external_data=False)
    pos = next(numpy_helper.to_array(i) for i in proto.graph.initializer if i.name == "pool.pos")
    ca, cb = (a - pos).reshape(n, -1), (b - pos).reshape(n, -1)
    content = np.linalg.norm(ca - cb, axis=1) / np.linalg.norm(ca, axis=1)
    return {"scenes": n, "seed": seed, "content_rel_err_mean": float(content.mean()),
            "content_rel_err_max": float(content.max()),
            "cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
            "token_cos_min": float(tok_cos.min()), "max_abs_diff": float(np.abs(a - b).max()),
            "mean_abs_diff": float(np.abs(a - b).mean()), "float_abs_max": float(np.abs(a).max()),
            "float_cos_between_scenes_mean": float(between.mean())}


def part_dev(fdir, qdir, dev_path, pairs):
    from bitgen_core.data.render import DEV_SEED_BASE, FAMILIES, render_scene
    from bitgen_core.runtime import BitGenRuntime
    from training.evaluate import load_image
    recs = [json.loads(line) for line in Path(dev_path).read_text().splitlines() if line.strip()]
    rf, rq = BitGenRuntime.load(fdir, threads=1), BitGenRuntime.load(qdir, threads=1)
    key = lambda rt, r: rt.catalog.keys[rt.catalog.index(r)]  # noqa: E731

    def compare(task, image, gold):
        sf = rf.select(task, image=image, top_k=3, max_trace_tokens=0)
        sq = rq.select(task, image=image, top_k=3, max_trace_tokens=0)
        pf = dict(zip(sf.robots, sf.confidences))
        pq = dict(zip(sq.robots, sq.confidences))
        gold = {key(rf, g) for g in gold} if gold is not None else None
        return (sf.robots[0] == sq.robots[0], max(abs(pf[k] - pq[k]) for k in pf),
                None if gold is None else sf.robots[0] in gold, None if gold is None else sq.robots[0] in gold)

    img = [r for r in recs if r.get("image")]
    rows = [compare(r["task"], load_image(Path(dev_path).parent / r["image"]), r["robots"]) for r in img]
    dec = [(row, r) for row, r in zip(rows, img) if r.get("image_decides")]
    out = {"records_with_image": len(img), "image_decides": len(dec),
           "agree": int(sum(r[0] for r in rows)), "max_prob_diff": float(max(r[1] for r in rows)),
           "image_decides_top1_float": float(np.mean([row[2] for row, _ in dec])),
           "image_decides_top1_int8": float(np.mean([row[3] for row, _ in dec])),
           "disagreements": [r["id"] for row, r in zip(rows, img) if not row[0]]}
    # larger sample: every dev task with `pairs` rendered scenes of its own family (dev seeds)
    rng = np.random.default_rng(4242)
    extra = []
    for r in recs:
        fam = r.get("env") if r.get("env") in FAMILIES else FAMILIES[int(rng.integers(len(FAMILIES)))]
        for _ in range(pairs):
            scene = render_scene(fam, DEV_SEED_BASE + 500_000 + int(rng.integers(0, 10**9))).image
            extra.append(compare(r["task"], scene, None))
    out.update({"paired_selections": len(extra), "paired_agree": int(sum(e[0] for e in extra)),
                "paired_max_prob_diff": float(max(e[1] for e in extra)) if extra else None})
    return out


def part_preprocess(runs):
    """Where `preprocess` spends its time on a 640x480 frame, and what the two-step resize
    (box `reduce`, then bilinear: `reducing_gap` = image_preprocess.REDUCING_GAP) saves over
    a one-step bilinear resize at 640x480, 1280x720 and 1920x1080, with the mean pixel
    difference between the two on rendered scenes scaled up to the frame size."""
    from PIL import Image

    from bitgen_core.data.render import DEV_SEED_BASE, FAMILIES, render_scene
    from bitgen_core.image_preprocess import (EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD, REDUCING_GAP,
                                              _normalise_table, preprocess)
    scene = render_scene("road", DEV_SEED_BASE - 17).image
    frame = np.ascontiguousarray(np.asarray(Image.fromarray(scene).resize((640, 480))))
    lut = _normalise_table(EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)
    im = Image.fromarray(frame)
    small = im.resize((224, 224), Image.BILINEAR, reducing_gap=REDUCING_GAP)
    rgb = np.asarray(small)

    def table():
        out = np.empty((3, 224, 224), np.float32)
        for c in range(3):
            np.take(lut[c], rgb[..., c], out=out[c])

    def median_ms(f, n):
        for _ in range(5):
            f()
        ts = []
        for _ in range(n):
            t = time.thread_time()
            f()
            ts.append(time.thread_time() - t)
        return float(np.median(ts) * 1e3)
    steps = {"total": lambda: preprocess(frame), "fromarray": lambda: Image.fromarray(frame),
             "resize": lambda: im.resize((224, 224), Image.BILINEAR, reducing_gap=REDUCING_GAP),
             "asarray": lambda: np.asarray(small), "normalise_table": table}
    out = {f"{name}_ms": median_ms(f, runs) for name, f in steps.items()}
    for w, h in ((640, 480), (1280, 720), (1920, 1080)):
        big = Image.fromarray(frame).resize((w, h), Image.BICUBIC)
        out[f"resize_{w}x{h}_one_step_ms"] = median_ms(lambda: big.resize((224, 224), Image.BILINEAR), runs // 4)
        out[f"resize_{w}x{h}_two_step_ms"] = median_ms(
            lambda: big.resize((224, 224), Image.BILINEAR, reducing_gap=REDUCING_GAP), runs // 4)
        diffs = []
        for fam in FAMILIES:
            sc = Image.fromarray(render_scene(fam, DEV_SEED_BASE - 18).image).resize((w, h), Image.BICUBIC)
            a = np.asarray(sc.resize((224, 224), Image.BILINEAR), np.float64)
            b = np.asarray(sc.resize((224, 224), Image.BILINEAR, reducing_gap=REDUCING_GAP), np.float64)
            diffs.append(np.abs(a - b).mean())
        out[f"resize_{w}x{h}_mean_abs_diff_of_255"] = float(np.mean(diffs))
    return out


_RSS_CHILD = r"""
import json, os, sys
sys.path.insert(0, {repo!r})
import numpy as np, psutil
from bitgen_core.runtime import sessions as S
from bitgen_core.runtime.model_files import load_model_files
arena = {arena}
base = S.session_options
def opts(threads, exact=True):
    so = base(threads, exact)
    if not exact and not arena:
        so.enable_mem_pattern = False
        so.enable_cpu_mem_arena = False
    return so
S.session_options = opts
p = psutil.Process()
files = load_model_files({d!r}, threads=1, build_sessions=False)
others = tuple(n for n in files.config["graphs"] if n != "vision")
x = np.zeros((1, 3, 224, 224), np.float32)
r0 = p.memory_info().rss
sess = S.build_sessions(files, 1, skip=others)["vision"]
r1 = p.memory_info().rss
for _ in range(20):
    sess.run(None, {{"images": x}})
r2 = p.memory_info().rss
print(json.dumps({{"before": r0, "session": r1 - r0, "after_runs": r2 - r0, "peak": p.memory_info().rss}}))
"""


def part_rss(fdir, qdir):
    out = {}
    for name, d in (("float", fdir), ("int8", qdir)):
        for arena in (True, False):
            code = _RSS_CHILD.format(repo=str(REPO), d=str(d), arena=arena)
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)   # warm cache
            res = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                            text=True).stdout.strip().splitlines()[-1])
            out[f"{name}_{'arena' if arena else 'noarena'}"] = {k: round(v / 2**20, 1) for k, v in res.items()}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--float-dir", required=True, help="model directory with the float vision graph")
    ap.add_argument("--int8-dir", help="quantized directory (default: made here from --float-dir)")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--heldout", type=int, default=200)
    ap.add_argument("--heldout-seed", type=int, default=None)
    ap.add_argument("--pairs", type=int, default=2, help="rendered scenes per dev task (agreement sample)")
    ap.add_argument("--dev", default=str(REPO / "data" / "dev" / "tasks.jsonl"))
    ap.add_argument("--parts", default="latency,preprocess,tokens,dev,rss")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args(argv)
    from training.quantize_vision import HELDOUT_SEED, quantize_directory
    os.environ.setdefault("BITGEN_CACHE", tempfile.mkdtemp(prefix="bitgen-bench-vision-cache-"))
    tmp = None
    qdir = args.int8_dir
    if qdir is None:
        tmp = Path(tempfile.mkdtemp(prefix="bitgen-bench-vision-"))
        qdir = tmp / "int8"
        shutil.copytree(args.float_dir, qdir)
        t = time.perf_counter()
        quantize_directory(qdir)
        print(f"quantized a copy of {args.float_dir} in {time.perf_counter() - t:.1f} s", flush=True)
    res = {"load_average_start": os.getloadavg(), "float_dir": str(args.float_dir), "int8_dir": str(qdir)}
    try:
        for part in args.parts.split(","):
            t = time.perf_counter()
            if part == "latency":
                res[part] = part_latency(args.float_dir, qdir, args.runs)
            elif part == "tokens":
                res[part] = part_tokens(args.float_dir, qdir, args.heldout,
                                        args.heldout_seed if args.heldout_seed is not None else HELDOUT_SEED)
            elif part == "dev":
                res[part] = part_dev(args.float_dir, qdir, args.dev, args.pairs)
            elif part == "preprocess":
                res[part] = part_preprocess(max(args.runs, 100))
            elif part == "rss":
                res[part] = part_rss(args.float_dir, qdir)
            else:
                raise SystemExit(f"unknown part {part}")
            res[part]["seconds"] = round(time.perf_counter() - t, 1)
            res[part]["load_average"] = os.getloadavg()
            print(part, json.dumps(res[part]), flush=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
