"""GRPO (DeepSeekMath, Shao et al. 2024) for the reasoning trace: rewards, advantages, loss.

For each prompt the policy samples G traces. Each trace gets a scalar reward; advantages are
the rewards normalised within their group (no value network: the group is the baseline):

    A_i = (r_i - mean(r_group)) / (std(r_group) + eps)          (same A for every token of i)

The loss is PPO's clipped surrogate per token plus a KL penalty to the frozen SFT policy,
estimated per token with the unbiased, always non-negative k3 estimator (Schulman 2020) as in
DeepSeekMath eq. 4:

    ratio  = exp(logp_new - logp_old)
    L_clip = -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)
    KL_k3  = exp(logp_ref - logp_new) - (logp_ref - logp_new) - 1
    loss   = mean over a trace's tokens of (L_clip + beta * KL_k3), then mean over traces

Rewards follow issue 4: selection F1 of the robots the trace names after "selected:" against
the gold set, the trace being well-formed (the step grammar), and it being consistent with
the robots the selector actually chose.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bitgen_core.catalog import RobotCatalog
from bitgen_core.data.rules import parse_rationale


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """(P, G) rewards -> (P, G) advantages normalised within each prompt's group.

    A group whose traces all scored the same carries no signal: its advantages are 0."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    return (rewards - mean) / (std + eps)


def clipped_surrogate(logp_new: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor,
                      clip: float) -> torch.Tensor:
    """Per-token PPO loss (N, T): -min(ratio A, clip(ratio) A); adv is (N,) per trace."""
    ratio = torch.exp(logp_new - logp_old)
    a = adv.unsqueeze(-1)
    return -torch.min(ratio * a, ratio.clamp(1.0 - clip, 1.0 + clip) * a)


def kl_k3(logp_new: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi_new || pi_ref): exp(d) - d - 1 with d = ref - new (>= 0)."""
    d = logp_ref - logp_new
    return torch.exp(d) - d - 1.0


def masked_mean_per_row(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum(-1) / m.sum(-1).clamp(min=1.0)


def grpo_loss(logp_new, logp_old, logp_ref, adv, mask, clip: float = 0.2, beta: float = 0.04) -> dict:
    """Token-level GRPO objective over N traces of T tokens (mask marks real tokens).

    Returns {"loss", "policy", "kl", "clip_frac"} (scalars; loss carries the gradient)."""
    pol = clipped_surrogate(logp_new, logp_old, adv, clip)
    kl = kl_k3(logp_new, logp_ref)
    per_trace = masked_mean_per_row(pol + beta * kl, mask)
    with torch.no_grad():
        ratio = torch.exp(logp_new - logp_old)
        clipped = ((ratio - 1.0).abs() > clip).to(pol.dtype)
        clip_frac = masked_mean_per_row(clipped, mask).mean()
    return {"loss": per_trace.mean(), "policy": masked_mean_per_row(pol, mask).mean().detach(),
            "kl": masked_mean_per_row(kl, mask).mean().detach(), "clip_frac": clip_frac}


# --- rewards --------------------------------------------------------------------------------
@dataclass
class Reward:
    f1: float            # F1 of the robots after "selected:" vs the gold set (0 if unparsable)
    well_formed: float   # 1 when the trace follows the step grammar
    consistent: float    # 1 when its selected robots equal the selector's chosen set
    total: float


def set_f1(pred, gold) -> float:
    p, g = set(pred), set(gold)
    tp = len(p & g)
    if tp == 0:
        return 0.0
    return 2 * tp / (len(p) + len(g))


def trace_reward(trace: str, gold: list[str], chosen: list[str], catalog: RobotCatalog,
                 w_f1: float = 1.0, w_form: float = 0.5, w_consistent: float = 0.5) -> Reward:
    """Reward of one sampled trace. `gold` and `chosen` are catalog keys."""
    parsed = parse_rationale(trace, catalog)
    if parsed is None:
        return Reward(0.0, 0.0, 0.0, 0.0)
    named = parsed["selected"]
    f1 = set_f1(named, gold)
    consistent = float(set(named) == set(chosen))
    return Reward(f1, 1.0, consistent, w_f1 * f1 + w_form + w_consistent * consistent)


def chosen_robots(probs: torch.Tensor, keys: list[str], threshold: float = 0.5, max_k: int = 3) -> list[str]:
    """The robots the selector commits to (as training/metrics.py counts them): p >= threshold,
    at least the top-1, at most max_k, best first."""
    order = torch.argsort(probs, descending=True, stable=True).tolist()
    picked = [keys[i] for i in order if float(probs[i]) >= threshold][:max_k]
    return picked or [keys[order[0]]]


# --- the GRPO phase of stage 2 --------------------------------------------------------------
def _memory_for(model, facts: list[dict]):
    """A deployment memory holding the record's facts, as the runtime builds it."""
    if not facts:
        return None
    mem = model.new_memory()
    for f in facts:
        model.write_fact(mem, f["key"], f["text"])
    return mem


def _image(path: str | None):
    if not path:
        return None
    import numpy as np
    from PIL import Image
    return np.asarray(Image.open(path).convert("RGB"))


def rollout(model, rec: dict, group: int, max_tokens: int, temperature: float, generator, rewards: dict):
    """G sampled traces for one record with their rewards (policy in eval mode, no grad)."""
    mem = _memory_for(model, rec["facts"])
    image = _image(rec["image"])
    g = model.generate_trace(rec["task"], image, mem, max_new_tokens=max_tokens, temperature=temperature,
                             num_samples=group, generator=generator)
    probs = torch.tensor([model.select(rec["task"], image, mem)["probabilities"][k] for k in model.catalog.keys])
    chosen = chosen_robots(probs, model.catalog.keys)
    eos = model.tokenizer.eos_id
    scored = [trace_reward(t, rec["robots"], chosen, model.catalog, **rewards) for t in g["texts"]]
    # trace tokens before the first EOS; `ended` says whether EOS itself was sampled
    seqs = [row[m].tolist() for row, m in zip(g["ids"], g["mask"])]
    ended = [bool(s) and s[-1] == eos for s in seqs]
    seqs = [s[:-1] if e else s for s, e in zip(seqs, ended)]
    return seqs, ended, scored


