"""Export a trained BitGen checkpoint to the model directory the torch-free runtime loads.

    python training/export.py --checkpoint runs/stage2/model.pt --out models/default

What lands in the directory (format `bitgen-model` version 1, see docs/ARCHITECTURE.md):

    vision.onnx        images (B,3,S,S) -> image_tokens (B,N,d)          (absent for vision_kind none)
    text_encoder.onnx  embedded [SINK] text -> pooled, fact/query z, robot embedding
    prefill.onnx       embedded prompt + memory read + image tokens -> state at [SEP], K, V
    decode.onnx        embedded new token(s) + past K/V (pre-rotary) + image -> state, new K/V
    selector.onnx      state at [SEP] x robot embeddings -> Tiny-R1 reasoning -> probabilities
    weights/*.t2       every BitLinear's ternary codes, 2-bit packed, with its absmean scale
    weights/embed.npy  the (tied) token embedding / output head, float32
    weights/backbone_float.npz  RMSNorm gains, cross-attention gates, final norm: with the
                       packed codes, what the runtime's numpy decode step (decode_np.py) needs
    memory_prefix.npz  memory_pos and memory_prefix_proj's float parameters: with the above,
                       the runtime's numpy prefill (older exports: training/add_numpy_prefill.py)
    robot_embeddings.npy, memory.npz, tokenizer.json, catalog.yaml, config.json, manifest.json

Design choices (measured, see docs and `bitgen bench`):
- The ONNX graphs do BitNet math as `MatMulInteger(int8 activations, int8 {-1,0,1} weights)`
  (quant.set_export_mode), but they do *not* carry those int8 weights: each one is an external
  initializer named `bitgen-packed/<layer>.t2`, and the runtime unpacks the 2-bit files once at
  load and hands the same int8 arrays to every session (`add_external_initializers`). The model
  directory therefore holds each ternary weight once, at 2 bits, and the graphs stay small. A
  graph loaded without the packed weights fails loudly instead of running on garbage.
- The embedding (30522 x d) is the largest tensor and is shared by the text encoder, prefill,
  decode and the tied output head, so it lives once in `weights/embed.npy`: the runtime gathers
  rows in numpy and computes the output head as one matmul, and the graphs take embedded
  tokens as input.
- Robot embeddings for the exported catalog are precomputed; the runtime recomputes them with
  text_encoder.onnx when catalog.yaml changes, so adding a robot needs no re-export.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

if __package__ in (None, ""):   # `python training/export.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnx  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from bitgen_core import ternary  # noqa: E402
from bitgen_core.errors import BitGenError  # noqa: E402
from bitgen_core.quant import (QUANT_EPS, _MatMulInteger, activation_quant_int, bitlinear_layers,  # noqa: E402
                               set_export_mode)
from bitgen_core.runtime.manifest import (MODEL_FORMAT, MODEL_FORMAT_VERSION, PACKED_PREFIX,  # noqa: E402
                                          write_manifest, write_t2)

OPSET = 17
HEAD_CANDIDATES = 16
MEMORY_PREFIX_FILE = "memory_prefix.npz"   # the numpy prefill's float parameters (decode_np.py)


# ----------------------------------------------------------------------------- graph wrappers
class TextEncoderGraph(nn.Module):
    """[SINK] text (embedded) -> mean-pooled state, memory encoding z, robot embedding.

    `model.encode_text` + `memory_key` + `selector.robot_proj`: one graph serves facts, memory
    queries and catalog descriptions. mask is 0 at the [SINK] slot and at right padding."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, x, mask):
        h, _, _ = self.m.backbone(x)
        w = mask.unsqueeze(-1)
        pooled = (h * w).sum(1) / w.sum(1).clamp(min=1.0)
        z = self.m.memory_key(self.m.memory_features(pooled, x, mask))
        return pooled, z, self.m.selector.robot_embeddings(pooled)


