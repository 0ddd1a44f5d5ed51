"""Stage 1: vision-language pretraining of BitGen on rendered scenes and their captions.

    python training/stage1.py [--config training/configs/stage1.yaml] [--resume] [key=value ...]
    torchrun --nproc_per_node 2 training/stage1.py ...           (DDP, gloo on CPU)

Losses, per step (weights in the config):
- ITC (ALBEF): pooled text vs pooled image tokens, symmetric InfoNCE over the batch and a
  FIFO queue of earlier features; captions with the same text count as positives.
- ITM: match / no-match on the fused state (text attending to the image through the gated
  cross-attention), with one hard negative image per text and one hard negative text per
  image drawn from the ITC similarities.
- Caption modelling: next-token loss of the caption given the image (the tied output head).
- Text distillation: the model's pooled text encoding, projected to 384-d, is pulled towards
  all-MiniLM-L6-v2's sentence embedding (cosine) and its in-batch similarity structure (MSE
  of the similarity matrices) over generated tasks, facts, captions and the catalog, so the
  tiny encoder inherits MiniLM's semantic space and with it human wording it never saw.
- Memory: facts are written one-shot into an episode memory and read back with their own
  encoding (Larimar's reconstruction objective) plus the addressing KL.
Reports image->text and text->image R@1/R@5 on held-out pairs. Captions are COCO-style JSON
(the generator's captions.json, or any real caption file). Frozen vision features are cached.
Writes OUT/model.pt (stage 2's init), OUT/state.pt (resume), OUT/metrics.jsonl, OUT/summary.json,
and OUT/teacher_keys.txt (the hashes of the distilled texts: stage 2's teacher set).
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from bitgen_core.data.loaders import load_coco_captions, load_task_records
from bitgen_core.fusion import ITCHead, ITMHead
from training import common as C

DEFAULT_CONFIG = Path(__file__).with_name("configs") / "stage1.yaml"
TEACHER_DIM = 384


class Heads(nn.Module):
    """Pretraining-only heads (not exported): ITC, ITM and the distillation projection."""

    def __init__(self, d: int, queue: int):
        super().__init__()
        self.itc = ITCHead(d, proj_dim=64, queue_size=queue)
        self.itm = ITMHead(d)
        self.distill = nn.Linear(d, TEACHER_DIM)


def fused(model, ids, mask, img_tok):
    """[SINK] text through the backbone with cross-attention to the image -> (states, pooled)."""
    sink = torch.full_like(ids[:, :1], model.tokenizer.sink_id)
    h, _, _ = model.backbone(model.embed(torch.cat([sink, ids], 1)), img_tok)
    m = mask.unsqueeze(-1).to(h.dtype)
    return h, (h[:, 1:] * m).sum(1) / m.sum(1).clamp(min=1.0)


def caption_lm(model, h, ids, mask):
    """Next-token loss of the caption: position t (SINK = 0) predicts caption token t."""
    logits = model.lm_head(h[:, :-1]).float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1), reduction="none").view_as(
        ids).mul(mask).sum() / mask.sum().clamp(min=1)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Cosine to the teacher + MSE between the student's and teacher's similarity matrices."""
    s, t = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    return (1 - (s * t).sum(-1)).mean() + F.mse_loss(s @ s.t(), t @ t.t())


def memory_loss(model, fact_texts: list[str], n_facts: int):
    """Write episodes of n facts, read each back with its own encoding: cosine error + KL."""
    e = len(fact_texts) // n_facts
    if e == 0:
        return torch.zeros(()), torch.zeros(())
    ids, mask = model._tokens(fact_texts[:e * n_facts], model.config.max_task_tokens)
    z = model.memory_encoding(ids, mask).view(e, n_facts, -1)
    mem = model.memory
    matrix, _, w = mem.write_episode(z, sample=True)
    z_read, _ = mem.read(matrix, z, sample=True)
    return (1 - F.cosine_similarity(z_read, z, dim=-1)).mean(), mem.addressing_kl(w)


