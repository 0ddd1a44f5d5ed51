"""What stage1.py and stage2.py share: config, seeds, DDP, checkpoints, logs, caches, batches.

- Config is YAML (configs/*.yaml) with dotted CLI overrides: `train.lr=1e-3 model.preset=nano`.
- DDP: `torchrun --nproc_per_node 2 training/stage2.py` runs one process per rank with the
  gloo backend on CPU. The model is not wrapped in DistributedDataParallel: training calls
  several of its entry points (encode_text, backbone, forward) per step, and DDP's reducer only
  follows `forward`. Instead every rank starts from rank 0's weights and gradients are averaged
  with one coalesced all-reduce after backward, which is exactly DDP's synchronous SGD.
  Data is sharded with DistributedSampler; rank 0 alone logs and writes checkpoints.
- Checkpoints hold model, optimizer, step, RNG states and elapsed time, written atomically
  (bitgen_core.store.atomic_write_bytes), so `--resume` continues the same run.
- The metrics log is JSONL, one {"step", "phase", ..., "elapsed_s"} object per line, which
  training/report.py plots as training curves.
- Caches (keyed by content hashes, safe to delete): MiniLM sentence embeddings per text, and
  the frozen vision encoder's pooled features per image file.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml

from bitgen_core.store import atomic_write_bytes

REPO = Path(__file__).resolve().parents[1]
CKPT_FORMAT = "bitgen-train-state-v1"


# --- config ---------------------------------------------------------------------------------
def load_config(path: str | Path, overrides: list[str] | None = None) -> dict:
    """YAML config + `a.b.c=value` overrides (values parsed as YAML: 3, 1e-3, true, [1, 2])."""
    cfg = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    for item in overrides or []:
        if "=" not in item:
            raise SystemExit(f"override {item!r} is not key=value (e.g. train.lr=1e-3)")
        key, value = item.split("=", 1)
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return cfg


def resolve(path: str | Path | None) -> Path | None:
    """Config paths are relative to the repo root (so `make train` and tests agree)."""
    if path is None or path == "":
        return None
    p = Path(path)
    return p if p.is_absolute() else REPO / p


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- distributed ----------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1


def setup_distributed() -> Dist:
    """Join the torchrun process group (gloo, CPU) when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def teardown_distributed(d: Dist) -> None:
    if d.on and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def start_run(description: str, default_config: str | Path, argv=None, resume_help: str = "continue from OUT/state.pt",
              override_example: str = "sft.steps=100") -> tuple[argparse.Namespace, dict, "Dist", int]:
    """The start every training script shares: `--config`, `--resume` and key=value overrides,
    the config, the thread budget, the process group (if under torchrun) and the seed.
    Returns (args, cfg, dist, seed); everything random is seeded with `seed` on return."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--config", default=str(default_config))
    ap.add_argument("--resume", action="store_true", help=resume_help)
    ap.add_argument("overrides", nargs="*", help=f"key=value config overrides (e.g. {override_example})")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    torch.set_num_threads(int(cfg.get("threads", 1)))
    d = setup_distributed()
    seed = int(cfg.get("seed", 0))
    seed_everything(seed)
    return args, cfg, d, seed


def broadcast_parameters(module: torch.nn.Module, d: Dist) -> None:
    """Every rank starts from rank 0's weights and buffers."""
    if not d.on:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, 0)


def average_gradients(params: list[torch.nn.Parameter], d: Dist) -> None:
    """Synchronous data parallelism: mean of the ranks' gradients, one flat all-reduce."""
    if not d.on:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= d.world
    i = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[i:i + n].view_as(p).clone()
        i += n


def all_mean(values: dict[str, float], d: Dist) -> dict[str, float]:
    """Average scalar metrics over ranks (for the log)."""
    if not d.on or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / d.world for k, v in zip(keys, t)}


# --- checkpoints ----------------------------------------------------------------------------
def save_state(path: Path, *, model: torch.nn.Module, optimizer, step: int, phase: str,
               log: "MetricsLog", extra_modules: dict | None = None, extra: dict | None = None) -> None:
    """Full training state (for --resume), atomically."""
    state = {"format": CKPT_FORMAT, "step": step, "phase": phase, "elapsed_s": log.elapsed, "cpu_s": log.cpu,
             "model": model.state_dict(), "optimizer": optimizer.state_dict() if optimizer else None,
             "modules": {k: m.state_dict() for k, m in (extra_modules or {}).items()},
             "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                     "python": random.getstate()},
             "extra": extra or {}}
    buf = io.BytesIO()
    torch.save(state, buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: Path, *, model: torch.nn.Module, optimizer=None,
               extra_modules: dict | None = None) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("format") != CKPT_FORMAT:
        raise SystemExit(f"{path} is not a training state ({CKPT_FORMAT})")
    model.load_state_dict(state["model"])
    if optimizer is not None and state.get("optimizer"):
        optimizer.load_state_dict(state["optimizer"])
    for k, m in (extra_modules or {}).items():
        if k in state["modules"]:
            m.load_state_dict(state["modules"][k])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    return state


