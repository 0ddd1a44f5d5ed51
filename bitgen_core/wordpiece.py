"""BERT WordPiece in pure Python: the runtime's tokenizer, id for id what HF `tokenizers` gives.

Written by hand (not generated, not a port of a library) for one reason: memory. The runtime
loaded tokenizer.json with HF `tokenizers`, whose Rust object held 10.7 MB of heap and whose
library mapped another 5.1 MB, in a process whose whole budget is 100 MB. This module keeps the
vocabulary in one Python dict (4.8 MB) and needs no extension module. It implements exactly the
pipeline the shipped tokenizer.json declares, and refuses (ValueError) any other spec, so the
caller can fall back to `tokenizers`:

  added tokens   every special token (all `normalized: false`, no lstrip/rstrip/single_word) is
                 cut out of the raw text first, leftmost-longest, as HF's AddedVocabulary does;
  BertNormalizer clean_text (drop NUL, U+FFFD and control/format/unassigned chars except
                 \\t \\n \\r; White_Space -> " "), CJK ideographs padded with spaces, NFD with
                 non-spacing marks (Mn) removed, then lowercase char by char (Rust's
                 char::to_lowercase, no final-sigma rule);
  BertPreTokenizer  split on whitespace, every punctuation char (ASCII punctuation or a P*
                 category) a word of its own;
  WordPiece      greedy longest match first, "##" for word-internal pieces; a word with more
                 than max_input_chars_per_word chars, or with any part no piece matches, is one
                 [UNK].

Character classes come from Python's `unicodedata`. The Rust crates behind `tokenizers` use
other Unicode versions (its category tables are older than Python 3.11's Unicode 14, its
lowercase / White_Space ones newer), so the code points where the two disagree are listed in
`_RUST_OVERRIDES`, found by comparing every code point's normalisation and pre-tokenisation
with HF's (tests/core/test_wordpiece.py recomputes them and checks ids over a large corpus).
Those lists hold for the Unicode version they were measured on (`UNICODE_VERSION`); on another
Python `exact_here()` is False and `bitgen_core.tokenizer` uses HF `tokenizers` instead when it
is installed.
"""
from __future__ import annotations

import json
import re
import unicodedata

UNICODE_VERSION = "14.0.0"   # unicodedata.unidata_version the override tables were measured on

# ASCII fast path: str.translate tables
_ASCII_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_ASCII_DROP = {c: None for c in range(32) if c not in (9, 10, 13)} | {127: None}
_ASCII_SPACE = {9: 32, 10: 32, 13: 32}
_ASCII_WORDS = re.compile(r"[^ !-/:-@\[-`{-~]+|[!-/:-@\[-`{-~]")

# Rust's char::is_whitespace (the Unicode White_Space property)
_WHITE_SPACE = frozenset(map(chr, [0x9, 0xA, 0xB, 0xC, 0xD, 0x20, 0x85, 0xA0, 0x1680,
                                   *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000]))
_CONTROL_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Co"))   # not Cn: unassigned chars stay


