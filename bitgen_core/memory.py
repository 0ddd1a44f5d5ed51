"""EpisodicMemory: Larimar's generative parametric memory in torch (training + deployment).

The math is documented in `memory_np.py` (the torch-free twin the runtime uses); both are
tested on the same inputs. In short: fixed keys A address a fact z by ridge least squares
(w = z A^T (A A^T + beta I)^-1), the memory is the regularised least-squares posterior mean
M = (lam I + W^T W)^-1 (lam M0 + W^T Z), written one shot or sequentially
(C_i = C_{i-1} + alpha W^T W, M_i = M_{i-1} + alpha C_i^-1 W^T (Z - W M_{i-1}), alpha = -1
forgets exactly), and read as z_r = w M.

Training (batched episodes, B episodes x N facts, float32, differentiable w.r.t. the
encodings and the learned prior mean M0):
    M, prec, w_write = mem.write_episode(z_facts, mask)      # closed form == sequential form
    z_read, w_read   = mem.read(M, z_queries, sample=True)
    loss += beta_kl * mem.addressing_kl(w_read)
KL term (our choice, following Larimar): the addressing weights have posterior
q(w | z) = N(w_bar(z), sigma_w^2 I) with w_bar the least-squares address and a fixed
sigma_w (`address_std`), prior p(w) = N(0, I); `sample=True` draws w by reparameterisation
and `addressing_kl` returns KL(q || p) averaged over facts. `memory_kl` additionally gives the
Kanerva-machine KL of the matrix-normal memory posterior N(M, C^-1 (x) I) against the prior
N(M0, lam^-1 I (x) I) for those who want to regularise the memory itself.

Deployment (single facts, float64, same state as `EpisodicMemoryNP`): `write`, `forget`,
`read`, `read_with_facts`, `save`/`load` (.npz files interchangeable with the numpy twin),
`to_numpy()`. With `gate` > 0 the read is gated per fact (memory_np module doc): training
uses `read_gated`, deployment `read_fact` / `read_with_facts`, the numpy twin the same.
Scope (memory_np module doc): with a per-token `specificity` table set, facts written with
their token ids are scaled by their relevance r_i to the query's token ids; training passes
r (B, N) to `read_gated` as `scale`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import memory_np
from .memory_np import FactContribution


class EpisodicMemory(nn.Module):
    def __init__(self, slots: int, dim: int, prior_precision: float = 1e-3,
                 address_ridge: float = 1e-6, address_std: float = 0.1, seed: int = 0,
                 learn_prior_mean: bool = True, gate: float = 0.0, gate_threshold: float = 0.5,
                 address_dims: int = 0, recall: bool = False):
        super().__init__()
        self.recall = bool(recall)     # c_i = 1: every fact with its own encoding (memory_np doc)
        if prior_precision <= 0:
            raise ValueError("prior_precision must be > 0 so that C_0 = lam*I is invertible")
        if gate < 0:
            raise ValueError("gate sharpness must be >= 0 (0: linear read)")
        # relevance gate of the read (memory_np module doc): fact i enters as g(a_i) z_i
        self.gate, self.gate_threshold = float(gate), float(gate_threshold)
        self.slots, self.dim = slots, dim
        self.prior_precision, self.address_ridge = float(prior_precision), float(address_ridge)
        self.address_std = float(address_std)
        keys = memory_np.make_keys(slots, dim, seed, address_dims).astype(np.float32)
        self.register_buffer("keys", torch.from_numpy(keys))
        self.register_buffer("addresser", torch.zeros(dim, slots))
        self.prior_mean = nn.Parameter(torch.zeros(slots, dim), requires_grad=learn_prior_mean)
        self._refresh()
        # a checkpoint brings its own keys: re-derive the addresser and the deployment state
        self.register_load_state_dict_post_hook(lambda module, _: module._refresh())

    @torch.no_grad()
    def _refresh(self) -> None:
        # deployment math runs in float64 on exactly the (float32) keys training used, so the
        # exported numpy memory addresses facts the way the trained model does
        self._keys64 = self.keys.detach().double().cpu().numpy()
        self.addresser.copy_(torch.from_numpy(
            memory_np.addressing_matrix(self._keys64, self.address_ridge)))
        self.reset()

    # -- training: batched episodes ------------------------------------------------------
    def address(self, z: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """Least-squares addressing weights (..., K); `sample` draws from q(w|z)."""
        w = z @ self.addresser.to(z.dtype)
        if sample and self.address_std > 0:
            w = w + self.address_std * torch.randn_like(w)
        return w

    def write_episode(self, z: torch.Tensor, mask: torch.Tensor | None = None,
                      sample: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One-shot write of B episodes of N facts: z (B, N, C), mask (B, N) of 0/1.

        Returns (memory (B, K, C), precision (B, K, K), addresses (B, N, K)).
        """
        w = self.address(z, sample)
        if mask is not None:
            w = w * mask.unsqueeze(-1).to(w.dtype)  # padded facts get a zero address
        m0 = self.prior_mean.to(z.dtype)
        eye = torch.eye(self.slots, dtype=z.dtype, device=z.device)
        prec = self.prior_precision * eye + w.transpose(1, 2) @ w
        residual = z - w @ m0
        if mask is not None:
            residual = residual * mask.unsqueeze(-1).to(z.dtype)
        # M0 + C^-1 W^T (Z - W M0) == C^-1 (lam M0 + W^T Z); this form keeps M0's gradient clean
        memory = m0 + torch.linalg.solve(prec, w.transpose(1, 2) @ residual)
        return memory, prec, w

    def read(self, memory: torch.Tensor, z: torch.Tensor,
             sample: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """z_r = w M for queries z (B, Q, C) against memories (B, K, C)."""
        w = self.address(z, sample)
        return w @ memory, w

    def read_coefficients(self, w_query: torch.Tensor, w_facts: torch.Tensor) -> torch.Tensor:
        """Each written fact's weight in the read: a_i = w_q C^-1 w_i^T, (B, N).

        w_query (B, K), w_facts (B, N, K) (zero rows for absent facts), C = lam I + W^T W. The
        read decomposes exactly as z_r = lam w_q C^-1 M0 + sum_i a_i z_i, so a_i is how much of
        fact i the query gets back: the deployment `read_with_facts` reports the same number.
        Differentiable, so a loss can make the read selective (a -> 1 for facts that concern
        the query, a -> 0 for the others)."""
        return self._episode_solve(w_query, w_facts)[1]

    def _episode_solve(self, w_query: torch.Tensor, w_facts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(C^-1 w_q^T (B, K, 1), a (B, N)) for B one-shot episodes, C = lam I + W^T W."""
        eye = torch.eye(self.slots, dtype=w_facts.dtype, device=w_facts.device)
        prec = self.prior_precision * eye + w_facts.transpose(1, 2) @ w_facts
        sol = torch.linalg.solve(prec, w_query.unsqueeze(-1))
        return sol, (w_facts @ sol).squeeze(-1)

    def gate_fn(self, a: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate * (a - self.gate_threshold))

    def read_gated(self, w_query: torch.Tensor, w_facts: torch.Tensor, z_facts: torch.Tensor,
                   present: torch.Tensor, scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decomposed training read of B episodes: z_r = lam w_q C^-1 M0 + sum_i r_i c_i z_i,
        c_i = g(a_i) with a gate (k > 0), else a_i (then with r = 1 it is the linear read).

        w_query (B, K), w_facts (B, N, K) (zero rows for absent facts), z_facts (B, N, C),
        present (B, N), scale r (B, N) or None -> (z_read (B, C), a (B, N)). Same numbers as
        the deployment read."""
        sol, a = self._episode_solve(w_query, w_facts)
        prior = self.prior_precision * (sol.transpose(1, 2) @ self.prior_mean.to(w_query.dtype)).squeeze(1)
        g = (torch.ones_like(a) if self.recall else self.gate_fn(a) if self.gate > 0 else a) * present.to(a.dtype)
        if scale is not None:
            g = g * scale.to(a.dtype)
        return prior + (g.unsqueeze(1) @ z_facts).squeeze(1), a

    def addressing_kl(self, w_mean: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """KL(N(w_bar, sigma_w^2 I) || N(0, I)) per fact, averaged (Larimar's memory KL)."""
        var = max(self.address_std, 1e-8) ** 2
        kl = 0.5 * (var + w_mean.pow(2) - 1.0 - math.log(var)).sum(-1)
        if mask is None:
            return kl.mean()
        mask = mask.to(kl.dtype)
        return (kl * mask).sum() / mask.sum().clamp(min=1.0)

    def memory_kl(self, memory: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
        """KL of the matrix-normal posterior N(M, C^-1 (x) I_C) vs. prior N(M0, lam^-1 I (x) I_C)."""
        lam, k, c = self.prior_precision, self.slots, self.dim
        cov = torch.linalg.inv(precision)
        trace = lam * cov.diagonal(dim1=-2, dim2=-1).sum(-1)
        logdet = torch.linalg.slogdet(precision)[1] - k * math.log(lam)  # ln det(U0) - ln det(U)
        mahal = lam * (memory - self.prior_mean.to(memory.dtype)).pow(2).sum((-2, -1))
        return (0.5 * c * (trace - k + logdet) + 0.5 * mahal).mean()

    def forward(self, z_facts: torch.Tensor, z_queries: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Write an episode batch and read the queries: returns (z_read, addressing KL)."""
        memory, _, _ = self.write_episode(z_facts, mask, sample=self.training)
        z_read, _ = self.read(memory, z_queries, sample=self.training)
        return z_read, self.addressing_kl(self.address(z_queries))

    # -- deployment: single facts (float64, mirrors EpisodicMemoryNP) ---------------------
    @torch.no_grad()
    def reset(self) -> None:
        self.state_memory = self.prior_mean.detach().double().clone()
        self.state_precision = self.prior_precision * torch.eye(self.slots, dtype=torch.float64)
        self._facts: dict[str, torch.Tensor] = {}
        self._tokens: dict[str, np.ndarray] = {}
        if not hasattr(self, "specificity"):
            self.specificity: np.ndarray | None = None      # deployment scope table (V,), or None
        self._p64 = torch.from_numpy(memory_np.addressing_matrix(self._keys64, self.address_ridge))

    @property
    def fact_ids(self) -> list[str]:
        return list(self._facts)

    def __len__(self) -> int:
        return len(self._facts)

    @torch.no_grad()
    def _update(self, z: torch.Tensor, alpha: float) -> None:
        w = (z @ self._p64).unsqueeze(0)
        self.state_precision = self.state_precision + alpha * (w.T @ w)
        residual = z.unsqueeze(0) - w @ self.state_memory
        self.state_memory = self.state_memory + alpha * torch.linalg.solve(
            self.state_precision, w.T @ residual)

    @torch.no_grad()
    def write(self, z, fact_id: str | None = None, tokens=None) -> str:
        z = self._check(z)
        if fact_id is None:
            fact_id = next(f"fact{n}" for n in range(len(self._facts), 2 * len(self._facts) + 1)
                           if f"fact{n}" not in self._facts)
        fact_id = str(fact_id)
        if fact_id in self._facts:
            self.forget(fact_id)
        self._update(z, +1.0)
        self._facts[fact_id] = z
        if tokens is not None:
            self._tokens[fact_id] = np.asarray(tokens, dtype=np.int64).reshape(-1)
        return fact_id

    @torch.no_grad()
    def forget(self, fact_id: str) -> None:
        if fact_id not in self._facts:
            raise KeyError(f"no fact {fact_id!r} in memory")
        self._update(self._facts.pop(fact_id), -1.0)
        self._tokens.pop(fact_id, None)
        if not self._facts:
            self.reset()

    def relevance(self, query_tokens) -> torch.Tensor | None:
        """Each fact's scope r_i for a query's token ids (memory_np.EpisodicMemoryNP.relevance)."""
        rel = memory_np.scope_relevances(self.specificity, self._tokens, self.fact_ids, query_tokens)
        return None if rel is None else torch.from_numpy(rel)

    @torch.no_grad()
    def read_fact(self, z, query_tokens=None) -> torch.Tensor:
        """Deployment read of one query (C,) or (Q, C) against the written facts."""
        w = torch.as_tensor(z, dtype=torch.float64) @ self._p64
        rel = self.relevance(query_tokens) if w.dim() == 1 else None
        if (self.gate <= 0 and not self.recall and rel is None) or not self._facts:
            return w @ self.state_memory
        zf = torch.stack([self._facts[i] for i in self.fact_ids])
        return self._gated(w, zf, zf @ self._p64, rel)[0]

    def _gated(self, w: torch.Tensor, zf: torch.Tensor, wf: torch.Tensor,
               relevance: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decomposed deployment read of addresses w (K,) or (Q, K) against the facts zf (N, C)
        with addresses wf (N, K), scoped by `relevance` -> (z_r, a (N,) or (Q, N))."""
        sol = torch.linalg.solve(self.state_precision, torch.atleast_2d(w).T)    # (K, Q)
        a = (wf @ sol).T
        prior = self.prior_precision * sol.T @ self.prior_mean.detach().double()
        c = torch.ones_like(a) if self.recall else self.gate_fn(a) if self.gate > 0 else a
        out = prior + (c if relevance is None else c * relevance) @ zf
        return (out[0], a[0]) if w.dim() == 1 else (out, a)

    @torch.no_grad()
    def read_with_facts(self, z, top_k: int | None = None, min_similarity: float = -1.0,
                        query_tokens=None, min_relevance: float = 0.0) -> tuple[torch.Tensor, list[FactContribution]]:
        z = self._check(z)
        w = z @ self._p64
        if not self._facts:
            return w @ self.state_memory, []
        ids = self.fact_ids
        zf = torch.stack([self._facts[i] for i in ids])
        wf = zf @ self._p64
        rel = self.relevance(query_tokens)
        if self.gate > 0 or self.recall or rel is not None:
            out, weights = self._gated(w, zf, wf, rel)
        else:
            out = w @ self.state_memory
            weights = wf @ torch.linalg.solve(self.state_precision, w)
        rel = torch.ones(len(ids), dtype=torch.float64) if rel is None else rel
        sims = (wf @ w) / (wf.norm(dim=1) * w.norm()).clamp(min=1e-12)
        facts = [FactContribution(i, float(s), float(a), float(r))
                 for i, s, a, r in zip(ids, sims, weights, rel)
                 if s >= min_similarity and r >= min_relevance]
        facts.sort(key=lambda f: -f.similarity)
        return out, facts[:top_k] if top_k is not None else facts

    def to_numpy(self) -> memory_np.EpisodicMemoryNP:
        ids = self.fact_ids
        return memory_np.EpisodicMemoryNP.from_state({
            **memory_np.scope_state(self.specificity, self._tokens, ids),
            "format_version": np.array(memory_np.FORMAT_VERSION),
            "keys": self._keys64,
            "prior_mean": self.prior_mean.detach().double().numpy(),
            "prior_precision": np.array(self.prior_precision),
            "address_ridge": np.array(self.address_ridge),
            "gate": np.array(self.gate), "gate_threshold": np.array(self.gate_threshold),
            "recall": np.array(self.recall),
            "memory": self.state_memory.numpy(), "precision": self.state_precision.numpy(),
            "fact_ids": np.array(ids, dtype=np.str_),
            "fact_z": (torch.stack([self._facts[i] for i in ids]).numpy() if ids
                       else np.zeros((0, self.dim))),
        })

    def save(self, path) -> None:
        self.to_numpy().save(path)

    @torch.no_grad()
    def load(self, path) -> None:
        """Load deployment state (and the keys / prior it was written with) from an .npz."""
        mem = memory_np.EpisodicMemoryNP.load(path)
        if mem.keys.shape != (self.slots, self.dim):
            raise ValueError(f"memory file has {mem.keys.shape} slots x dims, "
                             f"this memory is {(self.slots, self.dim)}")
        self.keys.copy_(torch.from_numpy(mem.keys))
        self.prior_mean.copy_(torch.from_numpy(mem.prior_mean))
        self.prior_precision, self.address_ridge = mem.prior_precision, mem.address_ridge
        self.gate, self.gate_threshold = mem.gate, mem.gate_threshold
        self.specificity, self.recall = mem.specificity, mem.recall
        self._refresh()
        self._keys64 = mem.keys  # keep the file's float64 keys: reads must match the file exactly
        self._p64 = torch.from_numpy(memory_np.addressing_matrix(mem.keys, mem.address_ridge))
        self.state_memory = torch.from_numpy(mem.memory.copy())
        self.state_precision = torch.from_numpy(mem.precision.copy())
        self._facts = {i: torch.from_numpy(mem.fact_encoding(i)) for i in mem.fact_ids}
        self._tokens = dict(mem._tokens)

    def _check(self, z) -> torch.Tensor:
        z = torch.as_tensor(z, dtype=torch.float64).detach().cpu()
        if z.shape != (self.dim,) or not torch.isfinite(z).all():
            raise ValueError(f"fact encoding must be a finite vector of shape ({self.dim},)")
        return z


class TokenSpecificity(nn.Module):
    """Per-token specificity alpha_t = softplus(w . e_t + b + beta_t) >= 0 of the memory scope.

    e_t is the token's (frozen) embedding, so tokens never seen in a fact still get a value
    from their neighbours in the embedding space; beta_t lets each seen token find its own
    (digits, zone letters). Starts unspecific (alpha ~ 0.05): every fact counts everywhere."""

    def __init__(self, d_model: int, vocab_size: int, init_bias: float = -3.0):
        super().__init__()
        self.proj = nn.Linear(d_model, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.constant_(self.proj.bias, init_bias)
        self.offset = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, embed_weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """alpha for token ids (any shape), from the embedding table (V, d) (not trained here)."""
        e = embed_weight.detach()[ids]
        return F.softplus(self.proj(e).squeeze(-1) + self.offset[ids])

    @torch.no_grad()
    def table(self, embed_weight: torch.Tensor) -> np.ndarray:
        """alpha for the whole vocabulary (V,), float64: the deployment memory's table."""
        ids = torch.arange(embed_weight.shape[0], device=embed_weight.device)
        return self.forward(embed_weight, ids).double().cpu().numpy()