# --- logging --------------------------------------------------------------------------------
_T_START = time.perf_counter()
_CPU_START = time.process_time()


class MetricsLog:
    """JSONL metrics (rank 0 only). `elapsed_s` is wall time since the script started (data,
    caches and model set-up included) plus the previous runs' time when resuming; `cpu_s` is
    this process's CPU time, the same way (on a shared machine the two differ a lot)."""

    def __init__(self, path: Path, d: Dist, elapsed_before: float = 0.0, append: bool = False,
                 cpu_before: float = 0.0):
        self.path, self.d = path, d
        self.t0 = _T_START - elapsed_before
        self.c0 = _CPU_START - cpu_before
        if d.main:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not append and path.exists():
                path.unlink()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    @property
    def cpu(self) -> float:
        return time.process_time() - self.c0

    def write(self, step: int, phase: str, metrics: dict) -> None:
        if not self.d.main:
            return
        row = {"step": int(step), "phase": phase,
               **{k: (round(float(v), 6) if isinstance(v, (float, int, np.floating)) else v)
                  for k, v in metrics.items()},
               "elapsed_s": round(self.elapsed, 2), "cpu_s": round(self.cpu, 2)}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def progress(total: int, desc: str, d: Dist, initial: int = 0):
    from tqdm import tqdm
    quiet = os.environ.get("BITGEN_PROGRESS", "1") == "0"
    return tqdm(total=total, initial=initial, desc=desc, disable=not d.main or quiet, dynamic_ncols=True,
                leave=False, file=sys.stderr)


