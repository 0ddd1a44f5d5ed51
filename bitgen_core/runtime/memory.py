"""RuntimeMemory: the operators' episodic-memory facts at run time (torch-free).

Facts live in a `MemoryStore` file (crash-safe, checksummed, shared with the `bitgen memory`
CLI) or only in this process when no file is given. The Larimar memory matrix is never
persisted: it is rebuilt at load by replaying each stored fact's write on the exported, empty
trained memory (`memory.npz`), and a forget is the exact inverse write, so the matrix always
equals the least-squares posterior of exactly the stored facts (forget == never written).

Edits persist first and touch the matrix only once the store has the new state, so a crash or
a refused write never leaves the matrix ahead of the file. Another process editing the same
file (the CLI next to a running node) is picked up by `sync()`, which the runtime calls before
each selection; it costs one `stat` when nothing changed.

Optional guards (issue 7): an `EditGuard` (token / read-only / rate limit) checked before every
edit, and an `AuditLog` that records every edit and refusal with the fact's sha256.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bitgen_core.audit import AuditLog
from bitgen_core.auth import EditGuard
from bitgen_core.errors import AuthError, BitGenError, InputError, MemoryEditError, StoreCorruptError
from bitgen_core.limits import DEFAULT_LIMITS, Limits, validate_fact, validate_key
from bitgen_core.memory_np import EpisodicMemoryNP
from bitgen_core.store import Fact, MemoryStore


@dataclass(frozen=True)
class MemoryResult:
    success: bool
    message: str
    count: int          # facts in memory after the call


class RuntimeMemory:
    def __init__(self, base: EpisodicMemoryNP, encode: Callable[[str], np.ndarray],
                 path: str | os.PathLike | None = None, *, limits: Limits = DEFAULT_LIMITS,
                 guard: EditGuard | None = None, audit: AuditLog | None = None,
                 similarity_threshold: float = 0.5, recover: bool = False,
                 tokens: Callable[[str], list[int]] | None = None) -> None:
        self._base = base
        self._encode = encode
        # a fact's token ids, for the read's scope (memory_np module doc); None: unscoped
        self._tokens = tokens
        self.limits = limits
        self.guard = guard
        self.audit = audit
        self.similarity_threshold = float(similarity_threshold)
        self._lock = threading.RLock()
        self.store = (MemoryStore(path, recover=recover, max_facts=limits.max_facts)
                      if path is not None else None)
        self._facts: list[Fact] = []
        self._mem = self._fresh()
        self._stamp = None
        self.reload()

    # -- state ---------------------------------------------------------------------------
    @property
    def path(self) -> Path | None:
        return None if self.store is None else self.store.path

    @property
    def last_recovery(self) -> str | None:
        """Set when a corrupt store was moved aside at load (recover=True)."""
        return None if self.store is None else self.store.last_recovery

    def _fresh(self) -> EpisodicMemoryNP:
        return self._base.fresh()     # same keys, prior and read gate as the exported memory

    def _file_stamp(self):
        try:
            st = os.stat(self.store.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def reload(self) -> None:
        """Replay the stored facts into a fresh matrix (raises StoreCorruptError on a bad file
        unless the memory was opened with recover=True)."""
        with self._lock:
            facts = [] if self.store is None else self.store.load()
            mem = self._fresh()
            for f in facts:
                mem.write(self._encode(f.text), f.key, tokens=self._fact_tokens(f.text))
            self._facts, self._mem = facts, mem
            if self.store is not None:
                self._stamp = self._file_stamp()

    def sync(self) -> bool:
        """Pick up edits made to the store by another process; True if anything changed."""
        if self.store is None:
            return False
        with self._lock:
            if self._file_stamp() == self._stamp:
                return False
            self.reload()
            return True

    def list(self) -> list[Fact]:
        self.sync()
        with self._lock:
            return list(self._facts)

    def __len__(self) -> int:
        return len(self._facts)

    # -- edits ---------------------------------------------------------------------------
    def write(self, key: str, text: str, *, token: str | None = None) -> MemoryResult:
        """Store a fact (replacing one with the same key). Never raises for a refused edit:
        the result says why (a ROS service answers with it)."""
        return self._edit("write", key, text, token)

    def forget(self, key: str, *, token: str | None = None) -> MemoryResult:
        return self._edit("forget", key, None, token)

    def _edit(self, action: str, key, text, token) -> MemoryResult:
        digest_text = text if isinstance(text, str) else None
        try:
            if self.guard is not None:
                self.guard.check(token)
            key = validate_key(key, self.limits)
            with self._lock:
                self.sync()
                if action == "write":
                    text = validate_fact(text, self.limits)
                    digest_text = text
                    z = self._encode(text)            # before persisting: a bad fact changes nothing
                    message = self._write(key, text, z, self._fact_tokens(text))
                else:
                    message = self._forget(key)
        except BitGenError as e:
            outcome = "refused" if isinstance(e, (AuthError, InputError)) else "error"
            self._audit(action, key, outcome, str(e), digest_text)
            return MemoryResult(False, str(e), len(self._facts))
        self._audit(action, key, "ok", "", digest_text)
        return MemoryResult(True, message, len(self._facts))

    def _fact_tokens(self, text: str) -> list[int] | None:
        """The fact's token ids (computed before anything is persisted); a text with no tokens
        is stored unscoped rather than refused after the store has it."""
        return (self._tokens(text) or None) if self._tokens is not None else None

    def _write(self, key: str, text: str, z: np.ndarray, tokens: list[int] | None = None) -> str:
        existed = any(f.key == key for f in self._facts)
        if not existed and len(self._facts) >= self.limits.max_facts:
            raise MemoryEditError(f"memory is full ({self.limits.max_facts} facts); forget one first")
        if self.store is not None:
            self.store.replace(key, text)
            facts = self.store.load()
            self._stamp = self._file_stamp()
        else:
            facts = [f for f in self._facts if f.key != key] + [Fact.new(key, text)]
        self._mem.write(z, key, tokens=tokens)   # an existing key is forgotten first: exact replacement
        self._facts = facts
        return f"{'replaced' if existed else 'stored'} fact {key!r}"

    def _forget(self, key: str) -> str:
        if not any(f.key == key for f in self._facts):
            raise MemoryEditError(f"no fact with key {key!r}; `bitgen memory list` shows the keys")
        if self.store is not None:
            self.store.remove(key)
            facts = self.store.load()
            self._stamp = self._file_stamp()
        else:
            facts = [f for f in self._facts if f.key != key]
        self._mem.forget(key)
        self._facts = facts
        return f"forgot fact {key!r}"

    def _audit(self, action, key, outcome, reason, text) -> None:
        if self.audit is None:
            return
        try:
            self.audit.record(action, key if isinstance(key, str) else repr(key), outcome, reason,
                              text=text)
        except (OSError, BitGenError):
            pass   # the audit log must never turn a good edit into a failure

    # -- persistence of the whole set ----------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the current facts to another store file (atomically)."""
        with self._lock:
            MemoryStore(path).save(list(self._facts))

    def load(self, path: str | os.PathLike) -> MemoryResult:
        """Replace every fact with those of another store file (persisted to our store)."""
        facts = MemoryStore(path).load()
        for f in facts:
            validate_key(f.key, self.limits)
            validate_fact(f.text, self.limits)
        with self._lock:
            if self.store is not None:
                self.store.save(facts)
                self.reload()
            else:
                mem = self._fresh()
                for f in facts:
                    mem.write(self._encode(f.text), f.key, tokens=self._fact_tokens(f.text))
                self._facts, self._mem = list(facts), mem
            return MemoryResult(True, f"loaded {len(facts)} facts from {path}", len(self._facts))

    # -- reading -------------------------------------------------------------------------
    def read(self, z: np.ndarray, query_tokens: list[int] | None = None) -> tuple[np.ndarray, list[str]]:
        """Memory read for a query encoding (and its token ids, for the scope) -> (z_read
        float32 (C,), keys of the facts used: addressed alike and, when scoped, in scope)."""
        with self._lock:
            out, facts = self._mem.read_with_facts(np.asarray(z, np.float64),
                                                   min_similarity=self.similarity_threshold,
                                                   query_tokens=query_tokens, min_relevance=0.5)
        return out.astype(np.float32), [f.fact_id for f in facts]

    def prior_read(self, z: np.ndarray) -> np.ndarray:
        """What an empty memory returns for a query encoding (float32 (C,)): `read` minus this is
        the facts' part of the read, zero when nothing is written."""
        with self._lock:
            return self._mem.prior_read(np.asarray(z, np.float64)).astype(np.float32)


__all__ = ["MemoryResult", "RuntimeMemory", "Fact", "StoreCorruptError"]
