"""BitGenModel: the tiny ternary vision-language robot selector, top to bottom like its data flow.

    image ──► vision encoder ──► image tokens ─────────────────────────────┐ (cross-attn, upper half)
    facts ──► encode_text ──► z ──► EpisodicMemory.write                    │
    task  ──► encode_text ──► z_q ─► memory read ─► n_memory_tokens prefix  │
    [SINK][memory tokens][task tokens][SEP] ──► causal BitLinear backbone ◄─┘
        state at [SEP] ──► Tiny-R1 reasoning ──► RobotSelector ──► robot logits (sigmoid each)
        [SEP] ... ──► same backbone, token by token ──► reasoning trace ... [EOS]

Sequences are laid out contiguously from position 0 and padded on the right, so a row in a
padded training batch sees exactly the positions it sees alone at run time (causal attention
never looks right). Position 0 holds the learned [SINK] token: StreamingLLM's attention sink,
kept forever by the SinkKVCache together with the next n_sink-1 tokens.

Export pieces (each a pure tensor function, no data-dependent Python control flow):
`encode_image`, `encode_text` + `memory_key`, `prefill(prompt_ids, z_read, image_tokens,
image_mask)`, `decode_step(ids, past_k, past_v, image_tokens, image_mask)` (keys pre-rotary,
stacked over layers), `select_head(sep_state, robot_emb)`. The embedding and the tied output
head are the only full-precision linears; everything else is BitLinear.
"""
from __future__ import annotations

import copy
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bitgen_core.attention import CausalSelfAttention
from bitgen_core.catalog import RobotCatalog
from bitgen_core.config import PRESETS, BitGenConfig
from bitgen_core.errors import InputError, ModelLoadError
from bitgen_core.fusion import GatedCrossAttention
from bitgen_core.generation import Generation
from bitgen_core.memory import EpisodicMemory, TokenSpecificity
from bitgen_core.quant import BitLinear, RMSNorm, set_quantization
from bitgen_core.reasoning import TinyR1Reasoner
from bitgen_core.selector import RobotSelector
from bitgen_core.store import atomic_write_bytes
from bitgen_core.tokenizer import BitGenTokenizer, minilm_init_embeddings
from bitgen_core.vision import build_vision_encoder

CHECKPOINT_FORMAT = "bitgen-checkpoint-v1"
IGNORE = -100


@dataclass
class FactEpisodes:
    """Training-time memory: B episodes of N facts, tokenised: ids/mask (B, N, Lf).

    A fact whose mask row is all 0 is absent (episodes may hold different numbers of facts)."""
    ids: torch.Tensor
    mask: torch.Tensor


class SwiGLU(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.up = BitLinear(d, 2 * hidden)
        self.down = BitLinear(hidden, d)   # its RMSNorm is BitNet b1.58's sub-LN before W_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.up(x).chunk(2, dim=-1)
        return self.down(F.silu(a) * b)


class Block(nn.Module):
    """Self-attention (sink-cache decode API), gated cross-attention to the image, SwiGLU."""

    def __init__(self, cfg: BitGenConfig, cross: bool):
        super().__init__()
        self.attn = CausalSelfAttention(cfg.d_model, cfg.n_heads, cfg.rope_base)
        self.xattn = GatedCrossAttention(cfg.d_model, cfg.n_heads) if cross else None
        self.ffn = SwiGLU(cfg.d_model, cfg.ffn_hidden)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, image_tokens=None, image_mask=None, past_k=None, past_v=None):
        if past_k is None:
            a, k, v = self.attn(x, return_kv=True)
        else:
            a, k, v = self.attn.decode(x, past_k, past_v)
        x = x + self.drop(a)
        if self.xattn is not None and image_tokens is not None:
            x = self.xattn(x, image_tokens, image_mask)
        return x + self.drop(self.ffn(x)), k, v