@torch.no_grad()
def retrieval(model, heads, pairs, feats) -> dict:
    """i2t / t2i R@1, R@5 on held-out pairs; a hit is any item with the gold caption text."""
    if len(pairs) < 2:
        return {}
    was = model.training
    model.eval()
    img = heads.itc.embed_image(C.image_tokens(model, torch.stack([feats[p] for p, _ in pairs])).mean(1))
    ids, mask = model._tokens([c for _, c in pairs], model.config.max_task_tokens)
    txt = heads.itc.embed_text(model.encode_text(ids, mask))
    caps = [c for _, c in pairs]
    same = torch.tensor([[a == b for b in caps] for a in caps])
    sim = img @ txt.t()
    out = {}
    for name, s in (("i2t", sim), ("t2i", sim.t())):
        rank = s.argsort(dim=1, descending=True)
        for k in (1, 5):
            hit = same.gather(1, rank[:, :k]).any(1).float().mean()
            out[f"{name}_r{k}"] = float(hit)
    model.train(was)
    return out


def distill_corpus(cfg: dict, catalog, seed: int) -> tuple[list[str], list[str]]:
    """(tasks, facts) of the task records: texts to distil on and facts for the memory loss."""
    dcfg = cfg["data"]
    tasks, facts = set(), set()
    for path in dcfg.get("distill_records") or []:
        for r in load_task_records(C.resolve(path), catalog):
            tasks.add(r["task"])
            facts.update(f["text"] for f in r["facts"])
    tasks, facts = sorted(tasks), sorted(facts)
    limit = int(dcfg.get("max_distill_texts", 0))
    if limit and len(tasks) > limit:
        tasks = random.Random(seed).sample(tasks, limit)
    return tasks, facts


