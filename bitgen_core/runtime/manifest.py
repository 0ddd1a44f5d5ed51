"""Model directory integrity: the sha256 manifest, the packed ternary file format, `verify`.

Torch-free and onnxruntime-free except in `verify_model_dir(..., load_graphs=True)`.

manifest.json:
    {"format": "bitgen-model", "format_version": 1, "model_id": "...",
     "files": {"vision.onnx": {"sha256": "<hex>", "bytes": 123}, ...},
     "editable": ["catalog.yaml"]}
Every file of the directory except the manifest itself is listed with its size and sha256.
`editable` files (the fleet catalog) may be changed by the operator after export: they are
still parsed and checked, a changed one is reported rather than refused, and the runtime
recomputes what depends on it (robot embeddings). Everything else must match byte for byte:
a truncated, swapped or tampered file is refused before any inference, with the file named.

`.t2` (2-bit packed ternary weights, little-endian):
    b"BGT2" | u8 version=1 | u8 ndim | u16 0 | u32 dims[ndim] | f32 gamma | packed codes
The codes are `ternary.pack_ternary` of the layer's (out, in) int8 matrix: four weights a
byte, so a ternary layer is 1/16 of its float32 bytes (plus a 16-byte header).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bitgen_core import ternary
from bitgen_core.errors import ModelLoadError

MODEL_FORMAT = "bitgen-model"
MODEL_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EDITABLE = ("catalog.yaml",)
PACKED_PREFIX = "bitgen-packed/"      # external-initializer location of a packed layer
REQUIRED = ("config.json", "tokenizer.json", "catalog.yaml", "text_encoder.onnx", "prefill.onnx",
            "decode.onnx", "selector.onnx", "head.onnx", "memory.npz", "robot_embeddings.npy")
T2_MAGIC = b"BGT2"
T2_VERSION = 1
_CHUNK = 1 << 20


# ----------------------------------------------------------------------------- .t2 files
def encode_t2(q: np.ndarray, gamma: float) -> bytes:
    q = np.asarray(q, dtype=np.int8)
    header = T2_MAGIC + struct.pack("<BBH", T2_VERSION, q.ndim, 0)
    header += struct.pack(f"<{q.ndim}I", *q.shape) + struct.pack("<f", float(gamma))
    return header + ternary.pack_ternary(q).tobytes()


def write_t2(path: str | os.PathLike, q: np.ndarray, gamma: float) -> None:
    Path(path).write_bytes(encode_t2(q, gamma))


def decode_t2(data: bytes, name: str = "weights") -> tuple[np.ndarray, float]:
    """bytes of a .t2 file -> (int8 codes in {-1,0,1}, gamma); ModelLoadError if malformed."""
    try:
        if data[:4] != T2_MAGIC:
            raise ValueError("not a BGT2 file")
        version, ndim, _ = struct.unpack_from("<BBH", data, 4)
        if version != T2_VERSION:
            raise ValueError(f"format version {version}, this bitgen reads {T2_VERSION}")
        shape = struct.unpack_from(f"<{ndim}I", data, 8)
        (gamma,) = struct.unpack_from("<f", data, 8 + 4 * ndim)
        body = np.frombuffer(data, dtype=np.uint8, offset=12 + 4 * ndim)
        q = ternary.unpack_ternary(body, tuple(shape))
        if not np.isfinite(gamma) or gamma <= 0:
            raise ValueError(f"scale {gamma} is not a positive number")
    except (ValueError, struct.error) as e:
        raise ModelLoadError(f"{name} is not a valid packed ternary file ({e}); re-export the model") from None
    return q, float(gamma)


# ----------------------------------------------------------------------------- manifest
def sha256_file(path: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def write_manifest(model_dir: str | os.PathLike, model_id: str, only=None) -> dict:
    """List every file of the directory (or, with `only`, just those relative paths: an
    in-place upgrade keeps out what the export did not list, e.g. a MODEL_CARD.md added later
    and still edited by hand)."""
    d = Path(model_dir)
    files = {}
    only = None if only is None else set(only)
    for p in sorted(d.rglob("*")):
        rel = p.relative_to(d).as_posix()
        if p.is_file() and rel != MANIFEST and (only is None or rel in only):
            digest, size = sha256_file(p)
            files[rel] = {"sha256": digest, "bytes": size}
    manifest = {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "model_id": model_id,
                "files": files,
                "editable": [e for e in EDITABLE if e in files]}
    (d / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def read_manifest(model_dir: str | os.PathLike) -> dict:
    d = Path(model_dir)
    if not d.is_dir():
        raise ModelLoadError(f"model directory {d} not found; pass --model DIR or export one "
                             "with `bitgen export`")
    path = d / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{path} is missing; this is not an exported BitGen model directory") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelLoadError(f"{path} is unreadable ({type(e).__name__}); re-export the model") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MODEL_FORMAT:
        raise ModelLoadError(f"{path} is not a {MODEL_FORMAT} manifest")
    if manifest.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelLoadError(f"{path}: model format version {manifest.get('format_version')!r}, this "
                             f"bitgen reads version {MODEL_FORMAT_VERSION}; use a matching bitgen")
    files = manifest.get("files")
    if not isinstance(files, dict) or not isinstance(manifest.get("model_id"), str):
        raise ModelLoadError(f"{path} lacks its file list or model_id; re-export the model")
    for rel, entry in files.items():
        p = Path(rel)
        if p.is_absolute() or ".." in p.parts or not isinstance(entry, dict) \
                or not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("bytes"), int):
            raise ModelLoadError(f"{path} has an invalid entry for {rel!r}; re-export the model")
    missing = [r for r in REQUIRED if r not in files]
    if missing:
        raise ModelLoadError(f"{path} does not list {', '.join(missing)}; re-export the model")
    return manifest


@dataclass
class CheckedFiles:
    """Result of checking a directory against its manifest."""
    manifest: dict
    edited: list[str] = field(default_factory=list)    # editable files changed since export
    contents: dict[str, bytes] = field(default_factory=dict)   # files kept in memory


def check_files(model_dir: str | os.PathLike, manifest: dict | None = None,
                keep=lambda rel: False) -> CheckedFiles:
    """Size and sha256 of every listed file. Files for which `keep(rel)` is true are read once
    and returned, so the caller parses exactly the bytes that were checked."""
    d = Path(model_dir)
    manifest = manifest if manifest is not None else read_manifest(d)
    out = CheckedFiles(manifest)
    editable = set(manifest.get("editable") or ())
    for rel, entry in manifest["files"].items():
        p = d / rel
        try:
            size = p.stat().st_size
        except FileNotFoundError:
            raise ModelLoadError(f"model file {rel} is missing from {d}; re-export or restore it") from None
        except OSError as e:
            raise ModelLoadError(f"model file {rel} is unreadable: {e.strerror}") from None
        if rel in editable:
            data = p.read_bytes()
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                out.edited.append(rel)
            out.contents[rel] = data
            continue
        if size != entry["bytes"]:
            raise ModelLoadError(f"model file {rel} is {size} bytes, the manifest says {entry['bytes']} "
                                 "(truncated or replaced); re-export or restore it")
        if keep(rel):
            data = p.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            out.contents[rel] = data
        else:
            digest, _ = sha256_file(p)
        if digest != entry["sha256"]:
            raise ModelLoadError(f"model file {rel} fails its sha256 check (corrupt or tampered); "
                                 "re-export or restore it")
    return out


# ----------------------------------------------------------------------------- verify
@dataclass
class VerifyReport:
    model_id: str
    files: int
    bytes: int
    edited: list[str]
    ternary_layers: int
    graphs: list[str]

    def summary(self) -> str:
        extra = f"; edited since export: {', '.join(self.edited)}" if self.edited else ""
        return (f"OK {self.model_id}: {self.files} files, {self.bytes / 1e6:.1f} MB, "
                f"{len(self.graphs)} graphs, {self.ternary_layers} packed ternary layers{extra}")


def verify_model_dir(model_dir: str | os.PathLike, load_graphs: bool = True) -> VerifyReport:
    """Everything `bitgen verify` checks; raises ModelLoadError naming the first problem."""
    from bitgen_core.runtime.engine import load_model_files   # the runtime's own loader

    d = Path(model_dir)
    files = load_model_files(d, build_sessions=load_graphs)
    m = files.checked.manifest
    return VerifyReport(model_id=m["model_id"], files=len(m["files"]),
                        bytes=sum(e["bytes"] for e in m["files"].values()), edited=files.checked.edited,
                        ternary_layers=len(files.ternary), graphs=sorted(files.graph_files))