class PrefillGraph(nn.Module):
    """Embedded prompt [SINK][M placeholders][task][SEP] + memory read (+ image) ->
    (state at [SEP], K, V (n_layers, B, H, L, hd), keys pre-rotary)."""

    def __init__(self, model, vision: bool):
        super().__init__()
        self.m, self.vision = model, vision

    def forward(self, x, z_read, image_tokens=None, image_mask=None):
        m = self.m.config.n_memory_tokens
        x = torch.cat([x[:, :1], self.m.memory_tokens(z_read), x[:, 1 + m:]], dim=1)
        h, k, v = self.m.backbone(x, image_tokens, image_mask)
        return h[:, -1], k, v


class DecodeGraph(nn.Module):
    """Embedded new token(s) after a cache of L tokens -> (last state, k_new, v_new)."""

    def __init__(self, model, vision: bool):
        super().__init__()
        self.m, self.vision = model, vision

    def forward(self, x, past_k, past_v, image_tokens=None, image_mask=None):
        h, k, v = self.m.backbone(x, image_tokens, image_mask, past_k, past_v)
        return h[:, -1], k, v


class SelectorGraph(nn.Module):
    """State at [SEP] x robot embeddings -> Tiny-R1 (unrolled ACT) -> sigmoid per robot.

    The ACT loop is restated here with the reasoner's own layers because the TorchScript
    tracer cannot record `reasoning.TinyR1Reasoner.forward`'s `tensor | python_bool`; the
    arithmetic is the same (all max_steps steps, halting by masks) and the parity test holds
    the two to the same numbers."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def reason(self, x):
        rs = self.m.reasoner
        b, threshold = x.shape[0], 1.0 - rs.eps
        h = x.new_zeros(b, rs.hidden_size)
        c = x.new_zeros(b, rs.hidden_size)
        cum, steps = x.new_zeros(b), x.new_zeros(b)
        weighted = x.new_zeros(b, rs.hidden_size)
        for n in range(rs.max_steps):
            flag = x.new_full((b, 1), 1.0 if n == 0 else 0.0)
            h, c = rs.cell(torch.cat([x, flag], dim=-1), h, c)
            p = torch.sigmoid(rs.halt(h)).squeeze(-1)
            running = cum < threshold
            halts_here = running & (cum + p >= threshold) if n < rs.max_steps - 1 else running
            w = torch.where(halts_here, 1.0 - cum, torch.where(running, p, torch.zeros_like(p)))
            weighted = weighted + w.unsqueeze(-1) * h
            steps = steps + running.to(x.dtype)
            cum = cum + torch.where(running, p, torch.zeros_like(p))
        return x + rs.out(weighted), steps

    def forward(self, sep_state, robot_emb, fact=None):
        """`fact` (B, C): the facts' part of the memory read, an input only of models with the
        selector's fact term (config memory_robot)."""
        state, steps = self.reason(sep_state)
        logits = self.m.selector(state, robot_emb, fact)
        return torch.sigmoid(logits), logits, steps


class HeadCandidatesGraph(nn.Module):
    """Output-head shortlist: int8 per-row weights x int8 state -> top-k token ids.

    The float32 head (vocab x d, 15.6 MB for d=128) is memory-bound at ~1 ms per token here;
    its int8 copy is 4x smaller and runs through MatMulInteger. The runtime then re-scores the
    k candidates with the exact float32 rows and takes the argmax, so greedy decoding returns
    the float head's choice unless the true best token falls outside an int8 top-k (k=16;
    int8 error is about 1% of a logit)."""

    def __init__(self, weight: torch.Tensor, k: int):
        super().__init__()
        w = weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-8) / 63.0     # 7 bits: see _uint8_activations
        self.register_buffer("w_t", (w / scale[:, None]).round().clamp(-63, 63).to(torch.int8).t().contiguous())
        self.register_buffer("scale", scale)
        self.k = int(k)

    def forward(self, state):
        codes, _ = activation_quant_int(state)    # a positive per-row scale: ranking unchanged
        acc = _MatMulInteger.apply(codes.to(torch.int8), self.w_t)
        return torch.topk(acc.to(torch.float32) * self.scale, self.k, dim=-1).indices


# ----------------------------------------------------------------------------- export helpers
def _onnx_bytes(module: nn.Module, args: tuple, input_names, output_names, dynamic_axes) -> bytes:
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module, args, buf, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False,
                          do_constant_folding=True)
    return buf.getvalue()


