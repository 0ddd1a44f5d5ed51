"""Stage 2: robot selection + reasoning. SFT on the task records, then GRPO on the trace.

    python training/stage2.py [--config training/configs/stage2.yaml] [--resume] [key=value ...]
    torchrun --nproc_per_node 2 training/stage2.py ...           (DDP, gloo on CPU)

SFT, per batch of task records (docs/ARCHITECTURE.md "Data records"):
- selection: BCE of the sigmoid per robot against the gold multi-hot set, and (`rank_weight`)
  a pairwise loss that puts the rationale's capable-but-unselected robots above those that
  cannot do the task, so the ranking below the selection is the rules' fallback order;
- memory: each record's `facts` are written one-shot into its own episode memory before the
  task is read (`FactEpisodes`), so the model learns to use facts written at run time (the
  generator's memory episodes hold the same task with and without its fact, a paraphrase, and
  an unrelated task: efficacy, generalisation and locality are all in the data);
- memory relevance: facts labelled `applies` (bitgen_core/data/episodes.py) train their
  coefficient in the read, a_i = w_q C^-1 w_i^T, and the read's gate g(a_i) (config
  memory_gate) towards 1 if the fact concerns the task and 0 if not (`relevance_weight`).
  Without it the read is unselective: the Larimar address is linear in the pooled text
  encodings, which share a large common direction, so an unrelated task got about the same
  share of a fact as the task it concerns (shipped model, dev memory cases: a ~0.6-1.2 for
  both) and locality could only come from the backbone. `relevance_batch` > 0 adds, each
  step, that many memory-episode records for this loss alone (the selection batch holds
  only a few facts that do not apply);
- images: records with a scene feed its image tokens to the gated cross-attention; in
  image-decides records only the image tells the environment;
- reasoning: Tiny-R1's ponder cost, and the trace LM loss on a sub-batch (the output layer is
  30k words wide; a few rows per step teach the short step grammar just as well).
The trace is the rules' rationale in compact form (robot keys, the place's last words) so it
fits the runtime's 32-token trace budget. Then GRPO (training/grpo.py) sharpens the sampled
traces: correct, well-formed, consistent with the selector.
Writes OUT/model.pt (BitGenModel checkpoint for training/export.py), OUT/state.pt (resume),
OUT/metrics.jsonl (curves for the report) and OUT/summary.json.
"""
from __future__ import annotations

import json
import random
import re
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from bitgen_core.data.episodes import is_availability_key
from bitgen_core.data.loaders import load_task_records
from bitgen_core.data.rules import parse_rationale
from bitgen_core.model import FactEpisodes
from training import common as C
from training import grpo
from training.stage1 import distill_loss

DEFAULT_CONFIG = Path(__file__).with_name("configs") / "stage2.yaml"


# --- data -----------------------------------------------------------------------------------
def compact_trace(rationale: str | None, tok, max_tokens: int, catalog) -> str | None:
    """The rules' step-form rationale, shortened to fit `max_tokens` word pieces."""
    p = parse_rationale(rationale, catalog) if rationale else None
    if p is None:
        return None
    place = re.sub(r"\s*\(.*\)\s*$", "", p["place"]).split()
    needs, capable, selected = p["needs"], p["capable"], p["selected"]
    for n_place, short in ((2, False), (1, False), (1, True)):
        cap = selected if short else capable
        nd = needs.split(", ")[0] if short else needs
        text = (f"environment: {' '.join(place[-n_place:])} → {p['family']}; needs: {nd} → "
                f"{', '.join(cap)}; selected: {', '.join(selected)}")
        if len(tok.encode(text)) <= max_tokens:
            return text
    return None


def load_split(path: Path, catalog, limit: int = 0, seed: int = 0) -> list[dict]:
    recs = load_task_records(path, catalog)
    if limit and len(recs) > limit:
        recs = random.Random(seed).sample(recs, limit)
    return recs