# --- caches ---------------------------------------------------------------------------------
def _sha(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


# One text per MiniLM forward: a text's embedding must not depend on which batch (padding,
# BLAS blocking) first computed it, or a cold cache trains another model than a warm one
# (reports/retrain_v4, "Re-run of v4c": 535 of 9,395 rows differed). Batch-1 entries live
# in their own file so a cache of batched entries is never mixed in.
TEACHER_FILE = "minilm_teacher_b1.npz"


def minilm_embeddings(texts: list[str], cache_dir: Path, threads: int = 1) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings (N, 384), cached per text (sha1) in one .npz."""
    from training.baselines import MiniLMEmbedder
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / TEACHER_FILE
    table: dict[str, np.ndarray] = {}
    if path.exists():
        z = np.load(path)
        table = dict(zip(z["keys"].tolist(), z["emb"]))
    keys = [_sha(t.encode("utf-8")) for t in texts]
    missing = sorted({t for t, k in zip(texts, keys) if k not in table})
    if missing:
        emb = MiniLMEmbedder(cache_dir=None, threads=threads, batch_size=1).encode(missing)
        for t, e in zip(missing, emb):
            table[_sha(t.encode("utf-8"))] = e.astype(np.float16)
        buf = io.BytesIO()
        ks = list(table)
        np.savez(buf, keys=np.array(ks), emb=np.stack([table[k] for k in ks]))
        atomic_write_bytes(path, buf.getvalue())
    return np.stack([table[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, 384), np.float32)


def minilm_table(cache_dir: Path, keys: set[str] | None = None) -> dict[str, np.ndarray]:
    """The cached teacher embeddings by text hash (read-only; empty when nothing is cached),
    only those of `keys` when given. The cache holds every text any run on this machine
    distilled, so a consumer that takes the whole table trains on this machine's history."""
    path = cache_dir / TEACHER_FILE
    if not path.exists():
        return {}
    z = np.load(path)
    return {k: e for k, e in zip(z["keys"].tolist(), z["emb"]) if keys is None or k in keys}


# Stage 1 writes the hashes of the texts it distilled beside its checkpoint; stage 2 distils
# its task records towards the teacher only for those (a fresh clone's cache holds exactly
# them). Taking the whole cache instead made stage 2 depend on which other stage-1 runs had
# filled it: a re-run of v6.1 with the same code, data and seeds diverged from step 20.
TEACHER_KEYS_FILE = "teacher_keys.txt"


def write_teacher_keys(out_dir: Path, texts: list[str]) -> Path:
    path = out_dir / TEACHER_KEYS_FILE
    atomic_write_bytes(path, "".join(f"{k}\n" for k in sorted({text_key(t) for t in texts})).encode())
    return path


def read_teacher_keys(checkpoint: Path | None) -> set[str] | None:
    """The teacher keys stage 1 wrote beside `checkpoint`, or None when there are none."""
    path = None if checkpoint is None else checkpoint.parent / TEACHER_KEYS_FILE
    if path is None or not path.exists():
        return None
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def text_key(text: str) -> str:
    return _sha(text.encode("utf-8"))


@torch.no_grad()
def vision_features(model, paths: list[str], cache_dir: Path, d: Dist) -> dict[str, torch.Tensor]:
    """Frozen encoder features pooled onto the token grid, (n_tokens, C) float16 per image.

    The encoder is frozen, so its pooled map never changes during training: compute it once
    per image (content-hashed .pt shards) and train only the projection on top. Pooling is
    linear, so proj(pool(features)) here equals the encoder's own forward exactly.
    One image per forward (keys say "-b1"): a feature must not depend on the batch
    that first computed it (10 of 1,244 differed by a float16 step between batchings)."""
    from PIL import Image
    from bitgen_core.image_preprocess import preprocess
    v = model.vision
    cache_dir.mkdir(parents=True, exist_ok=True)
    uniq = sorted(set(paths))
    key_of = {p: _sha(Path(p).read_bytes()) + f"-{type(v).__name__}-{v.n_tokens}-s{v.image_size}-b1"
              for p in uniq}
    out: dict[str, torch.Tensor] = {}
    todo = []
    for p in uniq:
        f = cache_dir / f"{key_of[p]}.pt"
        if f.exists():
            out[p] = torch.load(f, weights_only=True)
        else:
            todo.append(p)
    mine = todo[d.rank::d.world]
    bar = progress(len(mine), "vision features", d)
    for p in mine:
        x = torch.from_numpy(preprocess(np.asarray(Image.open(p).convert("RGB")), v.image_size,
                                        v.preprocess_mean, v.preprocess_std)[None])
        fmap = v.features(x)
        _, _, h, w = fmap.shape
        # [0] before .half(): a tensor of its own, not a view of a larger storage (torch.save
        # writes a view's whole storage), so no copies are needed
        feat = torch.matmul(v.pool._matrix(h, w, fmap), fmap.flatten(2).transpose(1, 2))[0].half()
        buf = io.BytesIO()
        torch.save(feat, buf)
        atomic_write_bytes(cache_dir / f"{key_of[p]}.pt", buf.getvalue())
        out[p] = feat
        bar.update(1)
    bar.close()
    if d.on:
        dist.barrier()
        for p in todo:
            if p not in out:
                out[p] = torch.load(cache_dir / f"{key_of[p]}.pt", weights_only=True)
    return out


def image_tokens(model, feats: torch.Tensor) -> torch.Tensor:
    """Cached pooled features (B, n, C) -> image tokens (B, n, d): the trainable part of the encoder."""
    pool = model.vision.pool
    return pool.proj(feats.float()) + pool.pos


# --- optimisation ---------------------------------------------------------------------------
def trainable(model: torch.nn.Module, freeze_embeddings: bool, train_special_rows: bool = False) -> None:
    """Freeze the word embeddings: they keep MiniLM's lexical geometry for words the generator
    never uses, which is what carries the model to human wording.

    With `train_special_rows`, the rows of the special tokens ([EOS], [SEP], [SINK], ...) still
    learn (a gradient mask zeroes every other row). MiniLM never trained those rows; left frozen,
    [EOS] sits among BERT's [unusedN] rows and the tied output head cannot make it win, so
    sampled traces never stop. Use `param_groups` so these rows get no weight decay either."""
    w = model.embed.weight
    if not freeze_embeddings:
        return
    if not train_special_rows:
        w.requires_grad_(False)
        return
    rows = torch.zeros(w.shape[0], 1)
    rows[sorted(model.tokenizer.special_ids)] = 1.0
    w.requires_grad_(True)
    w.register_hook(lambda g: g * rows.to(g.dtype))


def param_groups(params: list[torch.nn.Parameter], model, weight_decay: float) -> list[dict]:
    """AdamW groups: the embedding (if it trains at all, only its masked rows) has no decay,
    since decoupled decay would shrink the frozen rows too."""
    emb = [p for p in params if p is model.embed.weight]
    rest = [p for p in params if p is not model.embed.weight]
    return [{"params": rest, "weight_decay": weight_decay}] + ([{"params": emb, "weight_decay": 0.0}] if emb else [])


def cosine_lr(step: int, total: int, warmup: int, base: float, floor: float = 0.1) -> float:
    if step < warmup:
        return base * (step + 1) / max(1, warmup)
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * t)))


def set_lr(optimizer, lr: float) -> None:
    """The schedule's lr for every group, except groups that keep their own `fixed_lr`."""
    for g in optimizer.param_groups:
        g["lr"] = g.get("fixed_lr", lr)


def build_model(cfg: dict, init: Path | None = None):
    """BitGenModel from `model:` ({preset, overrides}) or from a checkpoint to continue from."""
    from bitgen_core.config import BitGenConfig
    from bitgen_core.model import BitGenModel
    if init is not None:    # `init_overrides`: config changes on top of the checkpoint's
        return BitGenModel.load(init, overrides=cfg.get("init_overrides") or None).train()
    m = cfg.get("model") or {}
    mc = BitGenConfig.preset(m.get("preset", "tiny"), **(m.get("overrides") or {}))
    return BitGenModel(mc, pretrained=bool(m.get("pretrained", True)),
                       vision_options=m.get("vision_options") or None).train()