def main(argv=None) -> dict:
    args, cfg, d, seed = C.start_run(__doc__.split("\n\n")[0], DEFAULT_CONFIG, argv,
                                     override_example="stage1.steps=50")
    s1, dcfg = cfg["stage1"], cfg["data"]
    out = C.resolve(cfg["out"])
    model = C.build_model(cfg)
    heads = Heads(model.config.d_model, int(s1["itc_queue"]))
    C.broadcast_parameters(model, d)
    C.broadcast_parameters(heads, d)
    C.seed_everything(seed + d.rank)
    C.trainable(model, bool(s1.get("freeze_embeddings", True)))
    catalog, tok = model.catalog, model.tokenizer

    # --- data: caption pairs (+ held-out), distillation texts, facts -------------------------
    pairs = [pr for path in dcfg["captions"] for pr in load_coco_captions(C.resolve(path))]
    random.Random(seed).shuffle(pairs)
    n_held = min(int(s1["held_out_pairs"]), len(pairs) // 5)
    held, pairs = pairs[:n_held], pairs[n_held:]
    feats = C.vision_features(model, [p for p, _ in pairs + held], C.resolve(dcfg["feature_cache"]), d)
    cap_id = {c: i for i, c in enumerate(sorted({c for _, c in pairs}))}
    tasks, facts = distill_corpus(cfg, catalog, seed)
    texts = tasks + facts + sorted(set(cap_id)) + catalog.texts()
    teacher = torch.from_numpy(C.minilm_embeddings(texts, C.resolve(dcfg["text_cache"]), int(cfg.get("threads", 1))))
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        C.write_teacher_keys(out, texts)       # stage 2 distils towards exactly these
        print(f"stage1: {len(pairs)} pairs ({n_held} held out), {len(feats)} images, {len(texts)} distillation "
              f"texts, {len(facts)} facts", file=sys.stderr)

    params = [p for p in model.parameters() if p.requires_grad] + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=float(s1["lr"]), weight_decay=float(s1["weight_decay"]))
    start, elapsed, cpu = 0, 0.0, 0.0
    if args.resume and (out / "state.pt").exists():
        st = C.load_state(out / "state.pt", model=model, optimizer=opt, extra_modules={"heads": heads})
        start, elapsed, cpu = st["step"], st["elapsed_s"], st.get("cpu_s", 0.0)
        if d.main:
            print(f"stage1: resuming at step {start}", file=sys.stderr)
    log = C.MetricsLog(out / "metrics.jsonl", d, elapsed, append=args.resume, cpu_before=cpu)
    w = s1["weights"]
    steps, bs, dbs = int(s1["steps"]), int(s1["batch_size"]), int(s1["distill_batch"])
    sampler = DistributedSampler(range(len(pairs)), num_replicas=d.world, rank=d.rank, shuffle=True, seed=seed)
    per_epoch = max(1, len(sampler) // bs)
    bar = C.progress(steps, "stage1", d, initial=start)
    acc: dict[str, list] = {}
    for step in range(start, steps):
        epoch, k = divmod(step, per_epoch)
        sampler.set_epoch(epoch)
        idx = list(sampler)[k * bs:(k + 1) * bs]
        rng = np.random.default_rng([seed, step, d.rank])
        C.set_lr(opt, C.cosine_lr(step, steps, int(s1["warmup"]), float(s1["lr"])))
        batch = [pairs[i] for i in idx]
        img = C.image_tokens(model, torch.stack([feats[p] for p, _ in batch]))
        ids, mask = model._tokens([c for _, c in batch], model.config.max_task_tokens)
        cid = torch.tensor([cap_id[c] for _, c in batch])
        itc, sim_i2t, sim_t2i = heads.itc(model.encode_text(ids, mask), img.mean(1), ids=cid)
        losses = {"itc": itc}
        if len(set(cid.tolist())) > 1:
            neg_img, neg_txt = ITMHead.sample_hard_negatives(sim_i2t, sim_t2i, ids=cid)
            h, pos = fused(model, ids, mask, img)
            _, neg_a = fused(model, ids, mask, img[neg_img])
            _, neg_b = fused(model, ids[neg_txt], mask[neg_txt], img)
            losses["itm"] = heads.itm.loss(pos, neg_a, neg_b)
            r = int(s1["caption_rows"])
            losses["caption"] = caption_lm(model, h[:r], ids[:r], mask[:r])
        pick = rng.choice(len(texts), size=min(dbs, len(texts)), replace=False)
        t_ids, t_mask = model._tokens([texts[i] for i in pick], model.config.max_task_tokens)
        losses["distill"] = distill_loss(heads.distill(model.encode_text(t_ids, t_mask)), teacher[pick])
        if facts:
            nf = int(s1["memory_facts"])
            chosen = [facts[i] for i in rng.choice(len(facts), size=min(len(facts), 4 * nf), replace=False)]
            losses["memory"], losses["memory_kl"] = memory_loss(model, chosen, nf)
        loss = sum(float(w[k]) * v for k, v in losses.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        C.average_gradients(params, d)
        torch.nn.utils.clip_grad_norm_(params, float(s1["grad_clip"]))
        opt.step()
        bar.update(1)
        for k2, v in {"loss": loss, **losses}.items():
            acc.setdefault(k2, []).append(float(v.detach()))
        if (step + 1) % int(s1["log_every"]) == 0 or step + 1 == steps:
            m = C.all_mean({k2: float(np.mean(v)) for k2, v in acc.items()}, d)
            m["temp"] = float(heads.itc.temperature.detach())
            if step + 1 == steps or (step + 1) % (5 * int(s1["log_every"])) == 0:
                m.update(retrieval(model, heads, held, feats))
            log.write(step + 1, "stage1", m)
            bar.set_postfix(loss=f"{m['loss']:.3f}", distill=f"{m['distill']:.3f}")
            acc = {}
        if d.main and ((step + 1) % int(s1["ckpt_every"]) == 0 or step + 1 == steps):
            C.save_state(out / "state.pt", model=model, optimizer=opt, step=step + 1, phase="stage1",
                         log=log, extra_modules={"heads": heads})
    bar.close()
    summary = {"pairs": len(pairs), "held_out_pairs": len(held), "images": len(feats),
               "distill_texts": len(texts), "elapsed_minutes": round(log.elapsed / 60, 2),
               **retrieval(model, heads, held, feats)}
    if d.main:
        model.save(out / "model.pt")
        (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        print(json.dumps(summary), file=sys.stderr)
    C.teardown_distributed(d)
    return summary


if __name__ == "__main__":
    main()