class BitGenModel(Generation, nn.Module):
    def __init__(self, config: BitGenConfig, catalog: RobotCatalog | None = None,
                 tokenizer: BitGenTokenizer | None = None, pretrained: bool = True,
                 vision_options: dict | None = None):
        super().__init__()
        cfg = self.config = config
        self.catalog = catalog if catalog is not None else RobotCatalog.load()
        self.tokenizer = tokenizer if tokenizer is not None else BitGenTokenizer.load()
        if self.tokenizer.vocab_size != cfg.vocab_size:
            raise InputError(f"tokenizer has {self.tokenizer.vocab_size} tokens, config says {cfg.vocab_size}")
        # 1. vision: camera frame -> n_image_tokens tokens of width d
        opts = dict(vision_options or {})
        if cfg.vision_kind == "efficientnet_lite0":
            opts.setdefault("pretrained", pretrained)
        if cfg.vision_kind in ("efficientnet_lite0", "ternary_student"):
            opts.setdefault("image_size", cfg.image_size)
        self.vision = (None if cfg.vision_kind == "none"
                       else build_vision_encoder(cfg.vision_kind, cfg.d_model, cfg.n_image_tokens, **opts))
        # 2. token embeddings, seeded with MiniLM's lexical knowledge (PCA to d)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.embed.weight, std=cfg.d_model ** -0.5)   # unit-norm rows, like the MiniLM init
        if pretrained:
            with torch.no_grad():
                self.embed.weight.copy_(torch.from_numpy(minilm_init_embeddings(cfg.d_model, cfg.vocab_size)))
        # 3. episodic memory: pooled text -> z (C); a read -> n_memory_tokens prefix tokens
        self.memory = EpisodicMemory(cfg.n_memory_slots, cfg.memory_dim, gate=cfg.memory_gate,
                                     gate_threshold=cfg.memory_gate_threshold,
                                     address_dims=cfg.memory_address_dims, recall=cfg.memory_recall)
        self.memory_key = BitLinear(cfg.d_model * (2 if cfg.memory_lexical else 1), cfg.memory_dim)
        # no input norm by default: the read's magnitude carries the facts' relevance (config)
        self.memory_prefix_proj = BitLinear(cfg.memory_dim, cfg.n_memory_tokens * cfg.d_model,
                                            norm=cfg.memory_read_norm)
        self.memory_pos = nn.Parameter(0.02 * torch.randn(cfg.n_memory_tokens, cfg.d_model))
        # 4. backbone
        self.blocks = nn.ModuleList(Block(cfg, i in cfg.cross_attn_layers) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model)
        # 5. reasoning and selection
        self.reasoner = TinyR1Reasoner(cfg.d_model, cfg.reasoning_max_steps, cfg.halting_eps,
                                       cfg.halting_bias_init)
        self.selector = RobotSelector(cfg.d_model, cfg.robot_embed_dim, cfg.selector_scale_init,
                                      fact_dim=cfg.memory_dim if cfg.memory_robot else 0)
        # 6. trace head: tied to the embedding unless configured otherwise
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        # 7. the memory read's scope: per-token specificity (config.memory_scope, memory_np
        # module doc); built last, so the other modules' seeded init does not depend on it
        self.memory_scope = TokenSpecificity(cfg.d_model, cfg.vocab_size) if cfg.memory_scope else None
        self._robot_cache: tuple | None = None
        if not cfg.quantize:     # the full-precision twin, for measuring what ternary costs
            set_quantization(self, False)

    # ------------------------------------------------------------------ 1. image
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (B, 3, S, S) -> image tokens (B, n_image_tokens, d)."""
        if self.vision is None:
            raise InputError("this model has no vision encoder (vision_kind: none)")
        return self.vision(images)

    def preprocess_image(self, image: np.ndarray) -> torch.Tensor:
        """One HxWx3 uint8 RGB frame -> (1, 3, S, S) as the vision encoder expects."""
        from bitgen_core.image_preprocess import preprocess
        v = self.vision
        if v is None:
            raise InputError("this model has no vision encoder (vision_kind: none)")
        return torch.from_numpy(preprocess(image, v.image_size, v.preprocess_mean, v.preprocess_std))[None]

    # ------------------------------------------------------------------ 2. text -> z
    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean-pooled backbone states over the text, run as [SINK] text (no memory, no image).

        ids/mask (B, L) right-padded -> (B, d). Used for facts, memory queries and the robot
        descriptions, so all three live in the space the backbone learns."""
        sink = torch.full_like(ids[:, :1], self.tokenizer.sink_id)
        h, _, _ = self.backbone(self.embed(torch.cat([sink, ids], dim=1)))
        m = mask.to(h.dtype).unsqueeze(-1)
        return (h[:, 1:] * m).sum(1) / m.sum(1).clamp(min=1.0)

    def memory_encoding(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Fact / memory-query encoding z (B, C): `memory_key` of the pooled text state, and
        with `config.memory_lexical` also of the max-pooled token embeddings (memory_features)."""
        emb = self.embed(ids) if self.config.memory_lexical else None   # only the lexical key reads it
        return self.memory_key(self.memory_features(self.encode_text(ids, mask), emb, mask))

    def memory_features(self, pooled: torch.Tensor, emb: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        """memory_key's input: pooled (B, d), or with memory_lexical [pooled, max over the
        text's token embeddings emb (B, L, d) where mask > 0] (B, 2d). The export's text
        encoder graph calls this too, so runtime and torch share one definition."""
        if not self.config.memory_lexical:
            return pooled
        lexical = emb.masked_fill(mask.unsqueeze(-1) <= 0, -1.0e4).amax(dim=1)
        return torch.cat([pooled, lexical], dim=-1)

    def read_memory(self, z_query: torch.Tensor, memory=None, query_tokens=None) -> tuple[torch.Tensor, torch.Tensor]:
        """z_query (B, C) -> (z_read (B, C), addressing KL). `memory` is one of:
        None (nothing written: read the prior), an EpisodicMemory holding deployment facts
        (scoped by `query_tokens`, one list of token ids per row, memory_np module doc), FactEpisodes
        (training: one-shot write of each row's facts), or memories (B, K, C)."""
        kl = z_query.new_zeros(())
        mem = self.memory
        if memory is None:
            return mem.address(z_query) @ mem.prior_mean, kl
        if isinstance(memory, EpisodicMemory):
            z = z_query.detach().double()
            if query_tokens is not None:     # the scope reads one query at a time
                return torch.stack([memory.read_fact(zi, t) for zi, t in zip(z, query_tokens)]).to(z_query.dtype), kl
            return memory.read_fact(z).to(z_query.dtype), kl
        if isinstance(memory, FactEpisodes):
            z_read, kl, _ = self.read_episodes(z_query, memory)
            return z_read, kl
        z_read, _ = mem.read(memory, z_query.unsqueeze(1), sample=self.training)
        return z_read.squeeze(1), kl

    def fact_scope(self, facts: FactEpisodes, task_ids: torch.Tensor, task_mask: torch.Tensor) -> torch.Tensor:
        """S (B, N): the summed specificity of each fact's tokens that its row's task does not
        contain; the fact's scope is r = exp(-S) (memory_np.scope_relevance, same numbers)."""
        alpha = self.memory_scope(self.embed.weight, facts.ids) * facts.mask.to(self.embed.weight.dtype)
        match = facts.ids.unsqueeze(-1) == task_ids[:, None, None, :]        # (B, N, Lf, L)
        found = (match & task_mask.bool()[:, None, None, :]).any(-1)
        return (alpha * (~found).to(alpha.dtype)).sum(-1)

    def read_episodes(self, z_query: torch.Tensor, facts: FactEpisodes, scale: torch.Tensor | None = None):
        """Training read: write each row's facts one-shot, read with its query; with `scale`
        (B, N) each fact's share is multiplied by it (the scope r, memory_np module doc).

        -> (z_read (B, C), addressing KL, coefficients (B, N)): each fact's weight a_i in the
        read (EpisodicMemory.read_coefficients, on the mean addresses; 0 for absent facts)."""
        mem = self.memory
        b, n, lf = facts.ids.shape
        present = facts.mask.any(-1)
        z_facts = self.memory_encoding(facts.ids.view(b * n, lf), facts.mask.view(b * n, lf)).view(b, n, -1)
        keep = present.unsqueeze(-1).to(z_facts.dtype)
        w_facts = mem.address(z_facts) * keep
        kl = mem.addressing_kl(w_facts, present)
        coef = mem.read_coefficients(mem.address(z_query), w_facts)
        if mem.gate > 0 or mem.recall or scale is not None:   # decomposed read, sampled addresses
            z_read, _ = mem.read_gated(mem.address(z_query, self.training),
                                       mem.address(z_facts, self.training) * keep, z_facts, present, scale)
            return z_read, kl, coef
        memory_matrix, _, _ = mem.write_episode(z_facts, present, sample=self.training)
        z_read, _ = mem.read(memory_matrix, z_query.unsqueeze(1), sample=self.training)
        return z_read.squeeze(1), kl, coef

    def memory_tokens(self, z_read: torch.Tensor) -> torch.Tensor:
        """(B, C) memory read -> (B, n_memory_tokens, d) prefix tokens."""
        b = z_read.shape[0]
        return self.memory_pos + self.memory_prefix_proj(z_read).view(b, self.config.n_memory_tokens, -1)

    def new_memory(self) -> EpisodicMemory:
        """A fresh deployment memory with this model's keys, learned prior and (with
        config.memory_scope) specificity table, no facts."""
        mem = copy.deepcopy(self.memory)
        mem.specificity = None if self.memory_scope is None else self.memory_scope.table(self.embed.weight)
        mem.reset()
        return mem

    def write_fact(self, memory: EpisodicMemory, key: str, text: str) -> str:
        """Write one fact into a deployment memory, with its token ids for the read's scope."""
        return memory.write(self.fact_encoding(text), key,
                            tokens=self.tokenizer.encode(text, self.config.max_task_tokens))

    @torch.no_grad()
    def fact_encoding(self, text: str) -> torch.Tensor:
        """z (C,) of one fact, to `EpisodicMemory.write(z, key)` at deployment."""
        ids, mask = self._tokens([text], self.config.max_task_tokens)
        return self.memory_encoding(ids, mask)[0]

    # ------------------------------------------------------------------ 3. backbone
    def backbone(self, x, image_tokens=None, image_mask=None, past_k=None, past_v=None):
        """Embedded sequence (B, T, d) -> (final-normed states, k, v (n_layers, B, H, T, hd)).

        With past_k/past_v (n_layers, B, H, L, hd), the T tokens continue that cache."""
        ks, vs = [], []
        for i, block in enumerate(self.blocks):
            pk = None if past_k is None else past_k[i]
            pv = None if past_v is None else past_v[i]
            x, k, v = block(x, image_tokens, image_mask, pk, pv)
            ks.append(k)
            vs.append(v)
        return self.norm(x), torch.stack(ks), torch.stack(vs)

    def embed_prompt(self, prompt_ids: torch.Tensor, z_read: torch.Tensor) -> torch.Tensor:
        """Embed [SINK][M placeholders][...] with the memory tokens at positions 1..M."""
        m = self.config.n_memory_tokens
        x = self.embed(prompt_ids)
        return torch.cat([x[:, :1], self.memory_tokens(z_read), x[:, 1 + m:]], dim=1)

    def prefill(self, prompt_ids, z_read, image_tokens=None, image_mask=None):
        """(B, L) prompt ids + memory read -> (states (B, L, d), k, v): the prefill graph."""
        return self.backbone(self.embed_prompt(prompt_ids, z_read), image_tokens, image_mask)

    def decode_step(self, ids, past_k, past_v, image_tokens=None, image_mask=None):
        """ids (B, T) after a cache (n_layers, B, H, L, hd) -> (logits (B, T, V), k_new, v_new)."""
        h, k, v = self.backbone(self.embed(ids), image_tokens, image_mask, past_k, past_v)
        return self.lm_head(h), k, v

    # ------------------------------------------------------------------ 4. reasoning + selector
    def select_head(self, sep_state: torch.Tensor, robot_emb: torch.Tensor, fact: torch.Tensor | None = None):
        """(B, d) state at [SEP] x (R, D) robot embeddings -> (logits (B, R), reasoning output);
        `fact` (B, C): the facts' part of the memory read (`fact_part`), for config.memory_robot."""
        r = self.reasoner(sep_state)
        return self.selector(r.state, robot_emb, fact), r

    def fact_part(self, z_query: torch.Tensor, z_read: torch.Tensor) -> torch.Tensor | None:
        """The facts' part of a memory read: z_read minus what an empty memory returns for the
        same query (None without config.memory_robot). Zero when nothing is written."""
        if self.selector.fact_proj is None:
            return None
        return z_read - self.read_memory(z_query.detach(), None)[0].to(z_read.dtype)

    def robot_embeddings(self, catalog: RobotCatalog | None = None) -> torch.Tensor:
        """(R, D) embeddings of the catalog descriptions, encoded by the model's own encoder.

        Recomputed (with gradients) while training; otherwise cached per catalog and per
        parameter version, so an optimizer step or a load invalidates it."""
        catalog = catalog or self.catalog
        version = sum(p._version for p in self.parameters())
        key = (catalog.fingerprint(), version, self.training)
        if torch.is_grad_enabled() and self.training:
            return self._robot_embeddings(catalog)
        if self._robot_cache is None or self._robot_cache[0] != key:
            with torch.no_grad():
                self._robot_cache = (key, self._robot_embeddings(catalog))
        return self._robot_cache[1]

    def _robot_embeddings(self, catalog: RobotCatalog) -> torch.Tensor:
        ids, mask = self._tokens(catalog.texts(), self.config.cache_len - 1)
        return self.selector.robot_embeddings(self.encode_text(ids, mask))

    def set_catalog(self, catalog: RobotCatalog) -> None:
        """Score a different fleet (e.g. one more robot type): no code change, no retraining."""
        self.catalog = catalog
        self._robot_cache = None

    # ------------------------------------------------------------------ training forward
    def layout(self, task_ids, task_mask, trace_ids=None, trace_mask=None):
        """Contiguous right-padded rows [SINK][M][task][SEP]([trace][EOS]) -> (ids, sep_pos, trace_pos, trace_tgt)."""
        tok, cfg = self.tokenizer, self.config
        b, t = task_ids.shape
        p = cfg.prefix_len
        n = task_mask.long().sum(1)
        n_trace = 0 if trace_ids is None else trace_ids.shape[1] + 1
        ids = torch.full((b, p + t + 1 + n_trace), tok.pad_id, dtype=torch.long, device=task_ids.device)
        ids[:, 0] = tok.sink_id
        ids[:, p:p + t] = torch.where(task_mask.bool(), task_ids, torch.full_like(task_ids, tok.pad_id))
        sep_pos = p + n
        ids.scatter_(1, sep_pos[:, None], tok.sep_id)
        if trace_ids is None:
            return ids, sep_pos, None, None
        tmask = trace_mask if trace_mask is not None else torch.ones_like(trace_ids)
        lens = tmask.long().sum(1)
        tgt = torch.full((b, n_trace), IGNORE, dtype=torch.long, device=ids.device)
        tgt[:, :-1] = torch.where(tmask.bool(), trace_ids, torch.full_like(trace_ids, IGNORE))
        tgt.scatter_(1, lens[:, None], tok.eos_id)
        trace_pos = sep_pos[:, None] + torch.arange(n_trace, device=ids.device)   # predicting positions
        ids.scatter_(1, trace_pos + 1, torch.where(tgt == IGNORE, torch.full_like(tgt, tok.pad_id), tgt))
        return ids, sep_pos, trace_pos, tgt

    def forward(self, task_ids, task_mask, images=None, memory=None, trace_ids=None, trace_mask=None,
                image_tokens=None, image_mask=None, robot_emb=None) -> dict:
        """Batch forward for training and evaluation; returns a dict of tensors:
        robot_logits (B, R), ponder_cost, steps (B,), state (B, d), memory_kl, memory_coef
        (B, N) with FactEpisodes (each fact's weight in the read, else None), and with
        trace_ids: lm_loss (mean over trace tokens + EOS) and trace_logprobs (B, Ttrace+1)
        with trace_target (IGNORE where padded), as GRPO needs."""
        if images is not None:
            image_tokens = self.encode_image(images)
        z_query = self.memory_encoding(task_ids, task_mask)
        memory_coef = memory_scope = None
        if isinstance(memory, FactEpisodes):
            scale = None
            if self.memory_scope is not None:   # trained by its own loss (stage2 scope_weight)
                memory_scope = self.fact_scope(memory, task_ids, task_mask)
                scale = torch.exp(-memory_scope).detach()
            z_read, memory_kl, memory_coef = self.read_episodes(z_query, memory, scale)
            fact = self.fact_part(z_query, z_read)
            if fact is not None:    # rows without facts: exactly none (the read samples addresses)
                fact = fact * memory.mask.any(-1).any(-1, keepdim=True).to(fact.dtype)
        else:
            rows = None
            if isinstance(memory, EpisodicMemory) and memory.specificity is not None:
                rows = [i[m.bool()].tolist() for i, m in zip(task_ids, task_mask)]   # each row's tokens
            z_read, memory_kl = self.read_memory(z_query, memory, rows)
            fact = self.fact_part(z_query, z_read) if memory is not None else None
        ids, sep_pos, trace_pos, tgt = self.layout(task_ids, task_mask, trace_ids, trace_mask)
        h, _, _ = self.prefill(ids, z_read, image_tokens, image_mask)
        sep_state = h[torch.arange(h.shape[0], device=h.device), sep_pos]
        logits, r = self.select_head(sep_state, robot_emb if robot_emb is not None else self.robot_embeddings(),
                                     fact)
        out = dict(robot_logits=logits, ponder_cost=r.ponder_cost, steps=r.steps, state=r.state,
                   sep_state=sep_state, memory_kl=memory_kl, z_query=z_query, z_read=z_read,
                   memory_coef=memory_coef, memory_scope=memory_scope)
        if trace_ids is not None:
            h_tr = h.gather(1, trace_pos.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
            logp = F.log_softmax(self.lm_head(h_tr).float(), dim=-1)
            valid = tgt != IGNORE
            tok_logp = logp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
            out.update(lm_loss=-(tok_logp.sum() / valid.sum().clamp(min=1)), trace_logprobs=tok_logp,
                       trace_target=tgt)
        return out

    def loss(self, out: dict, targets: torch.Tensor, lm_weight: float = 1.0, kl_weight: float = 0.0) -> torch.Tensor:
        """Selection BCE + tau * ponder cost (+ trace LM, + memory KL)."""
        total = self.selector.loss(out["robot_logits"], targets) + self.config.ponder_weight * out["ponder_cost"]
        if "lm_loss" in out:
            total = total + lm_weight * out["lm_loss"]
        return total + kl_weight * out["memory_kl"]

    # ------------------------------------------------------------------ bookkeeping
    def param_count(self) -> dict[str, int]:
        """Parameters per component (the tied head counts once, under embeddings)."""
        groups = dict(vision=self.vision, embeddings=self.embed,
                      memory=[self.memory, self.memory_key, self.memory_prefix_proj, self.memory_scope],
                      backbone=[self.blocks, self.norm], reasoning=self.reasoner, selector=self.selector)
        seen, counts = set(), {}
        for name, mods in groups.items():
            n = 0
            for m in (mods if isinstance(mods, list) else [mods]):
                for p in ([] if m is None else m.parameters()):
                    if id(p) not in seen:
                        seen.add(id(p))
                        n += p.numel()
            counts[name] = n
        counts["memory"] += self.memory_pos.numel()
        seen.add(id(self.memory_pos))
        counts["lm_head"] = sum(p.numel() for p in self.lm_head.parameters() if id(p) not in seen)
        counts["bitlinear"] = sum(m.weight.numel() for m in self.modules() if isinstance(m, BitLinear))
        counts["trainable"] = sum(p.numel() for p in self.parameters() if p.requires_grad)
        counts["total"] = sum(p.numel() for p in self.parameters())
        return counts

    def save(self, path: str | Path) -> None:
        """Config + catalog + tokenizer + state_dict in one file, written atomically."""
        buf = io.BytesIO()
        torch.save({"format": CHECKPOINT_FORMAT, "config": self.config.to_dict(),
                    "catalog": self.catalog.to_dict(), "tokenizer": self.tokenizer._tok.to_str(),
                    "state_dict": self.state_dict()}, buf)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path, map_location: str = "cpu", overrides: dict | None = None) -> "BitGenModel":
        """A saved model. `overrides` change config fields before the weights load (stage 2
        turning on `memory_scope` on a stage-1 checkpoint): modules they add keep their init."""
        from tokenizers import Tokenizer
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except FileNotFoundError:
            raise ModelLoadError(f"checkpoint not found: {path}") from None
        except Exception as e:
            raise ModelLoadError(f"checkpoint {path} is unreadable: {e}".splitlines()[0]) from None
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ModelLoadError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
        model = cls(BitGenConfig.from_dict({**ckpt["config"], **(overrides or {})}),
                    RobotCatalog.from_dict(ckpt["catalog"]),
                    BitGenTokenizer(Tokenizer.from_str(ckpt["tokenizer"])), pretrained=False)
        try:
            missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=not overrides)
        except RuntimeError as e:
            if not overrides:
                raise
            raise ModelLoadError(f"{path} does not fit the overridden config {overrides}: "
                                 f"{str(e).splitlines()[-1].strip()}") from None
        # modules an override may add: the scope, the selector's fact term
        added = ("memory_scope.", "selector.fact_proj.", "selector.fact_gate")
        if unexpected or any(not k.startswith(added) for k in missing):
            raise ModelLoadError(f"{path} does not fit the overridden config {overrides}: missing "
                                 f"{missing[:3]}, unexpected {unexpected[:3]}")
        model.memory.reset()   # the deployment state starts from the loaded prior
        return model.eval()


def print_param_counts(presets=tuple(PRESETS)) -> None:
    """Parameter counts per component for each preset (`python -c "from bitgen_core.model import
    print_param_counts; print_param_counts()"`)."""
    rows = {name: BitGenModel(BitGenConfig.preset(name), pretrained=False).param_count() for name in presets}
    keys = list(next(iter(rows.values())))
    print(f"{'component':<12}" + "".join(f"{n:>14}" for n in rows))
    for k in keys:
        print(f"{k:<12}" + "".join(f"{rows[n][k]:>14,}" for n in rows))
