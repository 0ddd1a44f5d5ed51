"""Give an exported model directory the parameters of the runtime's numpy prefill, in place.

    python training/add_numpy_prefill.py --model-dir DIR

Exports made before the numpy prefill (decode_np.NumpyDecoder.prefill) lack `memory_prefix.npz`
(memory_pos and memory_prefix_proj's float parameters); the runtime then keeps a session for
prefill.onnx (about 3.5 MB RSS). Those parameters are in prefill.onnx already, as float
initializers ("m.memory_pos", "m.memory_prefix_proj.norm.weight", "m.memory_prefix_proj.bias"),
so no checkpoint is needed: this copies them into memory_prefix.npz, names the file in
config.json, and rewrites the manifest over the same files plus the new one. The model id stays
(the weights did not change; a fresh export writes the same file). Deterministic; the files are
replaced atomically, and a directory that already has the file is left alone.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from bitgen_core.errors import BitGenError  # noqa: E402
from bitgen_core.runtime.manifest import read_manifest, write_manifest  # noqa: E402
from bitgen_core.store import atomic_write_bytes  # noqa: E402
from training.export import MEMORY_PREFIX_FILE  # noqa: E402

_PARAMETERS = ("memory_pos", "memory_prefix_proj.norm.weight", "memory_prefix_proj.bias")


def prefix_parameters(prefill_onnx: Path) -> dict[str, np.ndarray]:
    """The memory-prefix float initializers of a prefill graph, by parameter name."""
    proto = onnx.load(str(prefill_onnx), load_external_data=False)
    out = {}
    for init in proto.graph.initializer:
        name = init.name[2:] if init.name.startswith("m.") else init.name   # the exporter's wrapper prefix
        if name in _PARAMETERS:
            out[name] = numpy_helper.to_array(init).astype(np.float32)
    if "memory_pos" not in out:
        raise BitGenError(f"{prefill_onnx} has no memory_pos initializer; re-export the model instead")
    return out


def add_numpy_prefill(model_dir: str | os.PathLike) -> dict:
    d = Path(model_dir)
    manifest = read_manifest(d)
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    spec = config.get("decode_numpy")
    if not spec:
        raise BitGenError(f"{d} predates the numpy decode step; re-export the model instead")
    if spec.get("prefill_file") in manifest["files"]:
        return manifest                                          # already there
    params = prefix_parameters(d / config["graphs"]["prefill"]["file"])
    buf = io.BytesIO()
    np.savez(buf, **params)
    atomic_write_bytes(d / MEMORY_PREFIX_FILE, buf.getvalue())
    spec["prefill_file"] = MEMORY_PREFIX_FILE
    atomic_write_bytes(d / "config.json", (json.dumps(config, indent=1, sort_keys=True) + "\n").encode("utf-8"))
    return write_manifest(d, manifest["model_id"], only=list(manifest["files"]) + [MEMORY_PREFIX_FILE])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="add_numpy_prefill", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", required=True, help="exported model directory, upgraded in place")
    args = ap.parse_args(argv)
    try:
        manifest = add_numpy_prefill(args.model_dir)
    except BitGenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{manifest['model_id']} in {args.model_dir}: {MEMORY_PREFIX_FILE} present, manifest rewritten "
          f"({len(manifest['files'])} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