def trace_logprobs(model, b: dict, rows: list[int], seqs: list[list[int]], ended: list[bool], forward):
    """Teacher-forced per-token log-probs (N, T+1) of the sampled traces and their mask."""
    from bitgen_core.model import IGNORE
    width = max(1, max(len(s) for s in seqs))
    pad = model.tokenizer.pad_id
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    tmask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        tmask[i, :len(s)] = 1
    sel = lambda t: None if t is None else t[rows]  # noqa: E731
    mem = b["memory"]
    if mem is not None:
        from bitgen_core.model import FactEpisodes
        mem = FactEpisodes(mem.ids[rows], mem.mask[rows])
    o = model(sel(b["task_ids"]), sel(b["task_mask"]), memory=mem, image_tokens=sel(b["image_tokens"]),
              image_mask=sel(b["image_mask"]), trace_ids=ids, trace_mask=tmask)
    mask = o["trace_target"] != IGNORE
    lens = tmask.sum(1)
    for i, e in enumerate(ended):    # an EOS the sampler never drew is not part of the action
        if not e:
            mask[i, lens[i]] = False
    return o["trace_logprobs"], mask


def run(model, train, gcfg: dict, out, d, log, start_step: int, seed: int, forward) -> None:
    """GRPO after SFT: rollouts on sampled prompts, group advantages, clipped updates, KL to SFT."""
    import copy
    import random

    import numpy as np
    from bitgen_core.model import BitGenModel
    from bitgen_core.quant import training_form
    from training import common as C

    sft_path = out / "sft.pt"
    ref = BitGenModel.load(sft_path) if sft_path.exists() else copy.deepcopy(model)
    ref.eval().requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(C.param_groups(params, model, 0.0), lr=float(gcfg["lr"]))
    if start_step and (out / "state.pt").exists():
        opt.load_state_dict(torch.load(out / "state.pt", weights_only=False)["optimizer"])
    steps, P, G = int(gcfg["steps"]), int(gcfg["prompts"]), int(gcfg["group"])
    rewards = dict(w_f1=float(gcfg["reward_f1"]), w_form=float(gcfg["reward_form"]),
                   w_consistent=float(gcfg["reward_consistent"]))
    pool = [i for i, t in enumerate(train.traces) if t]
    bar = C.progress(steps, "stage2 grpo", d, initial=start_step)
    for step in range(start_step, steps):
        rng = random.Random(f"{seed}:grpo:{step}:{d.rank}")
        gen = torch.Generator().manual_seed(rng.randrange(2**31))
        idx = rng.sample(pool, min(P, len(pool)))
        b = train.batch(idx)
        model.eval()
        seqs, ended, scored, rows = [], [], [], []
        with torch.no_grad(), training_form():   # the numbers the gradient pass below sees
            for j, i in enumerate(idx):
                s, e, r = rollout(model, train.records[i], G, int(gcfg["max_tokens"]), float(gcfg["temperature"]),
                                  gen, rewards)
                seqs += s
                ended += e
                scored += r
                rows += [j] * G
        total = torch.tensor([r.total for r in scored]).view(len(idx), G)
        adv = group_advantages(total).view(-1)
        with torch.no_grad(), training_form():   # so the first epoch's ratio is exactly 1
            old, mask = trace_logprobs(model, b, rows, seqs, ended, forward)
            ref_lp, _ = trace_logprobs(ref, b, rows, seqs, ended, forward)
        for _ in range(int(gcfg["ppo_epochs"])):
            b = train.batch(idx)          # fresh graph: image tokens carry the projection's gradient
            new, _ = trace_logprobs(model, b, rows, seqs, ended, forward)
            parts = grpo_loss(new, old, ref_lp, adv, mask, float(gcfg["clip"]), float(gcfg["kl_beta"]))
            loss = parts["loss"]
            if float(gcfg.get("sft_weight", 0)) > 0:   # keep the selector on its SFT answers
                model.train()
                o = forward(model, b)
                loss = loss + float(gcfg["sft_weight"]) * model.selector.loss(o["robot_logits"], b["targets"])
                model.eval()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            C.average_gradients(params, d)
            torch.nn.utils.clip_grad_norm_(params, float(gcfg["grad_clip"]))
            opt.step()
        model.train()
        bar.update(1)
        m = C.all_mean({"reward": float(total.mean()), "reward_f1": float(np.mean([r.f1 for r in scored])),
                        "well_formed": float(np.mean([r.well_formed for r in scored])),
                        "consistent": float(np.mean([r.consistent for r in scored])),
                        "grpo_loss": float(parts["loss"].detach()), "kl": float(parts["kl"]),
                        "clip_frac": float(parts["clip_frac"])}, d)
        if (step + 1) % int(gcfg["log_every"]) == 0 or step + 1 == steps:
            log.write(step + 1, "grpo", m)
            bar.set_postfix(reward=f"{m['reward']:.2f}", kl=f"{m['kl']:.3f}")
        if d.main and ((step + 1) % int(gcfg["ckpt_every"]) == 0 or step + 1 == steps):
            C.save_state(out / "state.pt", model=model, optimizer=opt, step=step + 1, phase="grpo",
                         log=log)
    bar.close()