def _is_chinese(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B920 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


# Code points where HF tokenizers' Rust tables and Python 3.11's unicodedata (Unicode 14) differ,
# measured by tests/core/test_wordpiece.py::test_every_code_point (which prints fresh lists).
# key -> code points HF treats that way although unicodedata says otherwise.
_RUST_OVERRIDES: dict[str, tuple[tuple[int, int], ...]] = {
    "control": (),
    "not_control": (
        (0x890, 0x891), (0x8E2, 0x8E2), (0x110CD, 0x110CD), (0x13430, 0x13438)),
    "punct": (
        (0x166D, 0x166D), (0x111C9, 0x111C9)),
    "not_punct": (
        (0x61D, 0x61D), (0x9FD, 0x9FD), (0xA76, 0xA76), (0xC77, 0xC77), (0xC84, 0xC84),
        (0x1B7D, 0x1B7E), (0x2E43, 0x2E4F), (0x2E52, 0x2E5D), (0x10EAD, 0x10EAD), (0x10F55,
        0x10F59), (0x10F86, 0x10F89), (0x1144B, 0x1144F), (0x1145A, 0x1145B), (0x1145D,
        0x1145D), (0x11660, 0x1166C), (0x116B9, 0x116B9), (0x1183B, 0x1183B), (0x11944,
        0x11946), (0x119E2, 0x119E2), (0x11A3F, 0x11A46), (0x11A9A, 0x11A9C), (0x11A9E,
        0x11AA2), (0x11C41, 0x11C45), (0x11C70, 0x11C71), (0x11EF7, 0x11EF8), (0x11FFF,
        0x11FFF), (0x12FF1, 0x12FF2), (0x16E97, 0x16E9A), (0x16FE2, 0x16FE2), (0x1E95E,
        0x1E95F)),
    "mn": (
        (0x1734, 0x1734),),
    "not_mn": (
        (0x7FD, 0x7FD), (0x898, 0x89F), (0x8CA, 0x8E1), (0x9FE, 0x9FE), (0xAFA, 0xAFF),
        (0xB55, 0xB55), (0xC04, 0xC04), (0xC3C, 0xC3C), (0xD00, 0xD00), (0xD3B, 0xD3C),
        (0xD81, 0xD81), (0xEBA, 0xEBA), (0x180F, 0x180F), (0x1885, 0x1886), (0x1ABF,
        0x1ACE), (0x1DF6, 0x1DFB), (0xA82C, 0xA82C), (0xA8C5, 0xA8C5), (0xA8FF, 0xA8FF),
        (0xA9BD, 0xA9BD), (0x10D24, 0x10D27), (0x10EAB, 0x10EAC), (0x10F46, 0x10F50),
        (0x10F82, 0x10F85), (0x11070, 0x11070), (0x11073, 0x11074), (0x110C2, 0x110C2),
        (0x111C9, 0x111C9), (0x111CF, 0x111CF), (0x1123E, 0x1123E), (0x1133B, 0x1133B),
        (0x11438, 0x1143F), (0x11442, 0x11444), (0x11446, 0x11446), (0x1145E, 0x1145E),
        (0x1182F, 0x11837), (0x11839, 0x1183A), (0x1193B, 0x1193C), (0x1193E, 0x1193E),
        (0x11943, 0x11943), (0x119D4, 0x119D7), (0x119DA, 0x119DB), (0x119E0, 0x119E0),
        (0x11A01, 0x11A0A), (0x11A33, 0x11A38), (0x11A3B, 0x11A3E), (0x11A47, 0x11A47),
        (0x11A51, 0x11A56), (0x11A59, 0x11A5B), (0x11A8A, 0x11A96), (0x11A98, 0x11A99),
        (0x11C30, 0x11C36), (0x11C38, 0x11C3D), (0x11C3F, 0x11C3F), (0x11C92, 0x11CA7),
        (0x11CAA, 0x11CB0), (0x11CB2, 0x11CB3), (0x11CB5, 0x11CB6), (0x11D31, 0x11D36),
        (0x11D3A, 0x11D3A), (0x11D3C, 0x11D3D), (0x11D3F, 0x11D45), (0x11D47, 0x11D47),
        (0x11D90, 0x11D91), (0x11D95, 0x11D95), (0x11D97, 0x11D97), (0x11EF3, 0x11EF4),
        (0x16F4F, 0x16F4F), (0x16FE4, 0x16FE4), (0x1CF00, 0x1CF2D), (0x1CF30, 0x1CF46),
        (0x1E000, 0x1E006), (0x1E008, 0x1E018), (0x1E01B, 0x1E021), (0x1E023, 0x1E024),
        (0x1E026, 0x1E02A), (0x1E130, 0x1E136), (0x1E2AE, 0x1E2AE), (0x1E2EC, 0x1E2EF),
        (0x1E944, 0x1E94A)),
    "nfd_keep": (
        (0x11938, 0x11938),),
}
# (first, last, lowercase of first): Rust's to_lowercase where Python's lower() differs
_LOWER_RUNS = ((0x1C89, 0x1C89, 0x1C8A), (0xA7CB, 0xA7CB, 0x264), (0xA7CC, 0xA7CC, 0xA7CD),
               (0xA7CE, 0xA7CE, 0xA7CF), (0xA7D2, 0xA7D2, 0xA7D3), (0xA7D4, 0xA7D4, 0xA7D5),
               (0xA7DA, 0xA7DA, 0xA7DB), (0xA7DC, 0xA7DC, 0x19B), (0x10D50, 0x10D65, 0x10D70),
               (0x16EA0, 0x16EB8, 0x16EBB))


class WordPiece:
    """The subset of `tokenizers.Tokenizer` that BitGenTokenizer uses, for a BERT WordPiece spec."""

    def __init__(self, vocab: dict[str, int], specials: dict[str, int], unk: str = "[UNK]",
                 prefix: str = "##", max_chars: int = 100, spec: dict | None = None):
        self._vocab = vocab
        self._inverse = [""] * (max(vocab.values()) + 1 if vocab else 0)
        for token, i in vocab.items():
            self._inverse[i] = token
        for token, i in specials.items():   # added tokens take their ids over the vocabulary's
            if i >= len(self._inverse):
                self._inverse.extend([""] * (i + 1 - len(self._inverse)))
            self._inverse[i] = token
        self._specials = specials
        self._unk = vocab[unk] if unk in vocab else specials[unk]
        self._prefix = prefix
        self._max_chars = int(max_chars)
        self._longest = max((len(t) for t in vocab), default=1)   # no longer piece can match
        self._spec = spec
        names = sorted(specials, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(map(re.escape, names)) + ")") if names else None

    # --- loading --------------------------------------------------------------------------
    @classmethod
    def from_str(cls, text: str) -> "WordPiece":
        """Parse tokenizer.json; ValueError for anything but the BERT WordPiece pipeline above."""
        spec = json.loads(text)
        model, norm, pre = spec.get("model") or {}, spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}
        want_norm = {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                     "lowercase": True}
        if model.get("type") != "WordPiece" or any(norm.get(k) != v for k, v in want_norm.items()) \
                or norm.get("strip_accents") not in (None, True) or pre != {"type": "BertPreTokenizer"}:
            raise ValueError("not a lower-casing BERT WordPiece tokenizer")
        if spec.get("truncation") or spec.get("padding") or spec.get("post_processor"):
            raise ValueError("truncation, padding and post-processing are not supported")
        specials = {}
        for t in spec.get("added_tokens") or []:
            if t.get("normalized") or t.get("single_word") or t.get("lstrip") or t.get("rstrip"):
                raise ValueError(f"added token {t.get('content')!r} has options this tokenizer lacks")
            specials[t["content"]] = int(t["id"])
        vocab = model["vocab"]
        if not isinstance(vocab, dict) or not vocab:
            raise ValueError("WordPiece vocabulary missing")
        rest = {k: v for k, v in spec.items() if k != "model"}
        rest["model"] = {k: v for k, v in model.items() if k != "vocab"}
        return cls(vocab, specials, model.get("unk_token", "[UNK]"),
                   model.get("continuing_subword_prefix", "##"),
                   model.get("max_input_chars_per_word", 100), rest)

    def to_str(self) -> str:
        """tokenizer.json text of this tokenizer (same content as the file it came from)."""
        if self._spec is None:
            raise ValueError("tokenizer built without a spec cannot be saved")
        spec = dict(self._spec)
        spec["model"] = dict(spec["model"], vocab=self._vocab)
        return json.dumps(spec, ensure_ascii=False)

    # --- vocabulary -----------------------------------------------------------------------
    def get_vocab_size(self) -> int:
        return len(self._inverse)

    def token_to_id(self, token: str) -> int | None:
        i = self._specials.get(token)
        return i if i is not None else self._vocab.get(token)

    def id_to_token(self, idx: int) -> str | None:
        return self._inverse[idx] if 0 <= idx < len(self._inverse) and self._inverse[idx] else None

    # --- encoding -------------------------------------------------------------------------
    def encode_ids(self, text: str) -> list[int]:
        """Ids of `text` without post-processing (HF's encode(text, add_special_tokens=False))."""
        if self._split is None or "[" not in text:
            return self._segment(text)
        out: list[int] = []
        for i, part in enumerate(self._split.split(text)):
            if i % 2:
                out.append(self._specials[part])
            elif part:
                out.extend(self._segment(part))
        return out

    def encode_tokens(self, text: str) -> list[str]:
        return [self._inverse[i] for i in self.encode_ids(text)]

    def _segment(self, text: str) -> list[int]:
        out: list[int] = []
        for word in self.words(text):
            out.extend(self._word(word))
        return out

    def words(self, text: str) -> list[str]:
        """Normalised, pre-tokenised words of a text without special tokens."""
        if text.isascii():
            text = text.translate(_ASCII_DROP).translate(_ASCII_SPACE).lower()
            return _ASCII_WORDS.findall(text)
        return _pre_tokenize(_normalize(text))

    def _word(self, word: str) -> list[int]:
        if len(word) > self._max_chars:
            return [self._unk]
        vocab, prefix, longest = self._vocab, self._prefix, self._longest
        ids, start, n = [], 0, len(word)
        while start < n:
            end = min(n, start + longest)
            while end > start:
                piece = word[start:end] if start == 0 else prefix + word[start:end]
                i = vocab.get(piece)
                if i is not None:
                    ids.append(i)
                    break
                end -= 1
            else:
                return [self._unk]
            start = end
        return ids