class TaskBatches:
    """Task records -> padded tensors for one step (tokenised on the fly; fast tokenizers)."""

    def __init__(self, records: list[dict], model, feats: dict, trace_tokens: int, max_facts: int = 4,
                 teacher: dict | None = None, relevance_availability: bool = True):
        self.records, self.model, self.feats = records, model, feats
        self.relevance_availability = relevance_availability   # False: label site facts only
        self.tok, self.cfg, self.catalog = model.tokenizer, model.config, model.catalog
        self.max_facts = max_facts
        self.targets = torch.tensor([self.catalog.multi_hot(r["robots"]) for r in records])
        # the rationale's capable list (every robot that can do the job here, gold first):
        # what the rules would fall back on; records without a rationale add nothing
        self.capable = torch.tensor([self.catalog.multi_hot(capable_robots(r, self.catalog)) for r in records])
        self.traces = [compact_trace(r.get("rationale"), self.tok, trace_tokens, self.catalog) for r in records]
        # MiniLM embeddings of the task texts stage 1 distilled on (rows without one: zeros)
        rows = [(teacher or {}).get(C.text_key(r["task"])) for r in records]
        self.has_teacher = torch.tensor([t is not None for t in rows])
        self.teacher = torch.from_numpy(np.stack([np.zeros(384, np.float32) if t is None else t.astype(np.float32)
                                                  for t in rows])) if records else torch.zeros(0, 384)

    def __len__(self) -> int:
        return len(self.records)

    def tokens(self, texts: list[str], max_len: int):
        ids, mask = self.tok.encode_batch(texts, max_len)
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def images(self, recs, use_images: bool = True):
        n = self.cfg.n_image_tokens
        if not use_images or self.model.vision is None or not any(r["image"] for r in recs):
            return None, None
        c = next(iter(self.feats.values())).shape[-1]
        x = torch.zeros(len(recs), n, c)
        mask = torch.zeros(len(recs), n, dtype=torch.bool)
        for i, r in enumerate(recs):
            if r["image"]:
                x[i], mask[i] = self.feats[r["image"]].float(), True
        return C.image_tokens(self.model, x), mask

    def facts(self, recs):
        if not any(r["facts"] for r in recs):
            return None
        n = min(self.max_facts, max(len(r["facts"]) for r in recs))
        texts = [(r["facts"][j]["text"] if j < len(r["facts"][:n]) else "") for r in recs for j in range(n)]
        ids, mask = self.tokens(texts, self.cfg.max_task_tokens)
        return FactEpisodes(ids.view(len(recs), n, -1), mask.view(len(recs), n, -1))

    def relevance(self, recs) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Targets for the facts' read coefficients: (applies (B, N) 0/1, labelled (B, N)).

        N as in `facts`; a fact without an `applies` flag (real data) is not labelled."""
        if not any(r["facts"] for r in recs):
            return None
        n = min(self.max_facts, max(len(r["facts"]) for r in recs))
        target, labelled = torch.zeros(len(recs), n), torch.zeros(len(recs), n, dtype=torch.bool)
        for i, r in enumerate(recs):
            for j, f in enumerate(r["facts"][:n]):
                if not self.relevance_availability and is_availability_key(f["key"]):
                    continue
                if isinstance(f.get("applies"), bool):
                    target[i, j], labelled[i, j] = float(f["applies"]), True
        return target, labelled

    def batch(self, idx: list[int], use_images: bool = True, token_dropout: float = 0.0,
              rng: np.random.Generator | None = None) -> dict:
        recs = [self.records[i] for i in idx]
        ids, mask = self.tokens([r["task"] for r in recs], self.cfg.max_task_tokens)
        if token_dropout > 0:
            ids, mask = drop_tokens(ids, mask, token_dropout, rng, [not r["facts"] for r in recs],
                                    self.tok.pad_id)
        it, im = self.images(recs, use_images)
        return dict(task_ids=ids, task_mask=mask, image_tokens=it, image_mask=im, memory=self.facts(recs),
                    relevance=self.relevance(recs),
                    targets=self.targets[idx], capable=self.capable[idx], traces=[self.traces[i] for i in idx], records=recs,
                    teacher=self.teacher[idx], has_teacher=self.has_teacher[idx])


def capable_robots(record: dict, catalog=None) -> list[str]:
    """The gold robots plus the rationale's capable ones (rules.RuleBook.capable), named in
    `catalog` (the model's; None: the default fleet), as `compact_trace` parses them."""
    parsed = parse_rationale(record["rationale"], catalog) if record.get("rationale") else None
    return list(dict.fromkeys(record["robots"] + (parsed["capable"] if parsed else [])))


def rank_loss(logits: torch.Tensor, targets: torch.Tensor, capable: torch.Tensor) -> torch.Tensor:
    """Pairwise logistic loss that puts every capable robot the rules did not select above
    every robot that cannot do the task (`sft.rank_weight`). The BCE alone pushes both to 0 and
    leaves their order arbitrary, yet that order is the answer when a memory fact takes the
    selected robot out. Mean over all (capable, incapable) pairs of the batch; 0 if none."""
    alt = (capable > 0) & (targets <= 0)                      # (B, R)
    out = capable <= 0
    pairs = alt[:, :, None] & out[:, None, :]                 # (B, alt, out)
    if not bool(pairs.any()):
        return logits.sum() * 0.0
    diff = logits[:, None, :] - logits[:, :, None]            # [b, a, o] = logit_o - logit_a
    return F.softplus(diff[pairs]).mean()


def drop_tokens(ids: torch.Tensor, mask: torch.Tensor, p: float, rng: np.random.Generator,
                rows: list[bool], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token dropout (`sft.token_dropout`): in the chosen rows each task token is deleted with
    probability p (one always stays) and the row is packed again, right-padded, as the layout
    needs. Rows with memory facts are left whole: their facts' scope labels name task words."""
    ids, mask = ids.clone(), mask.clone()
    for i in (i for i, on in enumerate(rows) if on):
        n = int(mask[i].sum())
        keep = rng.random(n) >= p
        if not keep.any():
            keep[rng.integers(n)] = True
        kept = ids[i, :n][torch.from_numpy(keep)]
        ids[i], mask[i] = pad_id, 0
        ids[i, :len(kept)], mask[i, :len(kept)] = kept, 1
    return ids, mask


def forward(model, b: dict, rows: list[int] | None = None, with_trace: bool = False) -> dict:
    """model.forward on a batch (or some of its rows), optionally teacher-forcing the traces."""
    sel = (lambda t: t) if rows is None else (lambda t: None if t is None else t[rows])
    mem = b["memory"]
    if mem is not None and rows is not None:
        mem = FactEpisodes(mem.ids[rows], mem.mask[rows])
    kw = {}
    if with_trace:
        traces = [b["traces"][i] for i in rows]
        tr, trm = model.tokenizer.encode_batch(traces, model.config.max_trace_tokens)
        kw = dict(trace_ids=torch.from_numpy(tr), trace_mask=torch.from_numpy(trm))
    return model(sel(b["task_ids"]), sel(b["task_mask"]), memory=mem, image_tokens=sel(b["image_tokens"]),
                 image_mask=sel(b["image_mask"]), **kw)


def relevance_loss(coef: torch.Tensor | None, relevance, gate: float = 0.0,
                   threshold: float = 0.5) -> tuple[torch.Tensor, dict]:
    """Loss of the facts' read coefficients against `applies` (labelled facts only): with a
    read gate (k > 0) the BCE of the gate g(a) = sigmoid(k (a - t)) itself, so the gate is
    trained to let the facts that apply in and keep the others out; without one the squared
    error of a against 0/1. Also the mean coefficient of facts that apply / do not."""
    if coef is None or relevance is None or not bool(relevance[1].any()):
        return torch.zeros(()), {}
    target, labelled = relevance
    target = target.to(coef.dtype)
    if gate > 0:
        err = F.binary_cross_entropy_with_logits(gate * (coef - threshold), target, reduction="none")
    else:
        err = (coef - target).pow(2)
    stats = {}
    with torch.no_grad():
        for name, want in (("coef_applies", 1.0), ("coef_other", 0.0)):
            sel = labelled & (target == want)
            if bool(sel.any()):
                stats[name] = float(coef[sel].mean())
    return err[labelled].mean(), stats


def scope_loss(s: torch.Tensor, applies: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """BCE of the scope r = exp(-S) against `applies` (1: the fact concerns the task):
    -[y log r + (1 - y) log(1 - r)] = y S - (1 - y) log(1 - exp(-S)). Also mean r per label."""
    s = s.clamp(min=1e-6)
    y = applies.to(s.dtype)
    loss = (y * s - (1 - y) * torch.log(-torch.expm1(-s))).mean()
    stats = {}
    with torch.no_grad():
        for name, want in (("scope_applies", 1.0), ("scope_other", 0.0)):
            sel = y == want
            if bool(sel.any()):
                stats[name] = float(torch.exp(-s[sel]).mean())
    return loss, stats


class ScopePairs:
    """Every labelled (fact, task, applies) of the training records, sampled in batches for
    the scope loss: token ops only (no forward), so a large batch costs little."""

    def __init__(self, records: list[dict], model):
        self.pairs = [(f["text"], r["task"], float(f["applies"])) for r in records
                      for f in r.get("facts") or [] if isinstance(f.get("applies"), bool)]
        self.model = model

    def __len__(self) -> int:
        return len(self.pairs)

    def loss(self, rng: random.Random, n: int) -> tuple[torch.Tensor, dict]:
        pick = [self.pairs[i] for i in rng.sample(range(len(self.pairs)), min(n, len(self.pairs)))]
        m, max_len = self.model, self.model.config.max_task_tokens
        fi, fm = (torch.from_numpy(a) for a in m.tokenizer.encode_batch([p[0] for p in pick], max_len))
        ti, tm = (torch.from_numpy(a) for a in m.tokenizer.encode_batch([p[1] for p in pick], max_len))
        s = m.fact_scope(FactEpisodes(fi[:, None], fm[:, None]), ti, tm)[:, 0]
        return scope_loss(s, torch.tensor([p[2] for p in pick]))


def read_coefficients(model, b: dict) -> torch.Tensor | None:
    """The facts' read coefficients of a batch's tasks, without the prefill and selector
    (what the relevance batch needs: text encodings, memory key, the episode read)."""
    if b["memory"] is None:
        return None
    z_query = model.memory_encoding(b["task_ids"], b["task_mask"])
    return model.read_episodes(z_query, b["memory"])[2]


def gather_features(model, record_sets: list[list[dict]], cfg: dict, d: C.Dist) -> dict:
    paths = [r["image"] for recs in record_sets for r in recs if r["image"]]
    if not paths or model.vision is None:
        return {}
    return C.vision_features(model, paths, C.resolve(cfg["data"]["feature_cache"]), d)


# --- evaluation -----------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, data: TaskBatches, use_images: bool = True, batch_size: int = 64) -> dict:
    """Top-1 in gold, recall@3 and set F1 of the chosen robots (p >= 0.5, 1..3) on a record set."""
    if len(data) == 0:
        return {}
    was = model.training
    model.eval()
    top1, rec3, f1 = [], [], []
    for s in range(0, len(data), batch_size):
        idx = list(range(s, min(len(data), s + batch_size)))
        b = data.batch(idx, use_images)
        probs = torch.sigmoid(forward(model, b)["robot_logits"])
        for p, r in zip(probs, b["records"]):
            order = [model.catalog.keys[i] for i in torch.argsort(p, descending=True, stable=True).tolist()]
            gold = set(r["robots"])
            top1.append(order[0] in gold)
            rec3.append(len(gold & set(order[:3])) / len(gold))
            f1.append(grpo.set_f1(grpo.chosen_robots(p, model.catalog.keys), gold))
    model.train(was)
    return {"top1": float(np.mean(top1)), "recall_at_3": float(np.mean(rec3)), "f1": float(np.mean(f1)),
            "n": len(top1)}


def eval_sets(model, sets: dict[str, TaskBatches]) -> dict:
    out = {}
    for name, data in sets.items():
        for k, v in evaluate(model, data).items():
            out[f"{name}_{k}"] = v
        if name == "dev":
            img = [i for i, r in enumerate(data.records) if r["image_decides"]]
            if img:
                sub = TaskBatches([data.records[i] for i in img], model, data.feats, 1)
                out["dev_image_with_top1"] = evaluate(model, sub, True)["top1"]
                out["dev_image_without_top1"] = evaluate(model, sub, False)["top1"]
    return out


# --- SFT ------------------------------------------------------------------------------------
def make_ema(model, tcfg: dict):
    """An exponential moving average of the SFT weights (`sft.ema_decay` > 0), or None.

    torch's AveragedModel with its EMA update: a shadow copy that never feeds back into
    training, so the trajectory (and the raw final weights) are the same with it on or off.
    Buffers follow the live model."""
    decay = float(tcfg.get("ema_decay", 0) or 0)
    if decay <= 0:
        return None
    if decay >= 1:
        raise SystemExit(f"stage2: sft.ema_decay must be in [0, 1), got {decay}")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)


def sft(model, head, train: TaskBatches, tcfg: dict, out: Path, d: C.Dist, log: C.MetricsLog, start_step: int,
        optimizer, evals: dict, seed: int, ema=None) -> None:
    steps, bs = int(tcfg["steps"]), int(tcfg["batch_size"])
    params = [p for g in optimizer.param_groups for p in g["params"]]
    sampler = DistributedSampler(range(len(train)), num_replicas=d.world, rank=d.rank, shuffle=True, seed=seed)
    per_epoch = max(1, len(sampler) // bs)
    trace_rows = [i for i, t in enumerate(train.traces) if t]
    rel_bs = int(tcfg.get("relevance_batch", 0) or 0)
    rel_rows = [i for i, r in enumerate(train.records)
                if (labels := train.relevance([r])) is not None and bool(labels[1].any())] if rel_bs else []
    # the read's scope (config.memory_scope): its own loss on the batch's facts and on a
    # sample of all labelled (fact, task) pairs
    scope_w = float(tcfg.get("scope_weight", 0) or 0) if model.memory_scope is not None else 0.0
    scope_pairs = ScopePairs(train.records, model) if scope_w > 0 else None
    scope_bs = int(tcfg.get("scope_batch", 0) or 0)
    bar = C.progress(steps, "stage2 sft", d, initial=start_step)
    max_s = float(tcfg.get("max_minutes", 0) or 0) * 60
    rank_w = float(tcfg.get("rank_weight", 0) or 0)
    drop = float(tcfg.get("token_dropout", 0) or 0)
    if not 0 <= drop < 1:
        raise SystemExit(f"stage2: sft.token_dropout must be in [0, 1), got {drop}")
    acc: dict[str, list] = {}
    step = start_step
    while step < steps:
        epoch, offset = divmod(step, per_epoch)
        sampler.set_epoch(epoch)
        order = list(sampler)
        for k in range(offset, per_epoch):
            if step >= steps:
                break
            C.set_lr(optimizer, C.cosine_lr(step, steps, int(tcfg["warmup"]), float(tcfg["lr"])))
            b = train.batch(order[k * bs:(k + 1) * bs], token_dropout=drop,
                            rng=np.random.default_rng([seed, d.rank, step]) if drop else None)
            o = forward(model, b)
            sel = model.selector.loss(o["robot_logits"], b["targets"])
            rank = rank_loss(o["robot_logits"], b["targets"], b["capable"]) if rank_w > 0 else torch.zeros(())
            loss = sel + rank_w * rank + model.config.ponder_weight * o["ponder_cost"] + float(tcfg["kl_weight"]) * o["memory_kl"]
            rel, rel_stats = relevance_loss(o["memory_coef"], b["relevance"], model.memory.gate,
                                            model.memory.gate_threshold)
            if rel_rows:     # a batch of memory-episode records for the read's relevance alone
                rb = train.batch(random.Random(f"{seed}:{d.rank}:relevance:{step}").sample(
                    rel_rows, min(rel_bs, len(rel_rows))))
                rel_extra, rel_stats = relevance_loss(read_coefficients(model, rb), rb["relevance"],
                                                      model.memory.gate, model.memory.gate_threshold)
                rel = rel + rel_extra
            if float(tcfg.get("relevance_weight", 0)) > 0:
                loss = loss + float(tcfg["relevance_weight"]) * rel
            scope = torch.zeros(())
            if scope_w > 0:
                parts = []
                if o["memory_scope"] is not None and b["relevance"] is not None and bool(b["relevance"][1].any()):
                    target, labelled = b["relevance"]
                    parts.append(scope_loss(o["memory_scope"][labelled], target[labelled]))
                if scope_bs and len(scope_pairs):
                    parts.append(scope_pairs.loss(random.Random(f"{seed}:{d.rank}:scope:{step}"), scope_bs))
                if parts:
                    scope = sum(p[0] for p in parts) / len(parts)
                    rel_stats = {**rel_stats, **parts[-1][1]}
                    loss = loss + scope_w * scope
            dist_loss = torch.zeros(())
            if bool(b["has_teacher"].any()) and float(tcfg.get("distill_weight", 0)) > 0:
                # keep the task state in MiniLM's space while it learns to select (stage 1's
                # distillation would otherwise be overwritten by template-fitted features)
                t = b["has_teacher"]
                dist_loss = distill_loss(head(o["sep_state"][t]), b["teacher"][t])
                loss = loss + float(tcfg["distill_weight"]) * dist_loss
            rows = [i for i, t in enumerate(b["traces"]) if t][: int(tcfg["lm_rows"])]
            lm = torch.zeros(())
            if rows and trace_rows:
                lm = forward(model, b, rows, with_trace=True)["lm_loss"]
                loss = loss + float(tcfg["lm_weight"]) * lm
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            C.average_gradients(params, d)
            torch.nn.utils.clip_grad_norm_(params, float(tcfg["grad_clip"]))
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            bar.update(1)
            for key, v in (("loss", loss), ("bce", sel), ("rank", rank), ("lm", lm), ("distill", dist_loss), ("ponder", o["ponder_cost"]),
                           ("memory_kl", o["memory_kl"]), ("steps", o["steps"].mean()), ("relevance", rel),
                           ("scope", scope)):
                acc.setdefault(key, []).append(float(v.detach()))
            for key, v in rel_stats.items():
                acc.setdefault(key, []).append(v)
            if step % int(tcfg["log_every"]) == 0 or step == steps:
                for key in ("coef_applies", "coef_other", "scope_applies", "scope_other"):   # same keys on every rank (DDP)
                    acc.setdefault(key, [float("nan")])
                m = C.all_mean({k: float(np.mean(v)) for k, v in acc.items()}, d)
                m["lr"] = optimizer.param_groups[0]["lr"]
                if step % int(tcfg["eval_every"]) == 0 or step == steps:
                    m.update(eval_sets(model, evals))
                log.write(step, "sft", m)
                bar.set_postfix(loss=f"{m['loss']:.3f}", bce=f"{m['bce']:.3f}", lm=f"{m['lm']:.2f}")
                acc = {}
            timeout = max_s and log.elapsed > max_s
            if d.main and (step % int(tcfg["ckpt_every"]) == 0 or step == steps or timeout):
                C.save_state(out / "state.pt", model=model, optimizer=optimizer, step=step, phase="sft",
                             log=log, extra_modules={"distill_head": head, **({"ema": ema} if ema is not None else {})})
            if timeout:
                print(f"stage2: SFT stopped at step {step} by max_minutes", file=sys.stderr)
                steps = step
                break
    bar.close()


def _phase(out: Path) -> str:
    return torch.load(out / "state.pt", map_location="cpu", weights_only=False)["phase"]


# --- main -----------------------------------------------------------------------------------
def main(argv=None) -> dict:
    args, cfg, d, seed = C.start_run(__doc__.split("\n\n")[0], DEFAULT_CONFIG, argv,
                                     override_example="sft.steps=100")
    C.seed_everything(seed + d.rank)
    out = C.resolve(cfg["out"])
    init = C.resolve(cfg.get("init"))
    if init is not None and not init.exists():
        raise SystemExit(f"stage2: init checkpoint {init} not found; run stage1 first or set init=null")
    model = C.build_model(cfg, init)
    C.broadcast_parameters(model, d)
    tcfg, gcfg, dcfg = cfg["sft"], cfg["grpo"], cfg["data"]
    C.trainable(model, bool(tcfg.get("freeze_embeddings", True)), bool(tcfg.get("train_special_rows", True)))
    catalog = model.catalog
    train_recs = [r for p in dcfg["train"] for r in load_split(C.resolve(p), catalog)]
    limit = int(dcfg.get("max_records", 0))
    if limit and len(train_recs) > limit:
        train_recs = random.Random(seed).sample(train_recs, limit)
    eval_recs = {}
    for name in ("val", "heldout", "dev"):      # reported only: never trained on
        p = C.resolve(dcfg.get(name))
        if p is not None and p.exists():
            eval_recs[name] = load_split(p, catalog, int(dcfg.get("max_eval", 0)) if name != "dev" else 0, seed)
    feats = gather_features(model, [train_recs, *eval_recs.values()], cfg, d)
    trace_tokens = int(cfg.get("trace_tokens", 31))
    teacher = {}
    if dcfg.get("text_cache"):
        keys = C.read_teacher_keys(init)
        if keys is None and d.main:
            print("stage2: warning: no teacher_keys.txt beside the init checkpoint; distilling towards "
                  "every cached teacher text, so the result depends on what else filled the cache",
                  file=sys.stderr)
        teacher = C.minilm_table(C.resolve(dcfg["text_cache"]), keys)
    train = TaskBatches(train_recs, model, feats, trace_tokens, int(tcfg.get("max_facts", 4)), teacher,
                        bool(tcfg.get("relevance_availability", True)))
    evals = {k: TaskBatches(v, model, feats, trace_tokens) for k, v in eval_recs.items()}
    head = torch.nn.Linear(model.config.d_model, 384)      # projection to MiniLM's space (not exported)
    C.broadcast_parameters(head, d)
    scope_params = [] if model.memory_scope is None else list(model.memory_scope.parameters())
    params = [p for p in model.parameters() if p.requires_grad and all(p is not q for q in scope_params)] \
        + list(head.parameters())
    groups = C.param_groups(params, model, float(tcfg["weight_decay"]))
    if scope_params:    # a linear model over tokens: its own constant lr, no decay
        groups.append({"params": scope_params, "weight_decay": 0.0,
                       "fixed_lr": float(tcfg.get("scope_lr", tcfg["lr"]))})
    opt = torch.optim.AdamW(groups, lr=float(tcfg["lr"]))
    start, phase, elapsed, cpu = 0, "sft", 0.0, 0.0
    resume_phase = _phase(out) if args.resume and (out / "state.pt").exists() else None
    ema = make_ema(model, tcfg) if resume_phase in (None, "sft") else None
    if resume_phase is not None:
        st = C.load_state(out / "state.pt", model=model, optimizer=opt if resume_phase == "sft" else None,
                          extra_modules={"distill_head": head, **({"ema": ema} if ema is not None else {})})
        start, phase, elapsed, cpu = st["step"], st["phase"], st["elapsed_s"], st.get("cpu_s", 0.0)
        if d.main:
            print(f"stage2: resuming {phase} at step {start}", file=sys.stderr)
    log = C.MetricsLog(out / "metrics.jsonl", d, elapsed, append=args.resume, cpu_before=cpu)
    if d.main:
        print(f"stage2: {int(train.has_teacher.sum())} records with a MiniLM teacher embedding", file=sys.stderr)
        print(f"stage2: {len(train)} train records ({sum(bool(t) for t in train.traces)} with traces, "
              f"{len(feats)} images), params {model.param_count()['total']:,}", file=sys.stderr)
    t_sft = time.perf_counter()
    if phase == "sft":
        sft(model, head, train, tcfg, out, d, log, start, opt, evals, seed, ema)
        if ema is not None:     # the averaged weights go on (GRPO, model.pt); the last iterate is kept
            if d.main:
                model.save(out / "sft_last.pt")
            model.load_state_dict(ema.module.state_dict())
        if d.main:
            model.save(out / "sft.pt")
        start = 0
    sft_minutes = (time.perf_counter() - t_sft) / 60
    if int(gcfg.get("steps", 0)) > 0:
        if d.on:
            torch.distributed.barrier()
        grpo.run(model, train, gcfg, out, d, log, start, seed, forward)
    summary = {"records": len(train), "images": len(feats), "sft_minutes_this_run": round(sft_minutes, 2),
               "elapsed_minutes": round(log.elapsed / 60, 2), **eval_sets(model, evals)}
    log.write(int(tcfg["steps"]) + int(gcfg.get("steps", 0)), "final", {k: v for k, v in summary.items()
                                                                         if isinstance(v, (int, float))})
    if d.on:   # ranks must hold identical weights after synchronous updates (tests/training/test_ddp.py)
        checksum = sum(float(p.double().sum()) for p in model.parameters())
        print(f"rank {d.rank} parameter checksum {checksum:.10e}", file=sys.stderr)
    if d.main:
        model.save(out / "model.pt")
        (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        print(json.dumps(summary), file=sys.stderr)
    C.teardown_distributed(d)
    return summary


if __name__ == "__main__":
    main()
