"""Larimar generative parametric memory, single-fact deployment form, in numpy. Torch-free.

The math (shared with the torch twin `memory.EpisodicMemory`, tested to agree):

- Memory M is K slots x C dims. A fixed key memory A (K x C, orthonormal rows when K <= C)
  does the addressing: a fact encoding z (C,) gets weights w = argmin ||z - wA||^2 + beta||w||^2
  = z A^T (A A^T + beta I)^-1 — least squares, one shot, no gradients.
- Prior: M ~ MatrixNormal(M0, (lam I)^-1, I). C is the posterior *precision* over slots, so
  C_0 = lam I is invertible from the first write (lam = prior precision, i.e. the prior
  variance is lam^-1). Writing the facts Z (N x C) with addresses W (N x K) gives the
  regularised least-squares posterior mean
      M = argmin ||Z - W M||^2 + lam ||M - M0||^2 = (lam I + W^T W)^-1 (lam M0 + W^T Z).
- Sequential form (Larimar eq. for episodic updates), alpha = +1 writes, alpha = -1 forgets:
      C_i = C_{i-1} + alpha W_i^T W_i
      M_i = M_{i-1} + alpha C_i^-1 W_i^T (Z_i - W_i M_{i-1})
  It keeps C_i M_i = lam M0 + sum alpha W^T Z invariant, so forgetting a fact leaves exactly
  the least-squares fit of the remaining facts (forget == never written). Linear solves are
  used instead of explicit inverses, in float64.
- Read: z_r = w M. Because M = C^-1 (lam M0 + sum_i w_i^T z_i), the read decomposes exactly
  as z_r = lam w C^-1 M0 + sum_i a_i z_i with a_i = w C^-1 w_i^T: `read_with_facts` reports
  each stored fact's weight a_i in the read and its addressing similarity cos(w, w_i), which
  is what the runtime shows as "memory facts used".

- Relevance gate (optional, `gate` k > 0, threshold t): the read becomes
      z_r = lam w C^-1 M0 + sum_i g(a_i) z_i,   g(a) = sigmoid(k (a - t)),
  so a stored fact enters the read only once its coefficient a_i clears t. a_i is a bilinear
  similarity of query and fact (linear addressing), which cannot express "zone AND site
  match"; the gate turns "a_i well above vs. below t" into "in vs. out". k = 0 is the plain
  read above. Write/forget and the stored state are unchanged; only the read differs.

- Scope (optional, a per-token specificity table alpha over the vocabulary, learned with the
  model: `memory.TokenSpecificity`, `BitGenModel.memory_scope`): a fact written with its token ids t_1..t_n enters
  the read of a query with token ids Q scaled by its relevance
      r_i = exp(-sum_j alpha[t_j] [t_j not in Q]),
  so a fact that names a place ("zone B of the warehouse is flooded": alpha high on "zone",
  "b", "warehouse") counts only for queries that name it too, while a fact whose words all
  have alpha ~ 0 ("the drone is grounded") counts for every query. The read becomes
      z_r = lam w C^-1 M0 + sum_i r_i c_i z_i,   c_i = a_i (linear) or g(a_i) (gated),
  which is w M exactly when every r_i = 1. Facts written without tokens, and reads without
  query tokens, are unscoped (r = 1). Write/forget and the matrix are unchanged.
- Recall read (optional, `recall`): c_i = 1, i.e. every stored fact enters with its own
  encoding, z_r = lam w C^-1 M0 + sum_i r_i z_i (reading M at each fact's own address gives
  z_i back): whether a fact counts is then the scope's decision alone, not the similarity
  of the query's address to the fact's (an availability fact concerns every task, however
  unlike it the task is worded).

Capacity: up to min(K, C) facts with linearly independent addresses are recalled almost
exactly (shrinkage lam / (lam + sigma_min(W)^2)); beyond that the memory superposes.
Writing an id that already exists replaces that fact (forget, then write).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FORMAT_VERSION = 1


def make_keys(slots: int, dim: int, seed: int = 0, address_dims: int = 0) -> np.ndarray:
    """Fixed key memory: orthonormal rows if slots <= dim (well-conditioned addressing).

    `address_dims` d_a (0 < d_a < dim): the keys live in the first d_a coordinates and are 0
    in the rest, so the address w = z P depends on z[:d_a] only while the memory still stores
    and returns all of z. The encoding splits into an address part and a content part (a key
    and a value, with Larimar's write and read unchanged): training can make the address
    selective without pulling what the fact says towards what every task shares."""
    if 0 < address_dims < dim:
        keys = np.zeros((slots, dim), dtype=np.float64)
        keys[:, :address_dims] = make_keys(slots, address_dims, seed)
        return keys
    g = np.random.default_rng(seed).standard_normal((max(slots, dim), min(slots, dim)))
    q, r = np.linalg.qr(g)  # q: orthonormal columns
    q = q * np.sign(np.diag(r))  # unique QR, so the keys depend on the seed only
    # slots <= dim: orthonormal key rows. slots > dim: orthogonal columns, rows of unit norm
    # on average (only dim addresses can be independent then, so capacity is dim facts).
    keys = q.T if slots <= dim else q * np.sqrt(slots / dim)
    return np.ascontiguousarray(keys, dtype=np.float64)


def addressing_matrix(keys: np.ndarray, ridge: float) -> np.ndarray:
    """P (C x K) with w = z P: the ridge least-squares solution of z ~ w A."""
    keys = np.asarray(keys, dtype=np.float64)
    gram = keys @ keys.T + ridge * np.eye(keys.shape[0])
    return np.linalg.solve(gram, keys).T


def gate(a: np.ndarray, sharpness: float, threshold: float) -> np.ndarray:
    """g(a) = sigmoid(k (a - t)), numerically stable."""
    x = sharpness * (np.asarray(a, np.float64) - threshold)
    return np.exp(-np.logaddexp(0.0, -x))


def scope_relevance(specificity: np.ndarray, fact_tokens, query_tokens) -> float:
    """r = exp(-sum over the fact's tokens missing from the query of their specificity)."""
    q = query_tokens if isinstance(query_tokens, (set, frozenset)) else {int(t) for t in query_tokens}
    missing = [int(t) for t in fact_tokens if int(t) not in q]
    return float(np.exp(-np.asarray(specificity, np.float64)[missing].sum())) if missing else 1.0


def scope_relevances(specificity: np.ndarray | None, tokens: dict, fact_ids, query_tokens) -> np.ndarray | None:
    """Each fact's scope r_i (N,) in `fact_ids` order (1 for facts written without tokens);
    None when the read is unscoped (no table, no query tokens, no fact written with tokens).
    Shared by `EpisodicMemoryNP` and its torch twin."""
    if specificity is None or query_tokens is None or not tokens:
        return None
    q = {int(t) for t in query_tokens}
    return np.array([scope_relevance(specificity, tokens[i], q) if i in tokens else 1.0 for i in fact_ids])


def scope_state(specificity: np.ndarray | None, tokens: dict, fact_ids) -> dict[str, np.ndarray]:
    """The saved form of the scope: the table and each fact's token ids, concatenated, with
    their counts (-1: written unscoped). {} for an unscoped memory (older files have none)."""
    if specificity is None and not tokens:
        return {}
    toks = [tokens.get(i) for i in fact_ids]
    return {"specificity": specificity if specificity is not None else np.zeros(0),
            "fact_token_counts": np.array([-1 if t is None else t.size for t in toks], np.int64),
            "fact_tokens": (np.concatenate([t for t in toks if t is not None])
                            if any(t is not None for t in toks) else np.zeros(0, np.int64))}


def least_squares_memory(keys, prior_mean, prior_precision, address_ridge, z) -> np.ndarray:
    """Closed-form regularised least-squares memory of the facts z (N x C), as a reference."""
    z = np.atleast_2d(np.asarray(z, dtype=np.float64))
    w = z @ addressing_matrix(keys, address_ridge)
    k = keys.shape[0]
    return np.linalg.solve(prior_precision * np.eye(k) + w.T @ w,
                           prior_precision * np.asarray(prior_mean, np.float64) + w.T @ z)


@dataclass(frozen=True)
class FactContribution:
    fact_id: str
    similarity: float  # cosine between the query's and the fact's addressing weights
    weight: float      # a_i: coefficient of the fact's encoding in the read-out
    relevance: float = 1.0   # r_i: the fact's scope for this query (module doc); 1 = unscoped


class EpisodicMemoryNP:
    """Deployment memory: write / forget / read single facts, save / load as .npz."""

    def __init__(self, keys: np.ndarray, prior_mean: np.ndarray | None = None,
                 prior_precision: float = 1e-3, address_ridge: float = 1e-6,
                 gate: float = 0.0, gate_threshold: float = 0.5,
                 specificity: np.ndarray | None = None, recall: bool = False):
        self.keys = np.asarray(keys, dtype=np.float64)
        self.recall = bool(recall)
        if specificity is not None:
            specificity = np.asarray(specificity, dtype=np.float64)
            if specificity.ndim != 1 or not np.all(np.isfinite(specificity)) or np.any(specificity < 0):
                raise ValueError("specificity must be a finite, non-negative vector (one per token)")
        self.specificity = specificity
        k, c = self.keys.shape
        self.prior_mean = (np.zeros((k, c)) if prior_mean is None
                           else np.asarray(prior_mean, dtype=np.float64).reshape(k, c))
        if prior_precision <= 0:
            raise ValueError("prior_precision must be > 0 so that C_0 = lam*I is invertible")
        self.prior_precision = float(prior_precision)
        self.address_ridge = float(address_ridge)
        if gate < 0:
            raise ValueError("gate sharpness must be >= 0 (0: linear read)")
        self.gate, self.gate_threshold = float(gate), float(gate_threshold)
        self._p = addressing_matrix(self.keys, self.address_ridge)
        self.reset()

    def fresh(self) -> "EpisodicMemoryNP":
        """An empty memory with the same keys, prior and read (gate)."""
        return EpisodicMemoryNP(self.keys, self.prior_mean, self.prior_precision, self.address_ridge,
                                self.gate, self.gate_threshold, self.specificity, self.recall)

    @classmethod
    def create(cls, slots: int, dim: int, seed: int = 0, **kw) -> "EpisodicMemoryNP":
        return cls(make_keys(slots, dim, seed), **kw)

    # -- state ---------------------------------------------------------------------------
    def reset(self) -> None:
        k = self.slots
        self.memory = self.prior_mean.copy()
        self.precision = self.prior_precision * np.eye(k)
        self._facts: dict[str, np.ndarray] = {}  # id -> z (C,), insertion-ordered
        self._tokens: dict[str, np.ndarray] = {}  # id -> token ids of a scoped fact

    @property
    def slots(self) -> int:
        return self.keys.shape[0]

    @property
    def dim(self) -> int:
        return self.keys.shape[1]

    @property
    def fact_ids(self) -> list[str]:
        return list(self._facts)

    def __len__(self) -> int:
        return len(self._facts)

    def __contains__(self, fact_id: str) -> bool:
        return fact_id in self._facts

    def fact_encoding(self, fact_id: str) -> np.ndarray:
        return self._facts[fact_id].copy()

    # -- math ----------------------------------------------------------------------------
    def address(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, dtype=np.float64) @ self._p

    def _update(self, z: np.ndarray, alpha: float) -> None:
        w = self.address(z)                   # (K,)
        self.precision = self.precision + alpha * np.outer(w, w)
        residual = z - w @ self.memory        # (C,)
        # C^-1 (w^T r) == (C^-1 w^T) r: one right-hand side instead of C (0.1 -> 0.03 ms)
        self.memory = self.memory + alpha * np.outer(np.linalg.solve(self.precision, w), residual)

    def write(self, z: np.ndarray, fact_id: str | None = None, tokens=None) -> str:
        """Write a fact's encoding z; with its token ids (and a specificity table) the fact is
        scoped: it counts for the queries that name what it names (module doc)."""
        z = self._check(z)
        toks = None if tokens is None else np.asarray(tokens, dtype=np.int64).reshape(-1)
        if toks is not None and self.specificity is not None and (
                toks.size == 0 or toks.min() < 0 or toks.max() >= self.specificity.size):
            raise ValueError(f"fact token ids must be 1+ ids in 0..{self.specificity.size - 1}")
        fact_id = str(fact_id) if fact_id is not None else self._fresh_id()
        if fact_id in self._facts:
            self.forget(fact_id)
        self._update(z, +1.0)
        self._facts[fact_id] = z
        if toks is not None:
            self._tokens[fact_id] = toks
        return fact_id

    def forget(self, fact_id: str) -> None:
        if fact_id not in self._facts:
            raise KeyError(f"no fact {fact_id!r} in memory")
        self._update(self._facts.pop(fact_id), -1.0)
        self._tokens.pop(fact_id, None)
        if not self._facts:  # nothing left: snap back to the prior, dropping rounding residue
            self.reset()

    def relevance(self, query_tokens) -> np.ndarray | None:
        """Each stored fact's scope r_i (N,) for a query's token ids, in `fact_ids` order; None
        when the read is unscoped (no table, no query tokens, or no fact written with tokens)."""
        return scope_relevances(self.specificity, self._tokens, self.fact_ids, query_tokens)

    def read(self, z: np.ndarray, query_tokens=None) -> np.ndarray:
        """z_r for one query (C,) or a batch (Q, C): w M, or the gated / scoped read (module
        doc; the scope needs the query's token ids, so it applies to one query at a time)."""
        w = self.address(z)
        rel = self.relevance(query_tokens) if np.ndim(w) == 1 else None
        if (self.gate <= 0 and not self.recall and rel is None) or not self._facts:
            return w @ self.memory
        zf = self._fact_matrix()
        return self._gated(w, zf, self.address(zf), rel)[0]

    def prior_read(self, z: np.ndarray) -> np.ndarray:
        """The read of this memory with nothing written (w M0): `read` returns exactly this
        while the memory is empty."""
        return self.address(z) @ self.prior_mean

    def _fact_matrix(self) -> np.ndarray:
        return np.stack([self._facts[i] for i in self.fact_ids])

    def _gated(self, w: np.ndarray, zf: np.ndarray, wf: np.ndarray,
               relevance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Read of addresses w (K,) or (Q, K) against the facts zf (N, C) with addresses wf
        (N, K) in the decomposed form, each fact weighted by g(a_i) (gate > 0) or a_i, times
        its scope r_i -> (z_r, coefficients a (N,) or (Q, N))."""
        sol = np.linalg.solve(self.precision, np.atleast_2d(w).T)          # C^-1 w^T, (K, Q)
        a = (wf @ sol).T                                                    # (Q, N)
        prior = self.prior_precision * sol.T @ self.prior_mean              # lam w C^-1 M0
        c = np.ones_like(a) if self.recall else gate(a, self.gate, self.gate_threshold) if self.gate > 0 else a
        out = prior + (c if relevance is None else c * relevance) @ zf
        return (out[0], a[0]) if np.ndim(w) == 1 else (out, a)

    def read_with_facts(self, z: np.ndarray, top_k: int | None = None,
                        min_similarity: float = -1.0, query_tokens=None,
                        min_relevance: float = 0.0) -> tuple[np.ndarray, list[FactContribution]]:
        """Read one query and report the stored facts that contributed, most similar first.
        `weight` is a_i (ungated; the gate's g(a_i) is what the read used when gate > 0),
        `relevance` the fact's scope r_i for `query_tokens` (1 when unscoped)."""
        z = self._check(z)
        w = self.address(z)
        if not self._facts:
            return w @ self.memory, []
        ids = self.fact_ids
        zf = self._fact_matrix()
        wf = self.address(zf)                                         # (N, K)
        rel = self.relevance(query_tokens)
        if self.gate > 0 or self.recall or rel is not None:
            out, weights = self._gated(w, zf, wf, rel)
        else:
            out = w @ self.memory
            weights = wf @ np.linalg.solve(self.precision, w)         # a_i = w C^-1 w_i^T
        rel = np.ones(len(ids)) if rel is None else rel
        sims = (wf @ w) / np.maximum(np.linalg.norm(wf, axis=1) * np.linalg.norm(w), 1e-12)
        facts = [FactContribution(i, float(s), float(a), float(r))
                 for i, s, a, r in zip(ids, sims, weights, rel)
                 if s >= min_similarity and r >= min_relevance]
        facts.sort(key=lambda f: -f.similarity)
        return out, facts[:top_k] if top_k is not None else facts

    # -- persistence ---------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        ids = self.fact_ids
        return {
            "format_version": np.array(FORMAT_VERSION),
            "keys": self.keys, "prior_mean": self.prior_mean,
            "prior_precision": np.array(self.prior_precision),
            "address_ridge": np.array(self.address_ridge),
            "gate": np.array(self.gate), "gate_threshold": np.array(self.gate_threshold),
            "recall": np.array(self.recall),
            "memory": self.memory, "precision": self.precision,
            "fact_ids": np.array(ids, dtype=np.str_),
            "fact_z": (np.stack([self._facts[i] for i in ids]) if ids
                       else np.zeros((0, self.dim))),
            **scope_state(self.specificity, self._tokens, ids),
        }

    def save(self, path) -> None:
        with open(path, "wb") as f:
            np.savez(f, **self.state())

    @classmethod
    def from_state(cls, state) -> "EpisodicMemoryNP":
        version = int(state["format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(f"memory file format {version} unsupported (expected {FORMAT_VERSION})")
        mem = cls(state["keys"], state["prior_mean"], float(state["prior_precision"]),
                  float(state["address_ridge"]),
                  float(state["gate"]) if "gate" in state else 0.0,          # older files: linear read
                  float(state["gate_threshold"]) if "gate_threshold" in state else 0.5,
                  # older files and unscoped memories have no table
                  state["specificity"] if "specificity" in state and np.size(state["specificity"]) else None,
                  bool(state["recall"]) if "recall" in state else False)
        ids, fz = [str(i) for i in state["fact_ids"]], np.asarray(state["fact_z"], np.float64)
        if len(ids) != len(fz) or len(set(ids)) != len(ids):
            raise ValueError("memory file corrupt: fact ids and encodings do not match")
        mem._facts = {i: z for i, z in zip(ids, fz)}
        if "fact_token_counts" in state:
            counts = np.asarray(state["fact_token_counts"], np.int64)
            flat = np.asarray(state["fact_tokens"], np.int64)
            if counts.shape != (len(ids),) or int(counts.clip(min=0).sum()) != flat.size:
                raise ValueError("memory file corrupt: fact token ids do not match the facts")
            ends = np.cumsum(counts.clip(min=0))
            mem._tokens = {i: flat[e - n:e].copy() for i, n, e in zip(ids, counts, ends) if n >= 0}
        mem.memory = np.asarray(state["memory"], np.float64)
        mem.precision = np.asarray(state["precision"], np.float64)
        mem._verify()
        return mem

    @classmethod
    def load(cls, path) -> "EpisodicMemoryNP":
        with np.load(path, allow_pickle=False) as data:
            return cls.from_state({k: data[k] for k in data.files})

    def _verify(self, tol: float = 1e-6) -> None:
        """Saved M and C must be the posterior of the saved facts (catches stale/corrupt files)."""
        fz = np.stack(list(self._facts.values())) if self._facts else np.zeros((0, self.dim))
        w = self.address(fz)
        expect_c = self.prior_precision * np.eye(self.slots) + w.T @ w
        expect_m = (least_squares_memory(self.keys, self.prior_mean, self.prior_precision,
                                         self.address_ridge, fz) if len(fz) else self.prior_mean)
        if (self.memory.shape != expect_m.shape
                or not np.allclose(self.precision, expect_c, atol=tol, rtol=tol)
                or not np.allclose(self.memory, expect_m, atol=tol, rtol=tol)):
            raise ValueError("memory file corrupt: stored memory is not the posterior of its facts")

    # -- helpers -------------------------------------------------------------------------
    def _check(self, z) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        if z.shape != (self.dim,) or not np.all(np.isfinite(z)):
            raise ValueError(f"fact encoding must be a finite vector of shape ({self.dim},), "
                             f"got {z.shape}")
        return z

    def _fresh_id(self) -> str:
        n = len(self._facts)
        while f"fact{n}" in self._facts:
            n += 1
        return f"fact{n}"
