"""An exported model directory, verified and parsed: what the runtime and `bitgen verify` load.

`load_model_files` checks the manifest (size + sha256 of every file) before parsing anything,
then parses config, tokenizer, catalog, tables and packed ternary weights; any problem raises
ModelLoadError naming the file. Torch-free.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import yaml

from bitgen_core.catalog import RobotCatalog
from bitgen_core.config import BitGenConfig
from bitgen_core.errors import BitGenError, ModelLoadError
from bitgen_core.memory_np import EpisodicMemoryNP
from bitgen_core.runtime.manifest import MODEL_FORMAT, CheckedFiles, check_files, decode_t2, read_manifest
from bitgen_core.runtime.sessions import build_sessions as make_sessions, trim_file_pages
from bitgen_core.tokenizer import BitGenTokenizer


@dataclass
class ModelFiles:
    """A verified model directory, parsed: what the runtime (and `bitgen verify`) needs."""
    directory: Path
    checked: CheckedFiles
    config: dict
    model_config: BitGenConfig
    tokenizer: BitGenTokenizer
    catalog: RobotCatalog
    embed: np.ndarray
    lm_head: np.ndarray
    robot_emb: np.ndarray
    memory: EpisodicMemoryNP
    ternary: dict[str, np.ndarray]
    graph_files: dict[str, Path]
    sessions: dict[str, ort.InferenceSession] = field(default_factory=dict)

    def release_loading_data(self) -> None:
        """Drop what only loading reads: the checked bytes of the small files (tokenizer.json,
        packed weights, ...) and the decoded ternary codes, once the sessions and the numpy
        decoder hold their own forms (the runtime calls it at the end of its load; 2.8 MB RSS)."""
        self.checked.contents.clear()
        self.ternary.clear()


def _npy(data: bytes, name: str) -> np.ndarray:
    """Parse .npy bytes without copying the payload (a read-only view of the checked bytes)."""
    try:
        f = io.BytesIO(data)
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
        if dtype.hasobject or fortran:
            raise ValueError("unsupported array layout")
        arr = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape, dtype=np.int64)), offset=f.tell())
        return arr.reshape(shape)
    except (ValueError, TypeError) as e:
        raise ModelLoadError(f"model file {name} is not a valid .npy array ({e})") from None


def _mapped(rel: str) -> bool:
    """Large float tables read through a read-only memory map once their sha256 has passed:
    a trace gathers a few rows of the 30k x d embedding per token, so mapping it keeps the
    untouched rows out of the process's RSS (15.6 MB at d=128) instead of copying the file in."""
    return rel.startswith("weights/") and rel.endswith(".npy")


def _load_mapped(d: Path, rel: str) -> np.ndarray:
    try:
        arr = np.load(d / rel, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ModelLoadError(f"model file {rel} is not a valid .npy array ({e})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.hasobject:
        raise ModelLoadError(f"model file {rel} is not a valid .npy array")
    return arr


def load_model_files(model_dir: str | os.PathLike, threads: int = 1, build_sessions: bool = True,
                     skip_graphs: tuple[str, ...] = ()) -> ModelFiles:
    """Verify the manifest (sizes + sha256 of every file), then parse everything; any problem
    raises ModelLoadError naming the file, before a single graph has run. `skip_graphs` are
    checked but get no onnxruntime session (the runtime skips decode.onnx when it decodes
    in numpy)."""
    d = Path(model_dir)
    manifest = read_manifest(d)
    checked = check_files(d, manifest, keep=lambda rel: not rel.endswith(".onnx") and not _mapped(rel))
    c = checked.contents

    def text(rel):
        try:
            return c[rel].decode("utf-8")
        except UnicodeDecodeError:
            raise ModelLoadError(f"model file {rel} is not UTF-8 text") from None

    try:
        config = json.loads(text("config.json"))
        if config.get("format") != MODEL_FORMAT or config.get("model_id") != manifest["model_id"]:
            raise ValueError("format or model_id does not match the manifest")
        model_config = BitGenConfig.from_dict(config["model"])
    except (ValueError, KeyError, TypeError, BitGenError) as e:
        raise ModelLoadError(f"model file config.json is invalid ({e}); re-export the model") from None
    try:
        tokenizer = BitGenTokenizer.from_json(text("tokenizer.json"))
    except ModelLoadError:
        raise
    except Exception as e:   # json / WordPiece errors; tokenizers raises bare Exception
        raise ModelLoadError(f"model file tokenizer.json is unreadable: {e}".splitlines()[0]) from None
    try:
        catalog = RobotCatalog.from_dict(yaml.safe_load(text("catalog.yaml")))
    except (yaml.YAMLError, BitGenError) as e:
        raise ModelLoadError(f"model file catalog.yaml is invalid: {e}".splitlines()[0]) from None
    if tokenizer.vocab_size != model_config.vocab_size:
        raise ModelLoadError(f"tokenizer.json has {tokenizer.vocab_size} tokens, config.json says "
                             f"{model_config.vocab_size}")
    def table(rel):
        return _load_mapped(d, rel) if _mapped(rel) else _npy(c[rel], rel)
    embed = table(config["embedding"])
    lm_head = embed if config["lm_head"] == config["embedding"] else table(config["lm_head"])
    for name, arr in ((config["embedding"], embed), (config["lm_head"], lm_head)):
        if arr.shape != (model_config.vocab_size, model_config.d_model) or arr.dtype != np.float32:
            raise ModelLoadError(f"model file {name} has shape {arr.shape} {arr.dtype}, expected "
                                 f"({model_config.vocab_size}, {model_config.d_model}) float32")
    rcfg = config["robot_embeddings"]
    robot_emb = _npy(c[rcfg["file"]], rcfg["file"])
    try:
        memory = EpisodicMemoryNP.load(io.BytesIO(c[config["memory"]]))
    except (ValueError, KeyError, OSError) as e:
        raise ModelLoadError(f"model file {config['memory']} is invalid ({e}); re-export the model") from None
    if memory.dim != model_config.memory_dim:
        raise ModelLoadError(f"memory.npz has dim {memory.dim}, config.json says {model_config.memory_dim}")
    ternary = {}
    for layer, meta in config["ternary"].items():
        rel = f"weights/{layer}.t2"
        if rel not in c:
            raise ModelLoadError(f"model file {rel} is not listed in the manifest; re-export the model")
        q, _ = decode_t2(c[rel], rel)
        if list(q.shape) != list(meta["shape"]):
            raise ModelLoadError(f"model file {rel} holds shape {q.shape}, config.json says {meta['shape']}")
        ternary[layer] = q
    graph_files = {}
    for name, g in config["graphs"].items():
        if g["file"] not in manifest["files"]:
            raise ModelLoadError(f"graph {g['file']} is not listed in the manifest; re-export the model")
        for t in g["ternary"]:
            if t["layer"] not in ternary:
                raise ModelLoadError(f"{g['file']} needs packed weights {t['layer']}.t2, which are missing")
        graph_files[name] = d / g["file"]
    files = ModelFiles(d, checked, config, model_config, tokenizer, catalog, embed, lm_head, robot_emb,
                       memory, ternary, graph_files)
    if build_sessions:
        # the code only importing ran leaves the RSS before the sessions' memory comes in, so
        # loading's own peak stays below a selection's (95 instead of 108 MB, bench child)
        trim_file_pages()
        files.sessions = make_sessions(files, threads, skip_graphs)
    return files
