"""Inference on the torch model: one task in, robots ranked and a reasoning trace out.

A mixin of `BitGenModel` (bitgen_core/model.py), kept apart so the model file reads as the
architecture and this one as its use: the run-time prompt layout, prefill into a sink cache,
selection, and the token-by-token trace (greedy or sampled groups for GRPO). The torch-free
runtime (bitgen_core/runtime/) mirrors these steps on the exported graphs, and the parity
tests hold the two together, including the constrained "selected:" clause.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bitgen_core.attention import SinkKVCache
from bitgen_core.errors import InputError
from bitgen_core.memory import EpisodicMemory
from bitgen_core.runtime.constrained import SelectionClause, TraceGrammar, chosen_robots


class Generation:
    """select / generate_trace / iter_trace for BitGenModel (needs its tokenizer, config,
    catalog, encoders, prefill, decode_step, select_head and lm_head)."""

    def _tokens(self, texts, max_len):
        ids, mask = self.tokenizer.encode_batch(texts, max_len)
        dev = self.embed.weight.device
        return torch.from_numpy(ids).to(dev), torch.from_numpy(mask).to(dev)

    def prompt_ids(self, task: str) -> list[int]:
        """The runtime's prompt layout: [SINK] [PAD]*n_memory_tokens task[:max_task_tokens] [SEP]."""
        tok, cfg = self.tokenizer, self.config
        return ([tok.sink_id] + [tok.pad_id] * cfg.n_memory_tokens
                + tok.encode(task, cfg.max_task_tokens) + [tok.sep_id])

    @torch.no_grad()
    def start(self, task: str, image: np.ndarray | None = None, memory: EpisodicMemory | None = None):
        """Prefill one task into a fresh sink cache -> (state at [SEP] (1, d), cache, image tokens,
        the facts' part of the memory read for the selector (None without memory_robot or memory))."""
        cfg = self.config
        if not isinstance(task, str) or not task.strip():
            raise InputError("task is empty: give the robot a task in words")
        ids, mask = self._tokens([task], cfg.max_task_tokens)
        image_tokens = self.encode_image(self.preprocess_image(image)) if image is not None else None
        z_query = self.memory_encoding(ids, mask)
        z_read, _ = self.read_memory(z_query, memory, [self.tokenizer.encode(task, cfg.max_task_tokens)])
        prompt = torch.tensor([self.prompt_ids(task)], device=ids.device)
        h, k, v = self.prefill(prompt, z_read, image_tokens)
        cache = SinkKVCache(cfg.n_sink, cfg.window)
        cache.append(k, v)
        fact = self.fact_part(z_query, z_read) if memory is not None else None
        return h[:, -1], cache, image_tokens, fact

    @torch.no_grad()
    def select(self, task: str, image: np.ndarray | None = None, memory: EpisodicMemory | None = None,
               top_k: int = 3, trace_tokens: int = 0) -> dict:
        """Evaluate one task: all robots ranked with confidences, the top k, optionally a trace."""
        sep_state, cache, image_tokens, fact = self.start(task, image, memory)
        logits, r = self.select_head(sep_state, self.robot_embeddings(), fact)
        probs = torch.sigmoid(logits)[0]
        order, conf = self.selector.topk(probs, len(self.catalog))
        keys = [self.catalog.keys[i] for i in order.tolist()]
        out = dict(robots=keys, confidences=conf.tolist(), top_k=list(zip(keys[:top_k], conf.tolist()[:top_k])),
                   probabilities=dict(zip(self.catalog.keys, probs.tolist())), steps=int(r.steps[0]))
        if trace_tokens:   # the trace's "selected:" clause is forced to the chosen robots
            chosen = chosen_robots(keys, conf.tolist())
            out["reasoning"] = self._collect(sep_state, cache, image_tokens, trace_tokens,
                                             chosen=chosen)["texts"][0]
        return out

    def _trace_grammar(self) -> TraceGrammar:
        """The rationale grammar of this catalog, built once (the runtime builds it at load)."""
        key = self.catalog.fingerprint()
        cached = getattr(self, "_grammar_cache", None)
        if cached is None or cached[0] != key:
            cached = self._grammar_cache = (key, TraceGrammar.for_catalog(self.tokenizer, self.catalog))
        return cached[1]

    @torch.no_grad()
    def iter_trace(self, sep_state, cache: SinkKVCache, image_tokens=None, max_new_tokens: int | None = None,
                   temperature: float = 0.0, generator: torch.Generator | None = None,
                   stop_at_eos: bool = True, chosen: list[str] | None = None):
        """Stream the trace after a prefill: yields (token ids (G,), log-probs (G,)) per step.

        G rows (GRPO's group) continue one prompt's cache; a row that emitted [EOS] keeps
        emitting [EOS]. The cache keeps n_sink + window tokens however long the stream runs.
        temperature 0 is greedy; otherwise sampling from softmax(logits / temperature).
        stop_at_eos=False streams on past [EOS] (benchmarks of long streams).
        `chosen` (robot keys): once a row has written the "selected:" marker, the rest of its
        clause is forced to these robots' names, then [EOS] (runtime/constrained.py; the
        torch-free runtime does the same, so the two give the same traces)."""
        eos = self.tokenizer.eos_id
        n = max_new_tokens if max_new_tokens is not None else self.config.max_trace_tokens
        rows = sep_state.shape[0]
        done = torch.zeros(rows, dtype=torch.bool, device=sep_state.device)
        clause = SelectionClause(self.tokenizer, self.catalog) if chosen is not None else None
        # greedy selection traces keep to the rationale grammar, as the runtime's do
        grammar = self._trace_grammar() if chosen is not None and temperature <= 0 else None
        cursors = [grammar.start() for _ in range(rows)] if grammar is not None else None
        history: list[list[int]] = [[] for _ in range(rows)]
        forced: list[list[int] | None] = [None] * rows    # None: not forced yet; [] forced, spent
        logits = self.lm_head(sep_state)
        for _ in range(n):
            logp = F.log_softmax(logits.float(), dim=-1)
            if temperature > 0:
                pick = torch.multinomial(F.softmax(logits.float() / temperature, -1), 1, generator=generator)
            else:
                pick = logp.argmax(-1, keepdim=True)
            if cursors is not None:
                for r, cur in enumerate(cursors):
                    allowed = cur.allowed()
                    if allowed is not None:
                        pick[r, 0] = allowed[int(logits[r, list(allowed)].float().argmax())]
            if clause is not None:
                for r in range(rows):
                    if forced[r]:
                        pick[r, 0] = forced[r].pop(0)
            if stop_at_eos:
                pick = torch.where(done[:, None], torch.full_like(pick, eos), pick)
            yield pick.squeeze(1), logp.gather(-1, pick).squeeze(1)
            if cursors is not None:
                for r, cur in enumerate(cursors):
                    cur.advance(int(pick[r, 0]))
            if clause is not None:
                for r in range(rows):
                    history[r].append(int(pick[r, 0]))
                    if forced[r] is None and clause.marker_ends_at(history[r]):
                        forced[r] = clause.forced_ids(chosen)
            done = done | (pick.squeeze(1) == eos)
            if stop_at_eos and bool(done.all()):
                return
            step_logits, k, v = self.decode_step(pick, cache.k, cache.v, image_tokens)
            cache.append(k, v)
            logits = step_logits[:, -1]

    @torch.no_grad()
    def generate_trace(self, task: str, image: np.ndarray | None = None, memory: EpisodicMemory | None = None,
                       max_new_tokens: int | None = None, temperature: float = 0.0, num_samples: int = 1,
                       generator: torch.Generator | None = None, on_token=None,
                       stop_at_eos: bool = True, chosen: list[str] | None = None) -> dict:
        """Generate the reasoning trace token by token (decode-step API + sink cache).

        Returns ids (G, T) (trace tokens, [EOS] included when reached), logprobs (G, T),
        mask (G, T) (1 up to and including the first [EOS]), texts (G strings) and
        cache_sizes (cache length after each step). `on_token(piece)` receives row 0's text
        pieces as they are generated. `chosen`: force the "selected:" clause (iter_trace)."""
        sep_state, cache, image_tokens, _ = self.start(task, image, memory)
        if num_samples > 1:   # the group shares the prompt: replicate its prefill
            sep_state = sep_state.expand(num_samples, -1)
            cache.k, cache.v = (t.expand(-1, num_samples, -1, -1, -1).contiguous() for t in (cache.k, cache.v))
            if image_tokens is not None:
                image_tokens = image_tokens.expand(num_samples, -1, -1)
        return self._collect(sep_state, cache, image_tokens, max_new_tokens, temperature, generator, on_token,
                             stop_at_eos, chosen)

    def _collect(self, sep_state, cache, image_tokens, max_new_tokens, temperature=0.0, generator=None,
                 on_token=None, stop_at_eos=True, chosen=None) -> dict:
        stream = self.tokenizer.decode_stream()
        ids, logps, sizes = [], [], []
        for pick, logp in self.iter_trace(sep_state, cache, image_tokens, max_new_tokens, temperature,
                                          generator, stop_at_eos, chosen):
            ids.append(pick)
            logps.append(logp)
            sizes.append(len(cache))
            if on_token is not None:
                piece = stream.step(int(pick[0]))
                if piece:
                    on_token(piece)
        g = sep_state.shape[0]
        ids_t = torch.stack(ids, 1) if ids else torch.zeros(g, 0, dtype=torch.long)
        logp_t = torch.stack(logps, 1) if logps else torch.zeros(g, 0)
        is_eos = ids_t == self.tokenizer.eos_id
        mask = (is_eos.long().cumsum(1) - is_eos.long()) == 0       # up to and including first EOS
        texts = [self.tokenizer.decode(row[m].tolist()) for row, m in zip(ids_t, mask)]
        return dict(ids=ids_t, logprobs=logp_t, mask=mask, texts=texts, cache_sizes=sizes)