# --- the non-ASCII path -------------------------------------------------------------------
def _override(name: str) -> frozenset[str]:
    return frozenset(chr(cp) for a, b in _RUST_OVERRIDES[name] for cp in range(a, b + 1))


_CONTROL_YES, _CONTROL_NO = _override("control"), _override("not_control")
_PUNCT_YES, _PUNCT_NO = _override("punct"), _override("not_punct")
_MN_YES, _MN_NO = _override("mn"), _override("not_mn")
_NFD_KEEP = _override("nfd_keep")
_NFD_KEEP_SPLIT = re.compile("([" + "".join(sorted(_NFD_KEEP)) + "])") if _NFD_KEEP else None
_LOWER_OVERRIDES = {chr(a + i): chr(t + i) for a, b, t in _LOWER_RUNS for i in range(b - a + 1)}


def is_control(c: str) -> bool:
    if c in ("\t", "\n", "\r"):
        return False
    if c in _CONTROL_YES:
        return True
    return c not in _CONTROL_NO and unicodedata.category(c) in _CONTROL_CATEGORIES


def is_punctuation(c: str) -> bool:
    if c in _ASCII_PUNCT or c in _PUNCT_YES:
        return True
    return c not in _PUNCT_NO and unicodedata.category(c)[0] == "P"