def _constants_to_initializers(proto: onnx.ModelProto) -> None:
    """The TorchScript exporter stores folded buffers as Constant nodes; make them initializers
    so the ternary ones can be pointed at their packed files."""
    graph, keep = proto.graph, []
    for node in graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and value is not None and value.t.data_type == onnx.TensorProto.INT8:
            t = onnx.TensorProto()
            t.CopyFrom(value.t)
            t.name = node.output[0]
            graph.initializer.append(t)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def point_at_packed(init, layer: str) -> None:
    """Make an int8 initializer an external reference to the packed weights of `layer`
    (the runtime hands the decoded array in at load, see runtime/sessions.py)."""
    init.ClearField("raw_data")
    init.ClearField("int32_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    del init.external_data[:]
    entry = init.external_data.add()
    entry.key, entry.value = "location", f"{PACKED_PREFIX}{layer}.t2"


def _externalize_ternary(proto: onnx.ModelProto, packed_by_bytes: dict[bytes, list[str]]) -> list[dict]:
    """Point every int8 ternary initializer at its packed file instead of embedding it.

    Initializers are matched to layers by content (their bytes equal the layer's transposed
    codes), which is robust to whatever names the exporter gives them."""
    used = []
    for init in proto.graph.initializer:
        if init.data_type != onnx.TensorProto.INT8 or init.data_location == onnx.TensorProto.EXTERNAL:
            continue
        arr = onnx.numpy_helper.to_array(init)
        layers = packed_by_bytes.get(arr.tobytes() + repr(arr.shape).encode())
        if not layers:
            continue
        layer = layers[0]
        point_at_packed(init, layer)
        used.append({"initializer": init.name, "layer": layer, "shape": list(arr.shape)})
    return used


def _uint8_activations(proto: onnx.ModelProto) -> int:
    """Feed every MatMulInteger uint8 activations with zero point 128 instead of int8.

    Same integers (x_u8 - 128 == x_s8, exact), but onnxruntime's CPU kernels take a fast u8 x s8
    path (measured here: 13 us instead of 906 us for a 1x128 @ 128x704 matmul), while s8 x s8
    falls back to a slow one. The AVX2 u8 x s8 kernel sums pairs of products in int16 with
    saturation; with ternary weights a pair is at most 2 * 255 = 510, so it never saturates
    (the head's int8 weights are kept to 7 bits for the same reason)."""
    graph = proto.graph
    producers = {o: n for n in graph.node for o in n.output}
    zp = onnx.numpy_helper.from_array(np.array(128, dtype=np.uint8), "bitgen_act_zero_point")
    off = onnx.numpy_helper.from_array(np.array(128.0, dtype=np.float32), "bitgen_act_offset")
    graph.initializer.extend([zp, off])
    rewritten, add_before = set(), {}
    for node in graph.node:
        if node.op_type != "MatMulInteger" or len(node.input) != 2:
            continue
        cast = producers.get(node.input[0])
        to = next((a.i for a in cast.attribute if a.name == "to"), None) if cast is not None else None
        if cast is None or cast.op_type != "Cast" or to != onnx.TensorProto.INT8:
            raise BitGenError(f"MatMulInteger {node.name}: activation is not a Cast to int8; "
                              "cannot switch it to uint8")
        if id(cast) not in rewritten:
            shifted = f"{cast.input[0]}_plus128"
            add_before[id(cast)] = onnx.helper.make_node("Add", [cast.input[0], off.name], [shifted])
            cast.input[0] = shifted
            for a in cast.attribute:
                if a.name == "to":
                    a.i = onnx.TensorProto.UINT8
            rewritten.add(id(cast))
        node.input.append(zp.name)
    names = {c.output[0] for c in graph.node if id(c) in rewritten}
    keep = [vi for vi in graph.value_info if vi.name not in names]
    del graph.value_info[:]
    graph.value_info.extend(keep)
    nodes = []
    for n in graph.node:
        if id(n) in add_before:
            nodes.append(add_before[id(n)])
        nodes.append(n)
    del graph.node[:]
    graph.node.extend(nodes)
    return len(rewritten)


def _ensure_all_ternary_external(proto: onnx.ModelProto, name: str) -> None:
    left = [i.name for i in proto.graph.initializer
            if i.data_type == onnx.TensorProto.INT8 and i.data_location != onnx.TensorProto.EXTERNAL
            and int(np.prod(i.dims or [1])) > 1]
    left += [n.output[0] for n in proto.graph.node if n.op_type == "Constant"
             and any(a.name == "value" and a.t.data_type == onnx.TensorProto.INT8 and len(a.t.dims) == 2
                     for a in n.attribute)]
    if left:
        raise BitGenError(f"{name}: int8 initializers not matched to a BitLinear: {left[:3]}")


def export_model(model, out_dir: str | os.PathLike, model_id: str | None = None,
                 overwrite: bool = False, int8_vision: bool = False) -> dict:
    """Write the runtime model directory for `model` (a BitGenModel) and return its manifest.

    `int8_vision`: quantize the float EfficientNet part of vision.onnx to int8 afterwards
    (training/quantize_vision.py, its default seeded calibration), before the directory is
    moved into place.

    The directory is built in a temporary sibling and renamed into place, so an interrupted
    export never leaves a half-written model where the runtime looks for one."""
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise BitGenError(f"{out} exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    was_training = model.training
    try:
        model.eval()
        # the torch model's own robot embeddings, the ones `BitGenModel.select` uses: eval mode
        # and no gradients, so BitLinear's inference form, the integer math export mode and the
        # runtime do (the fake-quant training form puts v4e's 4.8e-3 apart through int8 code
        # flips, ~1e-3 on every selector probability; reports/parity)
        with torch.no_grad():
            robot_emb = model._robot_embeddings(model.catalog).detach().float().numpy()
        set_export_mode(model, True)
        manifest = _write_directory(model, stage, model_id, robot_emb)
        if int8_vision:
            from training.quantize_vision import quantize_directory
            manifest = quantize_directory(stage)
        if out.exists():
            _replace_directory(out, stage)
        else:
            os.replace(stage, out)
        return manifest
    finally:
        set_export_mode(model, False)
        model.train(was_training)
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def _replace_directory(out: Path, stage: Path) -> None:
    """Put the finished export `stage` where the model directory `out` is.

    Files of `out` that the export does not write and its manifest does not list (the model
    card, an operator's notes) are copied into the new directory first: `make model` re-exports
    into models/default, and its MODEL_CARD.md must not vanish with the old weights. The old
    directory is renamed aside before the new one takes its name and removed only afterwards,
    so a crash in between leaves one of the two complete, never neither."""
    try:
        listed = set(json.loads((out / "manifest.json").read_text(encoding="utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        listed = set()
    for f in sorted(out.rglob("*")):
        rel = f.relative_to(out).as_posix()
        if f.is_file() and rel not in listed and not (stage / rel).exists():   # the stage has its manifest
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, stage / rel)
            print(f"kept {rel} from the replaced {out} (not an export file; update it if it "
                  "describes the old model)", file=sys.stderr)
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.replaced-", dir=out.parent))
    os.replace(out, old / out.name)
    os.replace(stage, out)
    shutil.rmtree(old, ignore_errors=True)


def _write_directory(model, d: Path, model_id: str | None, robot_emb: np.ndarray) -> dict:
    cfg, tok = model.config, model.tokenizer
    (d / "weights").mkdir()
    # 1. packed ternary weights, one file per BitLinear
    packed_by_bytes: dict[bytes, list[str]] = {}
    ternary_files = {}
    for name, layer in bitlinear_layers(model):
        q, gamma = layer.ternary_weight()
        q = q.numpy().astype(np.int8)
        path = d / "weights" / f"{name}.t2"
        write_t2(path, q, float(gamma))
        qt = np.ascontiguousarray(q.T)
        packed_by_bytes.setdefault(qt.tobytes() + repr(qt.shape).encode(), []).append(name)
        ternary_files[name] = {"shape": list(q.shape), "gamma": float(gamma)}
    # 2. full-precision embedding (and the output head if it is not tied)
    embed = model.embed.weight.detach().float().numpy()
    np.save(d / "weights" / "embed.npy", embed)
    lm_head_file = "weights/embed.npy"
    if model.lm_head.weight.data_ptr() != model.embed.weight.data_ptr():
        np.save(d / "weights" / "lm_head.npy", model.lm_head.weight.detach().float().numpy())
        lm_head_file = "weights/lm_head.npy"

    # 2b. the backbone's float parameters for the runtime's numpy decode step (decode_np.py):
    # RMSNorm gains, cross-attention gates, the final norm; the ternary codes come from *.t2
    backbone = {k: v.detach().float().numpy() for k, v in model.state_dict().items()
                if (k.startswith("blocks.") and k.endswith(("norm.weight", ".bias", "xattn.gate")))
                or k == "norm.weight"}
    np.savez(d / "weights" / "backbone_float.npz", **backbone)
    # and for its numpy prefill: the memory prefix (memory_pos, memory_prefix_proj's norm
    # and bias), copies of prefill.onnx's float initializers -- outside weights/, like
    # robot_embeddings.npy, so the weights digest (the model id) is what it was before
    prefix = {k: v.detach().float().numpy() for k, v in model.state_dict().items()
              if k == "memory_pos" or (k.startswith("memory_prefix_proj.") and k.endswith(("norm.weight", ".bias")))}
    np.savez(d / MEMORY_PREFIX_FILE, **prefix)

    # 3. graphs
    has_vision = model.vision is not None
    dm, nl, nh, hd = cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.head_dim
    n_img = cfg.n_image_tokens
    img_args, img_names = (), []
    img_axes: dict = {}
    if has_vision:
        img_args = (torch.zeros(1, n_img, dm), torch.ones(1, n_img, dtype=torch.bool))
        img_names = ["image_tokens", "image_mask"]
        img_axes = {"image_tokens": {0: "batch"}, "image_mask": {0: "batch"}}
    graphs = {}

    def add(name, module, args, ins, outs, axes, ternary_graph=True):
        proto = onnx.load_from_string(_onnx_bytes(module, args, ins, outs, axes))
        for node in proto.graph.node:     # tracer stack traces: bytes the runtime never reads
            node.doc_string = ""
        _constants_to_initializers(proto)
        _uint8_activations(proto)
        used = _externalize_ternary(proto, packed_by_bytes) if ternary_graph else []
        if ternary_graph:
            _ensure_all_ternary_external(proto, name)
        onnx.save(proto, str(d / f"{name}.onnx"))
        graphs[name] = {"file": f"{name}.onnx", "inputs": ins, "outputs": outs, "ternary": used}

    if has_vision:
        size = model.vision.image_size
        add("vision", model.vision, (torch.zeros(1, 3, size, size),), ["images"], ["image_tokens"],
            {"images": {0: "batch"}, "image_tokens": {0: "batch"}})
    x3 = torch.zeros(2, 6, dm)
    add("text_encoder", TextEncoderGraph(model), (x3, torch.ones(2, 6)), ["x", "mask"],
        ["pooled", "z", "robot_emb"],
        {"x": {0: "batch", 1: "tokens"}, "mask": {0: "batch", 1: "tokens"}, "pooled": {0: "batch"},
         "z": {0: "batch"}, "robot_emb": {0: "batch"}})
    lp = cfg.prefix_len + 4
    kv_axes = {1: "batch", 3: "length"}
    add("prefill", PrefillGraph(model, has_vision),
        (torch.zeros(1, lp, dm), torch.zeros(1, cfg.memory_dim)) + img_args,
        ["x", "z_read"] + img_names, ["state", "k", "v"],
        {"x": {0: "batch", 1: "tokens"}, "z_read": {0: "batch"}, "state": {0: "batch"},
         "k": kv_axes, "v": kv_axes, **img_axes})
    past = torch.zeros(nl, 1, nh, 5, hd)
    add("decode", DecodeGraph(model, has_vision), (torch.zeros(1, 1, dm), past, past) + img_args,
        ["x", "past_k", "past_v"] + img_names, ["state", "k_new", "v_new"],
        {"x": {0: "batch", 1: "new"}, "past_k": {1: "batch", 3: "past"},
         "past_v": {1: "batch", 3: "past"}, "state": {0: "batch"},
         "k_new": {1: "batch", 3: "new"}, "v_new": {1: "batch", 3: "new"}, **img_axes})
    add("head", HeadCandidatesGraph(model.lm_head.weight, HEAD_CANDIDATES), (torch.zeros(1, dm),),
        ["state"], ["candidates"], {"state": {0: "batch"}, "candidates": {0: "batch"}},
        ternary_graph=False)   # int8 (not ternary) weights, stored once, in the graph
    r = len(model.catalog)
    fact = model.selector.fact_proj is not None
    add("selector", SelectorGraph(model), (torch.zeros(1, dm), torch.randn(r, cfg.robot_embed_dim))
        + ((torch.randn(1, cfg.memory_dim),) if fact else ()),
        ["state", "robot_emb"] + (["fact"] if fact else []), ["probabilities", "logits", "steps"],
        {"state": {0: "batch"}, "robot_emb": {0: "robots"}, "probabilities": {0: "batch", 1: "robots"},
         "logits": {0: "batch", 1: "robots"}, "steps": {0: "batch"}, **({"fact": {0: "batch"}} if fact else {})})

    # 4. catalog, its precomputed robot embeddings, tokenizer, empty trained memory
    model.catalog.save(d / "catalog.yaml")
    np.save(d / "robot_embeddings.npy", robot_emb)
    tok.save(d)
    model.new_memory().to_numpy().save(d / "memory.npz")

    # 5. config and manifest
    weights_digest = hashlib.sha256()
    for p in sorted((d / "weights").iterdir()):
        weights_digest.update(p.read_bytes())
    model_id = model_id or f"bitgen-{cfg.name}-{weights_digest.hexdigest()[:12]}"
    vision = None
    if has_vision:
        v = model.vision
        vision = {"kind": cfg.vision_kind, "image_size": int(v.image_size),
                  "mean": [float(x) for x in v.preprocess_mean], "std": [float(x) for x in v.preprocess_std]}
    config = {
        "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "model_id": model_id,
        "model": cfg.to_dict(), "vision": vision,
        "tokens": {"pad": tok.pad_id, "sep": tok.sep_id, "eos": tok.eos_id, "sink": tok.sink_id},
        "embedding": "weights/embed.npy", "lm_head": lm_head_file,
        "robot_embeddings": {"file": "robot_embeddings.npy",
                             "catalog_fingerprint": model.catalog.fingerprint(),
                             "max_tokens": cfg.cache_len - 1},
        "memory": "memory.npz", "graphs": graphs, "ternary": ternary_files,
        "decode_numpy": {"file": "weights/backbone_float.npz", "rms_eps": float(model.norm.eps),
                         "act_eps": QUANT_EPS, "prefill_file": MEMORY_PREFIX_FILE},
        "exporter": {"torch": torch.__version__, "onnx": onnx.__version__, "opset": OPSET},
    }
    (d / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return write_manifest(d, model_id)


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bitgen export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="checkpoint written by stage1/stage2 (BitGenModel.save)")
    ap.add_argument("--out", required=True, help="model directory to write (e.g. models/default)")
    ap.add_argument("--model-id", help="id recorded in the manifest (default: bitgen-<preset>-<weights hash>)")
    ap.add_argument("--force", action="store_true", help="replace an existing model directory")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the export")
    ap.add_argument("--int8-vision", action="store_true",
                    help="quantize the float vision backbone to int8 (training/quantize_vision.py)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    from bitgen_core.model import BitGenModel
    try:
        model = BitGenModel.load(args.checkpoint)
        manifest = export_model(model, args.out, args.model_id, overwrite=args.force,
                                int8_vision=args.int8_vision)
    except BitGenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    total = sum(f["bytes"] for f in manifest["files"].values())
    print(f"exported {manifest['model_id']} to {args.out} ({len(manifest['files'])} files, "
          f"{total / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
