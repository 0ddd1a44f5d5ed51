"""BitGenRuntime: robot selection from an exported model directory, with onnxruntime + numpy only.

    rt = BitGenRuntime.load()                       # models/default, verified before anything runs
    sel = rt.select("inspect the flooded culvert", image=rgb, on_token=print)
    sel.robots[:3], sel.confidences[:3], sel.reasoning

One selection, in the order the latency dict reports it:
  vision   image -> preprocess (image_preprocess, same as training) -> vision.onnx -> image tokens
           (the graph optimised once per machine and cached, see sessions.py)
  memory   task -> text_encoder.onnx -> z -> Larimar read (numpy, float64) -> z_read, facts used
  prefill  [SINK][memory tokens][task][SEP] -> state at [SEP] + K/V per layer, in one pass of
           the numpy backbone (decode_np.NumpyDecoder.prefill; prefill.onnx for exports without
           the memory-prefix parameters, and with decode_backend="onnx"); the image's
           cross-attention K/V bound once, for the prefill and every decode step
  select   state x robot embeddings -> selector.onnx (Tiny-R1 + sigmoid per robot) -> ranking
  trace    greedy decode, one loop (`_decode`) around a step callable (`_stepper`): output head
           (int8 shortlist head.onnx + exact float32 re-score), then a decode step that appends
           to a numpy SinkKVCache, pieces streamed through `on_token`. Past the place, the trace
           keeps to the rationale grammar (constrained.py TraceGrammar): there a pick is forced
           or the exact argmax over the few valid rows, with no output head (188/190 dev traces
           identical to free decoding, the other 2 made well-formed; 23% less CPU per select). The step is
           decode_np.NumpyDecoder (same integer math, ~2.5x faster than decode.onnx whose per-node
           dispatch dominates at this size); decode.onnx remains the reference and the fallback
           for older exports. Once the decoder writes "selected:", the clause is forced to the
           selector's chosen robots and [EOS] (constrained.py), with no head or step for them.
           After the needs labels, the capable list the rules give for them is fed ahead as a
           draft in the same pass (constrained.py RuleDraft): draft tokens are kept while they
           are the decoder's own picks, the rest rewound -- the same trace in fewer passes
           (dev: 10.7 -> 5.8 passes per select, scripts/trace_grammar_check.py); after a
           two-word place, "→" is drafted the same way.

The KV cache keeps n_sink attention sinks plus a rolling window (StreamingLLM), keys stored
before rotary and rotated once at their stream position, so `trace_stream` can run for any
number of tokens at constant cost and memory.

Nothing here imports torch; a test checks `sys.modules` after load + select.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from bitgen_core.catalog import RobotCatalog
from bitgen_core.errors import InputError, ModelLoadError
from bitgen_core.image_preprocess import preprocess
from bitgen_core.kvcache_np import SinkKVCache
from bitgen_core.limits import DEFAULT_LIMITS, Limits, validate_task
from bitgen_core.runtime.constrained import RuleDraft, SelectionClause, TraceGrammar, chosen_robots
from bitgen_core.runtime.decode_np import BlasThreads, NumpyDecoder
from bitgen_core.runtime.memory import RuntimeMemory
from bitgen_core.runtime.model_files import ModelFiles, load_model_files  # noqa: F401  (re-exported)
from bitgen_core.runtime.sessions import build_sessions as make_sessions, trim_file_pages, tune_malloc
from bitgen_core.runtime.table_rows import TableRows

MODEL_DIR_ENV = "BITGEN_MODEL_DIR"
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def default_model_dir() -> Path:
    """The shipped default model: $BITGEN_MODEL_DIR if set, else `models/default` of the source
    checkout (next to bitgen_core/), else `<prefix>/share/bitgen_ros/models/default` where
    setup.py / colcon install it."""
    env = os.environ.get(MODEL_DIR_ENV)
    if env:
        return Path(env)
    candidates = [_PACKAGE_ROOT / "models" / "default",
                  Path(sys.prefix) / "share" / "bitgen_ros" / "models" / "default"]
    return next((c for c in candidates if c.is_dir()), candidates[0])


@dataclass
class Selection:
    robots: list[str]                 # ALL catalog robots (keys), best first
    confidences: list[float]          # same order; independent sigmoids
    top_k: int
    reasoning: str
    latency_ms: dict[str, float]      # vision, memory, prefill, select, trace, total
    memory_keys_used: list[str]
    model_id: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Prompt:
    """A prefilled task: state at [SEP] (1, d), its sink cache, the image as the ONNX graphs
    take it (feeds) and as the numpy decoder binds it (image_kv), the memory facts used and
    the facts' part of the read (z_read minus an empty memory's read, for the selector)."""
    state: np.ndarray
    cache: SinkKVCache
    feeds: dict
    image_kv: dict | None
    keys: list[str]
    fact: np.ndarray | None = None


def _rows(table: np.ndarray):
    """A memory-mapped (checked) .npy table -> TableRows over its file; in-memory ones stay."""
    if isinstance(table, np.memmap) and table.filename and table.flags.c_contiguous:
        return TableRows(table.filename, table.shape, table.offset)
    return table


class _NumpyStep:
    """The numpy decoder on one stream: step(tokens) -> state after the last; with
    all_states=True the state after each (a draft to verify), and rewind(n) to drop the
    newest n again (the part of a draft the decoder did not pick)."""
    drafts = True

    def __init__(self, dec: NumpyDecoder, embed, cache: SinkKVCache, image_kv):
        self.dec, self.embed, self.cache, self.image_kv = dec, embed, cache, image_kv

    def __call__(self, toks: list[int], all_states: bool = False) -> np.ndarray:
        return self.dec.step_many(self.embed[np.array(toks)], self.cache, self.image_kv, all_states)

    def room(self, n: int) -> bool:
        """n more tokens fit in one pass and could be rewound (nothing evicted)."""
        return self.cache.seen + n <= self.cache.capacity

    def rewind(self, n: int) -> None:
        self.cache.rewind(n)


class BitGenRuntime:
    _trim_after_first = False   # load() sets it: trim_file_pages once more after the first selection

    def __init__(self, files: ModelFiles, memory_path=None, *, limits: Limits = DEFAULT_LIMITS,
                 edit_guard=None, audit_log=None, memory_similarity: float = 0.5,
                 recover_memory: bool = False, decode_backend: str = "auto",
                 trace_grammar: bool = True, trace_draft: bool = True) -> None:
        """decode_backend: "numpy" (decode_np.py, the fast path), "onnx" (decode.onnx) or
        "auto" (numpy when the export carries its parameters). trace_grammar: decode the
        selection's trace within the rationale grammar (constrained.py; False: free decoding
        up to the "selected:" clause, the behaviour before it). trace_draft: within the grammar,
        feed the rules' capable list ahead as a draft the decoder verifies (constrained.py
        RuleDraft; same trace, fewer decoder passes; numpy decoder only)."""
        self.files = files
        self.model_dir = files.directory
        self.model_id: str = files.checked.manifest["model_id"]
        self.config = files.model_config
        self.catalog: RobotCatalog = files.catalog
        self.tokenizer = files.tokenizer
        self.limits = limits
        self._s = files.sessions
        # the embedding / head rows are read from the file as needed, not mapped (table_rows.py)
        self._embed = _rows(files.embed)
        self._lm_head = self._embed if files.lm_head is files.embed else _rows(files.lm_head)
        tokens = files.config["tokens"]
        self._pad, self._sep, self._eos, self._sink = (tokens[k] for k in ("pad", "sep", "eos", "sink"))
        self._vision = files.config.get("vision")
        cfg = self.config
        self._no_image = (np.zeros((1, cfg.n_image_tokens, cfg.d_model), np.float32),
                          np.zeros((1, cfg.n_image_tokens), bool))
        self._kv_empty = (cfg.n_layers, 1, cfg.n_heads, 0, cfg.head_dim)
        rcfg = files.config["robot_embeddings"]
        if rcfg["catalog_fingerprint"] == self.catalog.fingerprint():
            self.robot_embeddings = np.ascontiguousarray(files.robot_emb, dtype=np.float32)
        else:   # the catalog was edited after export: embed the new descriptions
            self.robot_embeddings = self._encode_texts(self.catalog.texts(), rcfg["max_tokens"])[2]
        if decode_backend not in ("auto", "numpy", "onnx"):
            raise ValueError(f"decode_backend must be auto, numpy or onnx, not {decode_backend!r}")
        self._np_decoder = None if decode_backend == "onnx" else NumpyDecoder.from_model_files(files)
        if decode_backend == "numpy" and self._np_decoder is None:
            raise ModelLoadError(f"{files.directory} has no numpy decode parameters; re-export the model")
        self.decode_backend = "numpy" if self._np_decoder is not None else "onnx"
        # the prompt goes through the same numpy backbone when the export carries the memory
        # prefix (prefill.onnx then gets no session: -3.5 MB RSS); older exports keep the graph
        self._np_prefill = self._np_decoder is not None and self._np_decoder.memory_prefix is not None
        self._blas_threads = BlasThreads(files.sessions["head"].get_session_options().intra_op_num_threads
                                         if "head" in files.sessions else 1)
        self._clause = SelectionClause(self.tokenizer, self.catalog)
        # exports with the selector's fact term (config memory_robot) take the facts' read part
        self._selector_fact = "fact" in {i.name for i in files.sessions["selector"].get_inputs()}
        self._grammar, self._grammar_rows = self._trace_grammar(trace_grammar)
        self._drafter = RuleDraft.for_catalog(self.tokenizer, self.catalog) if trace_grammar and trace_draft else None
        self.memory = RuntimeMemory(files.memory, self.encode_fact, memory_path, limits=limits,
                                    guard=edit_guard, audit=audit_log,
                                    similarity_threshold=memory_similarity, recover=recover_memory,
                                    tokens=lambda text: self.tokenizer.encode(text, self.config.max_task_tokens))

    def _trace_grammar(self, on: bool):
        """The trace grammar (constrained.py) and the output-head rows of its tokens, held in
        memory (a few hundred rows) so constrained picks read no file."""
        if not on:
            return None, None
        g = TraceGrammar.for_catalog(self.tokenizer, self.catalog)
        return g, (self._lm_head[np.array(g.tokens)], {t: i for i, t in enumerate(g.tokens)})

    @classmethod
    def load(cls, model_dir: str | os.PathLike | None = None, memory_path: str | os.PathLike | None = None,
             threads: int = 1, **kwargs) -> "BitGenRuntime":
        """Verify and load a model directory (None: the shipped default, see default_model_dir).
        Raises ModelLoadError (one line, naming the file) on anything missing or corrupt."""
        tune_malloc()
        d = Path(model_dir if model_dir is not None else default_model_dir())
        # decode.onnx and prefill.onnx get no session when the numpy backbone runs them (14 and
        # 3.5 MB RSS saved); older exports without its parameters keep them
        skip = () if kwargs.get("decode_backend", "auto") == "onnx" else ("decode", "prefill")
        files = load_model_files(d, threads, skip_graphs=skip)
        covered = {"decode": "decode_numpy" in files.config,
                   "prefill": bool(skip) and NumpyDecoder.covers_prefill(files)}
        missing = [g for g in skip if g in files.config["graphs"] and not covered[g]]
        if missing:
            files.sessions.update(make_sessions(files, threads, tuple(n for n in files.config["graphs"]
                                                                        if n not in missing)))
        rt = cls(files, memory_path, **kwargs)
        files.release_loading_data()
        trim_file_pages()   # the code and data only loading used leave the RSS (sessions.py)
        rt._trim_after_first = True   # and those a first selection alone runs (first-run set-up)
        return rt

    # ------------------------------------------------------------------ pieces
    def _encode_texts(self, texts: list[str], max_len: int):
        ids, mask = self.tokenizer.encode_batch(texts, max_len)
        ids = np.concatenate([np.full((len(texts), 1), self._sink, np.int64), ids], axis=1)
        mask = np.concatenate([np.zeros((len(texts), 1), np.int64), mask], axis=1).astype(np.float32)
        return self._s["text_encoder"].run(None, {"x": self._embed[ids], "mask": mask})

    def encode_fact(self, text: str) -> np.ndarray:
        """Memory encoding z (C,) of a fact or a query, as the trained model computes it."""
        ids = self.tokenizer.encode(text, self.config.max_task_tokens)
        return self._encode_ids(ids)

    def _encode_ids(self, ids: list[int]) -> np.ndarray:
        return self._s["text_encoder"].run(None, {
            "x": self._embed[np.array([[self._sink] + ids])],
            "mask": np.array([[0.0] + [1.0] * len(ids)], np.float32)})[1][0]

    def encode_image(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB -> image tokens (1, n_image_tokens, d)."""
        if self._vision is None:
            raise InputError("this model has no vision encoder; select without an image")
        if isinstance(image, np.ndarray) and image.ndim >= 2 and \
                image.shape[0] * image.shape[1] > self.limits.max_image_pixels:
            raise InputError(f"image has {image.shape[0] * image.shape[1]} pixels, the limit is "
                             f"{self.limits.max_image_pixels}")
        v = self._vision
        try:
            x = preprocess(image, v["image_size"], tuple(v["mean"]), tuple(v["std"]))
        except ValueError as e:
            raise InputError(str(e)) from None
        return self._s["vision"].run(None, {"images": x[None]})[0]

    def _image_feeds(self, image_tokens) -> dict:
        if self._vision is None:
            return {}
        if image_tokens is None:
            return {"image_tokens": self._no_image[0], "image_mask": self._no_image[1]}
        return {"image_tokens": image_tokens, "image_mask": np.ones(image_tokens.shape[:2], bool)}

    def _start(self, task: str, image, lat: dict) -> "_Prompt":
        """vision + memory + prefill -> the state at [SEP], its cache, the image for the decode."""
        cfg = self.config
        task = validate_task(task, self.limits)
        t = time.perf_counter()
        image_tokens = self.encode_image(image) if image is not None else None
        lat["vision"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        self.memory.sync()
        ids = self.tokenizer.encode(task, cfg.max_task_tokens)
        z = self._encode_ids(ids)
        z_read, keys = self.memory.read(z, ids)
        fact = (z_read - self.memory.prior_read(z))[None] if self._selector_fact else None
        lat["memory"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        prompt = [self._sink] + [self._pad] * cfg.n_memory_tokens + ids + [self._sep]
        img = self._image_feeds(image_tokens)
        image_kv = None
        if self._np_decoder is not None and image_tokens is not None:
            image_kv = self._np_decoder.bind_image(image_tokens)   # once: prefill and every step
        cache = SinkKVCache(cfg.n_sink, cfg.window)
        if self._np_prefill:
            state = self._np_decoder.prefill(self._embed[np.array(prompt)], z_read, cache, image_kv)
        else:
            state, k, v = self._s["prefill"].run(None, {"x": self._embed[np.array([prompt])],
                                                        "z_read": z_read[None].astype(np.float32), **img})
            cache.append(k, v)
        lat["prefill"] = (time.perf_counter() - t) * 1e3
        return _Prompt(state, cache, img, image_kv, keys, fact)

    def _selector_feeds(self, prompt: "_Prompt") -> dict:
        feeds = {"state": prompt.state, "robot_emb": self.robot_embeddings}
        if self._selector_fact:
            feeds["fact"] = prompt.fact
        return feeds

    def _next_token(self, state: np.ndarray, allowed: tuple[int, ...] | None = None) -> int:
        """Greedy pick: int8 head shortlist (head.onnx), exact float32 re-score of the shortlist.
        With `allowed` (the trace grammar's valid continuations; `_decode` forces a single one
        without calling this) no head: the exact float32 argmax over those rows."""
        if allowed is None:
            cand = self._s["head"].run(None, {"state": state})[0][0]
            return int(cand[np.argmax(self._lm_head[cand] @ state[0])])
        rows, index = self._grammar_rows
        return allowed[int(np.argmax(rows[[index[t] for t in allowed]] @ state[0]))]

    def _stepper(self, prompt: "_Prompt", cache: SinkKVCache | None = None
                 ) -> Callable[[list[int]], np.ndarray]:
        """The decode-step backend for one stream: token ids -> the state after the last, the
        tokens appended to the cache (the prompt's, or `cache` holding it). numpy (decode_np:
        image K/V bound once, each key rotated once, a run of tokens in one pass) or
        decode.onnx (the reference, and older exports; one graph call per token)."""
        cache = prompt.cache if cache is None else cache
        img = prompt.feeds
        if self._np_decoder is not None:
            if cache is not prompt.cache or not self._np_prefill:   # the numpy prefill rotated its keys already
                self._np_decoder.attach(cache)
            return _NumpyStep(self._np_decoder, self._embed, cache, prompt.image_kv)
        graph = self._s["decode"]

        def onnx_step(toks: list[int]) -> np.ndarray:
            for tok in toks:
                past_k, past_v = cache.past(self._kv_empty)
                state, k_new, v_new = graph.run(None, {"x": self._embed[np.array([[tok]])],
                                                       "past_k": past_k, "past_v": past_v, **img})
                cache.append(k_new, v_new)
            return state
        return onnx_step

    def _decode(self, state, step: Callable[[list[int]], np.ndarray], max_tokens: int,
                ignore_eos: bool = False, chosen: list[str] | None = None) -> Iterator[int]:
        """Greedy trace tokens after a prefill.

        A token is fed to the decoder (`step`) only when a later pick needs the state after
        it, and all tokens since the last state go in one call: a run the grammar forces
        ("and high structures; needs:") costs one pass, not one step per token.
        With `chosen` (the selector's robots), the clause after the decoder's `selected:`
        marker is forced to their names, then [EOS] (constrained.py); within the trace
        grammar (chosen given, trace_grammar on) a pick with one valid token is forced and a
        pick among a few is made on their rows only. Forced tokens need no output head, and
        what follows the clause needs no state, so no decode step either."""
        forced: list[int] = []
        trace: list[int] = []
        pending: list[int] = []          # picked, not yet fed to the decoder
        ahead: list[tuple[int, np.ndarray]] = []   # draft tokens fed past the picks, with states
        cursor = self._grammar.start() if chosen is not None and self._grammar is not None else None
        drafter = self._drafter if cursor is not None and getattr(step, "drafts", False) else None
        for i in range(max_tokens):
            allowed = None if cursor is None else cursor.allowed()
            if forced:
                pick = forced.pop(0)
            elif allowed is not None and len(allowed) == 1:
                pick = allowed[0]
            else:
                if pending:
                    draft = drafter.draft(trace) if drafter is not None and cursor.drafts() else []
                    if draft and step.room(len(pending) + len(draft)):
                        states = step(pending + draft, all_states=True)
                        n = len(pending)
                        state = states[n - 1:n]
                        ahead = [(t, states[n + j:n + j + 1]) for j, t in enumerate(draft)]
                    else:
                        state = step(pending)
                    pending = []
                pick = self._next_token(state, allowed)
            yield pick
            if (pick == self._eos and not ignore_eos) or i == max_tokens - 1:
                return
            trace.append(pick)
            if cursor is not None:
                cursor.advance(pick)
            fed = False
            if ahead:                    # a draft is in the cache: keep it while it is the pick
                if ahead[0][0] == pick:
                    state, fed = ahead.pop(0)[1], True
                else:
                    step.rewind(len(ahead))
                    ahead = []
            if chosen is not None and not forced and self._clause.marker_ends_at(trace):
                forced = self._clause.forced_ids(chosen)
                chosen = None
            if fed or (forced and not ignore_eos):
                continue
            pending.append(pick)

    # ------------------------------------------------------------------ public API
    def select(self, task: str, image: np.ndarray | None = None, top_k: int = 3,
               max_trace_tokens: int = 32, on_token: Callable[[str], None] | None = None) -> Selection:
        with self._blas_threads():
            sel = self._select(task, image, top_k, max_trace_tokens, on_token)
        if self._trim_after_first:   # once more, after the first selection (sessions.trim_file_pages)
            self._trim_after_first = False
            trim_file_pages()
        return sel

    def _select(self, task, image, top_k, max_trace_tokens, on_token) -> Selection:
        t0 = time.perf_counter()
        lat: dict[str, float] = {}
        prompt = self._start(task, image, lat)
        state, keys = prompt.state, prompt.keys
        t = time.perf_counter()
        probs = self._s["selector"].run(["probabilities"], self._selector_feeds(prompt))[0][0]
        order = np.argsort(-probs, kind="stable")
        lat["select"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        stream = self.tokenizer.decode_stream()
        pieces = []
        robots = [self.catalog.keys[i] for i in order]
        chosen = chosen_robots(robots, [float(probs[i]) for i in order])
        for tok in self._decode(state, self._stepper(prompt), max(0, int(max_trace_tokens)),
                                chosen=chosen):
            piece = stream.step(tok)
            if piece:
                pieces.append(piece)
                if on_token is not None:
                    on_token(piece)
        lat["trace"] = (time.perf_counter() - t) * 1e3
        lat["total"] = (time.perf_counter() - t0) * 1e3
        return Selection(robots=robots,
                         confidences=[float(probs[i]) for i in order],
                         top_k=max(0, min(int(top_k), len(order))), reasoning="".join(pieces),
                         latency_ms=lat, memory_keys_used=keys, model_id=self.model_id)

    def trace_stream(self, task: str, image: np.ndarray | None = None, max_new_tokens: int | None = None,
                     ignore_eos: bool = False, cache: SinkKVCache | None = None) -> Iterator[int]:
        """Trace token ids as generated, for as long as asked (None: until [EOS], unbounded).

        With ignore_eos the stream keeps decoding past [EOS]; per-token cost and memory stay
        constant because the cache keeps n_sink + window tokens. Pass your own (empty) `cache`
        to watch it or to size it differently (a huge window is the full-cache baseline the
        benchmark compares against)."""
        with self._blas_threads():   # held while the stream is open (see BlasThreads)
            lat: dict[str, float] = {}
            prompt = self._start(task, image, lat)
            if cache is not None:
                cache.append(prompt.cache.k, prompt.cache.v)
            n = max_new_tokens if max_new_tokens is not None else sys.maxsize
            yield from self._decode(prompt.state, self._stepper(prompt, cache), n, ignore_eos)

    def robot_probabilities(self, task: str, image: np.ndarray | None = None) -> dict[str, float]:
        """Probability per catalog robot (catalog order), without a trace."""
        sel = self.select(task, image, max_trace_tokens=0)
        return dict(zip(sel.robots, sel.confidences))