def is_nonspacing_mark(c: str) -> bool:
    if c in _MN_YES:
        return True
    return c not in _MN_NO and unicodedata.category(c) == "Mn"


def _lower(c: str) -> str:
    low = _LOWER_OVERRIDES.get(c)
    return low if low is not None else c.lower()


def _normalize(text: str) -> str:
    """BertNormalizer(clean_text, handle_chinese_chars, strip_accents, lowercase)."""
    out = []
    for c in text:
        cp = ord(c)
        if cp == 0 or cp == 0xFFFD or is_control(c):
            continue
        if c in _WHITE_SPACE:
            out.append(" ")
        elif _is_chinese(cp):
            out.append(" " + c + " ")
        else:
            out.append(c)
    text = "".join(out)
    if _NFD_KEEP_SPLIT is not None and not _NFD_KEEP.isdisjoint(text):   # chars Rust leaves whole
        text = "".join(p if i % 2 else unicodedata.normalize("NFD", p)
                       for i, p in enumerate(_NFD_KEEP_SPLIT.split(text)))
    else:
        text = unicodedata.normalize("NFD", text)
    return "".join(_lower(c) for c in text if not is_nonspacing_mark(c))


def _pre_tokenize(text: str) -> list[str]:
    """BertPreTokenizer: whitespace splits and is dropped, punctuation is a word of its own."""
    words, cur = [], []
    for c in text:
        if c in _WHITE_SPACE:
            if cur:
                words.append("".join(cur))
                cur = []
        elif is_punctuation(c):
            if cur:
                words.append("".join(cur))
                cur = []
            words.append(c)
        else:
            cur.append(c)
    if cur:
        words.append("".join(cur))
    return words


def exact_here() -> bool:
    """Whether the override tables were measured on this Python's Unicode version."""
    return unicodedata.unidata_version == UNICODE_VERSION
