"""int8 static quantization of the float EfficientNet part of a model directory's vision.onnx.

    python training/quantize_vision.py --model-dir models/default        # upgrade in place
    python training/export.py ... --int8-vision                          # or at export time

What it does (onnxruntime.quantization, nothing hand-rolled):
1. The vision graph is read with its packed ternary pooling projection put back in as a plain
   int8 initializer (the graph normally points at `bitgen-packed/<layer>.t2`, see export.py),
   then `quant_pre_process` folds the exporter's dynamic "same"-padding arithmetic (Shape,
   Slice, ScatterND, Pad: ~800 nodes) into constant Conv pads. The batch axis stays dynamic.
2. `quantize_static`, QDQ format, on the convolution trunk only: every node reachable from the
   image input through Conv / Clip (ReLU6) / Add (residual). The token pooler after it (pooling
   matrix, RMSNorm, int8 absmax activations, ternary MatMulInteger) is left exactly as exported.
   Weights int8 per output channel with `reduce_range` (7 bits): this CPU is AVX2 without VNNI,
   where onnxruntime's u8 x s8 kernels add pairs of products in int16 with saturation (255 x 127
   x 2 > 32767); with 7-bit weights a pair cannot saturate. Measured on models/default
   (scripts/vision_quant_ablation.py, pooled-feature relative error, mean/max over 100 renders):
   7-bit 0.149/0.200 through the real kernels and 0.149/0.208 emulated (Q/DQ as float ops);
   8-bit weights on the convolutions fed by ReLU6 outputs 0.106/0.136 emulated but 0.141/0.257
   through the real kernels, i.e. they saturate. Activations uint8 per tensor, MinMax calibrated.
   The first FLOAT_CONVS convolutions (the 112x112 stem and blocks 0-1 of EfficientNet-Lite0)
   stay float: quantizing the stem alone costs more token accuracy than all of blocks 2-15
   together (held-out renders, scripts/vision_quant_ablation.py), and keeping them float costs
   no measurable speed.
3. Calibration images are this repo's own procedural scenes (bitgen_core.data.render), drawn
   from a seeded generator below DEV_SEED_BASE, so never a dev-set image, and passed through
   the same `preprocess` as at run time.
4. The pooling projection is pointed back at its packed file, config.json records what was done
   (`vision.quantization`), and the manifest is rewritten with the same model_id.

The upgrade refuses a directory that fails verification, whose vision graph is already
quantized, or that has no float convolutions (the ternary student encoder).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):   # `python training/quantize_vision.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from bitgen_core.errors import BitGenError  # noqa: E402
from bitgen_core.runtime.manifest import PACKED_PREFIX, decode_t2, read_manifest, write_manifest  # noqa: E402
from training.export import point_at_packed  # noqa: E402

CALIBRATION_IMAGES = 64
CALIBRATION_SEED = 20261125
HELDOUT_SEED = 7_000_001          # held-out check scenes: a different seed stream
TRUNK_OPS = ("Conv", "Clip", "Add", "Relu")
FLOAT_CONVS = 6        # leading convolutions kept in float: see the module docstring, step 2
METHOD = "onnxruntime-static-qdq-int8"


# ----------------------------------------------------------------------------- calibration data
def scene_images(n: int, seed: int, size: int, mean, std) -> list[np.ndarray]:
    """`n` rendered scenes (families in turn, scene seeds from `seed`), preprocessed to
    float32 [3, size, size] exactly as the runtime does."""
    from bitgen_core.data.render import DEV_SEED_BASE, FAMILIES, render_scene
    from bitgen_core.image_preprocess import preprocess

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        scene_seed = int(rng.integers(0, DEV_SEED_BASE))       # never a dev-set scene seed
        img = render_scene(FAMILIES[i % len(FAMILIES)], scene_seed).image
        out.append(preprocess(img, size, tuple(mean), tuple(std)))
    return out


# ----------------------------------------------------------------------------- graph surgery
def _packed_initializers(proto: onnx.ModelProto) -> dict[str, str]:
    """initializer name -> packed layer, for every initializer pointing at a .t2 file."""
    out = {}
    for init in proto.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            loc = {e.key: e.value for e in init.external_data}.get("location", "")
            if not loc.startswith(PACKED_PREFIX) or not loc.endswith(".t2"):
                raise BitGenError(f"vision graph initializer {init.name} has external data at {loc!r}, "
                                  "not a packed ternary file")
            out[init.name] = loc[len(PACKED_PREFIX):-3]
    return out


def inline_packed(proto: onnx.ModelProto, model_dir: Path) -> dict[str, str]:
    """Replace the graph's references to packed ternary files by the int8 arrays themselves
    (transposed, as the runtime hands them in); returns initializer -> layer."""
    packed = _packed_initializers(proto)
    for init in proto.graph.initializer:
        if init.name in packed:
            q, _ = decode_t2((model_dir / "weights" / f"{packed[init.name]}.t2").read_bytes(),
                             f"weights/{packed[init.name]}.t2")
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(q.T), init.name))
    return packed


def externalize_packed(proto: onnx.ModelProto, packed: dict[str, str], model_dir: Path) -> None:
    """Point the initializers back at their packed files, after checking they still hold the
    same codes (the quantizer must not have touched the ternary projection)."""
    seen = set()
    for init in proto.graph.initializer:
        if init.name not in packed:
            continue
        layer = packed[init.name]
        q, _ = decode_t2((model_dir / "weights" / f"{layer}.t2").read_bytes(), f"weights/{layer}.t2")
        if not np.array_equal(numpy_helper.to_array(init), np.ascontiguousarray(q.T)):
            raise BitGenError(f"quantized vision graph changed the ternary weights of {layer}")
        point_at_packed(init, layer)
        seen.add(init.name)
    missing = set(packed) - seen
    if missing:
        raise BitGenError(f"quantized vision graph lost the packed initializers {sorted(missing)}")


def conv_trunk(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes reachable from the graph input through TRUNK_OPS only, in graph order: the float
    convolution network, without the token pooler behind it."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    frontier = [i.name for i in proto.graph.input]
    trunk: set[int] = set()
    while frontier:
        tensor = frontier.pop()
        for node in consumers.get(tensor, ()):
            if node.op_type in TRUNK_OPS and id(node) not in trunk:
                trunk.add(id(node))
                frontier.extend(node.output)
    return [n for n in proto.graph.node if id(n) in trunk]


def quantize_vision_graph(float_path: Path, out_path: Path, images: list[np.ndarray],
                          float_convs: int = FLOAT_CONVS, eight_bit_after_relu6: bool = False) -> dict:
    """Static int8 QDQ of the conv trunk of the self-contained graph at `float_path` (packed
    weights already inlined) -> `out_path`. Returns what was done, for config.json.

    `eight_bit_after_relu6`: full 8-bit weights for the convolutions whose input is a ReLU6
    output (depthwise, projection); off by default because they saturate on AVX2 without VNNI
    (module docstring, step 2), meant for CPUs whose int8 kernels do not."""
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, create_calibrator, quantize_static,
                                          save_tensors_data)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    work = Path(tempfile.mkdtemp(prefix="bitgen-qv-"))
    try:
        pre = work / "pre.onnx"
        quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=False)
        proto = onnx.load(str(pre))
        trunk = conv_trunk(proto)
        for i, node in enumerate(trunk):     # the quantizer addresses nodes by name
            if not node.name:
                node.name = f"bitgen_trunk_{i}"
        convs = [n for n in trunk if n.op_type == "Conv"]
        if not convs:
            raise BitGenError("the vision graph has no float convolution trunk to quantize "
                              "(a ternary student encoder is already integer)")
        # every trunk node before the first quantized convolution stays float (graph order is
        # topological; EfficientNet's trunk is a chain of blocks)
        first_q = len(trunk) if float_convs >= len(convs) else trunk.index(convs[max(0, float_convs)])
        keep_float = {n.name for n in trunk[:first_q]}
        producer = {o: n for n in trunk for o in n.output}
        eight_bit = [n for n in convs if eight_bit_after_relu6 and n.name not in keep_float
                     and getattr(producer.get(n.input[0]), "op_type", None) == "Clip"]
        overrides = {n.input[1]: [{"axis": 0, "reduce_range": False}] for n in eight_bit}
        onnx.save(proto, str(pre))
        feeds = [{proto.graph.input[0].name: x[None]} for x in images]

        class Reader(CalibrationDataReader):
            def __init__(self):
                self._it = iter(feeds)

            def get_next(self):
                return next(self._it, None)

        # Calibration by onnxruntime's own MinMax calibrator, but on one thread: its default
        # session would take every core of a machine shared with other jobs.
        calibrator = create_calibrator(pre, list(TRUNK_OPS), augmented_model_path=str(work / "aug.onnx"),
                                       calibrate_method=CalibrationMethod.MinMax)
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        calibrator.infer_session = ort.InferenceSession(calibrator.augmented_model_path, so,
                                                        providers=["CPUExecutionProvider"])
        calibrator.collect_data(Reader())
        ranges = work / "ranges.json"
        save_tensors_data(calibrator.compute_data(), ranges)
        del calibrator
        quantize_static(str(pre), str(out_path), None, quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        op_types_to_quantize=list(TRUNK_OPS),
                        nodes_to_quantize=[n.name for n in trunk if n.name not in keep_float],
                        nodes_to_exclude=sorted(keep_float), calibration_cache_path=ranges,
                        extra_options={"TensorQuantOverrides": overrides} if overrides else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"method": METHOD, "format": "QDQ", "weights": "int8 per output channel, 7-bit (reduce_range)",
            "activations": "uint8 per tensor, MinMax", "quantized_convs": len(convs) - min(len(convs), max(0, float_convs)),
            "float_convs": [n.name for n in convs[:max(0, float_convs)]],
            "eight_bit_weight_convs": len(eight_bit)}


# ----------------------------------------------------------------------------- model directories
def quantize_directory(model_dir: str | os.PathLike, n_images: int = CALIBRATION_IMAGES,
                       seed: int = CALIBRATION_SEED, float_convs: int = FLOAT_CONVS,
                       verify: bool = True) -> dict:
    """Quantize the vision graph of the model directory in place; returns the new manifest.

    The directory is verified first (sizes, sha256, every graph loads), the new vision.onnx and
    config.json are written beside the old ones and renamed over them, then the manifest is
    rewritten with the same model_id; `verify` loads the result with the runtime's loader."""
    import onnxruntime as ort

    from bitgen_core.runtime.manifest import verify_model_dir

    d = Path(model_dir)
    verify_model_dir(d, load_graphs=False)
    manifest = read_manifest(d)
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    vision, graph = config.get("vision"), config.get("graphs", {}).get("vision")
    if not vision or not graph:
        raise BitGenError(f"{d} has no vision graph to quantize")
    if vision.get("quantization"):
        raise BitGenError(f"{d}/{graph['file']} is already quantized "
                          f"({vision['quantization'].get('method')}); nothing to do")
    src = d / graph["file"]
    work = Path(tempfile.mkdtemp(prefix=".quantize-vision-", dir=d))
    try:
        proto = onnx.load(str(src), load_external_data=False)
        packed = inline_packed(proto, d)
        full = work / "float.onnx"
        onnx.save(proto, str(full))
        t0 = time.perf_counter()
        images = scene_images(n_images, seed, int(vision["image_size"]), vision["mean"], vision["std"])
        qpath = work / "int8.onnx"
        info = quantize_vision_graph(full, qpath, images, float_convs)
        q = onnx.load(str(qpath))
        externalize_packed(q, packed, d)
        for node in q.graph.node:
            node.doc_string = ""
        names = {t["initializer"] for t in graph["ternary"]}
        if names - {i.name for i in q.graph.initializer}:
            raise BitGenError("quantized vision graph lost a ternary initializer named in config.json")
        new_graph = work / "vision.onnx"
        onnx.save(q, str(new_graph))
        info.update({"calibration": {"source": "bitgen_core.data.render scenes (never dev seeds)",
                                     "images": int(n_images), "seed": int(seed)},
                     "float_sha256": manifest["files"][graph["file"]]["sha256"],
                     "onnxruntime": ort.__version__, "onnx": onnx.__version__,
                     "seconds": round(time.perf_counter() - t0, 1)})
        vision["quantization"] = info
        new_config = work / "config.json"
        new_config.write_text(json.dumps(config, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(new_graph, src)
        os.replace(new_config, d / "config.json")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = write_manifest(d, manifest["model_id"], only=manifest["files"])   # same file list
    if verify:
        verify_model_dir(d, load_graphs=True)
    return out


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="quantize_vision", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", required=True, help="exported model directory, upgraded in place")
    ap.add_argument("--images", type=int, default=CALIBRATION_IMAGES, help="calibration scenes")
    ap.add_argument("--seed", type=int, default=CALIBRATION_SEED, help="calibration scene seed")
    ap.add_argument("--float-convs", type=int, default=FLOAT_CONVS,
                    help="leading convolutions (and the activations between them) kept in float")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        manifest = quantize_directory(args.model_dir, args.images, args.seed, args.float_convs)
    except BitGenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    f = manifest["files"]["vision.onnx"] if "vision.onnx" in manifest["files"] else None
    size = f" (vision.onnx {f['bytes'] / 1e6:.1f} MB)" if f else ""
    print(f"quantized the vision graph of {manifest['model_id']} in {args.model_dir}{size}; "
          f"manifest rewritten, verify passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
