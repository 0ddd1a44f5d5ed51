"""wordpiece.WordPiece (the runtime's pure-Python tokenizer) gives exactly HF `tokenizers`' ids.

Checked three ways against the shipped tokenizer.json loaded by HF `tokenizers`:
- every Unicode code point alone: normalisation (clean_text, CJK padding, NFD + accent strip,
  lowercase) and pre-tokenisation (whitespace, punctuation) equal HF's, which also re-derives
  wordpiece.py's override tables (where Rust's Unicode tables differ from Python's);
- ids of every line of the repository's text files (docs, code, data, catalogs);
- ids of 30,000 random strings built to hit the edges: accents and combining marks, CJK,
  Hangul, Greek final sigma, emoji, every whitespace and control char, NUL / U+FFFD / zero-width,
  special tokens inside words, long words (around the 100-char [UNK] cut), vocabulary pieces
  glued together, and code points drawn from the whole range.
"""
import glob
import json
import random
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from bitgen_core import wordpiece as W
from bitgen_core.tokenizer import DEFAULT_TOKENIZER_DIR, BitGenTokenizer

tokenizers = pytest.importorskip("tokenizers")
ROOT = Path(__file__).resolve().parents[2]
JSON_TEXT = (DEFAULT_TOKENIZER_DIR / "tokenizer.json").read_text(encoding="utf-8")

pytestmark = pytest.mark.skipif(not W.exact_here(), reason="override tables measured on Unicode "
                                f"{W.UNICODE_VERSION}, this Python has {unicodedata.unidata_version}")


@pytest.fixture(scope="module")
def hf():
    return tokenizers.Tokenizer.from_str(JSON_TEXT)


@pytest.fixture(scope="module")
def wp():
    return W.WordPiece.from_str(JSON_TEXT)


def _ranges(cps):
    out = []
    for cp in sorted(cps):
        if out and out[-1][1] == cp - 1:
            out[-1] = (out[-1][0], cp)
        else:
            out.append((cp, cp))
    return tuple(out)


def test_every_code_point():
    """Each code point's normalisation and pre-tokenisation equals HF's; the override tables
    are exactly the code points where Python's unicodedata and the Rust tables disagree."""
    n = tokenizers.normalizers
    clean = n.BertNormalizer(clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False)
    strip = n.BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False)
    lower = n.BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=True)
    full = n.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    pre = tokenizers.pre_tokenizers.BertPreTokenizer()
    found = {k: [] for k in W._RUST_OVERRIDES}
    lowers, mismatched = {}, []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue   # surrogates are not text (a Rust str cannot hold one)
        c = chr(cp)
        dropped = clean.normalize_str(c) == ""
        py_control = cp not in (0, 0xFFFD) and c not in "\t\n\r" and unicodedata.category(c) in W._CONTROL_CATEGORIES
        if dropped != (py_control or cp in (0, 0xFFFD)):
            found["control" if dropped else "not_control"].append(cp)
        if not dropped:
            assert (clean.normalize_str(c) == " ") == (c in W._WHITE_SPACE), hex(cp)
        s = strip.normalize_str(c)
        nfd = unicodedata.normalize("NFD", c)
        if s != "".join(x for x in nfd if unicodedata.category(x) != "Mn"):
            if s == c and nfd == c:
                found["not_mn"].append(cp)
            elif s == "" and nfd == c:
                found["mn"].append(cp)
            elif s == c:
                found["nfd_keep"].append(cp)
            else:
                mismatched.append(cp)
        lo = lower.normalize_str(c)
        if lo != c.lower():
            lowers[cp] = lo
        words = [w for w, _ in pre.pre_tokenize_str("a" + c + "a")]
        if c not in W._WHITE_SPACE and not dropped:
            hf_punct = words == ["a", c, "a"]
            py_punct = c in W._ASCII_PUNCT or unicodedata.category(c)[0] == "P"
            if hf_punct != py_punct:
                found["punct" if hf_punct else "not_punct"].append(cp)
        if full.normalize_str(c) != W._normalize(c):
            mismatched.append(cp)
    fresh = {k: _ranges(v) for k, v in found.items()}
    assert not mismatched, [hex(cp) for cp in mismatched[:50]]
    assert fresh == W._RUST_OVERRIDES, f"new override tables: {fresh}"
    assert {cp: ord(lo) for cp, lo in lowers.items()} == {ord(k): ord(v) for k, v in W._LOWER_OVERRIDES.items()}


def _repo_lines():
    lines = []
    for pat in ("**/*.md", "**/*.py", "**/*.yaml", "**/*.json", "**/*.jsonl", "**/*.txt"):
        for f in sorted(glob.glob(str(ROOT / pat), recursive=True)):
            if "/.venv/" in f or "/.git/" in f or "/node_modules/" in f:
                continue
            try:
                lines.extend(line[:4000] for line in Path(f).read_text(encoding="utf-8").splitlines()[:1000])
            except (UnicodeDecodeError, OSError):
                continue
    return lines


def _random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocab = json.loads(JSON_TEXT)["model"]["vocab"]
    pieces = list(vocab)
    overrides = [chr(cp) for rs in W._RUST_OVERRIDES.values() for a, b in rs for cp in range(a, b + 1)]
    overrides += list(W._LOWER_OVERRIDES)
    specials = ["[PAD]", "[EOS]", "[SINK]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[sep]", "[SE",
                "[[SEP]]", "[SEP][SEP]", "##", "[unused5]"]
    pools = [
        lambda: chr(rng.randint(0x20, 0x7E)),
        lambda: rng.choice("abcdefghijklmnopqrstuvwxyz      .,;:!?'\"-()"),
        lambda: chr(rng.randint(0xC0, 0x24F)),                         # Latin with accents
        lambda: chr(rng.randint(0x300, 0x36F)),                        # combining marks
        lambda: rng.choice("e\u0301a\u0308o\u0302n\u0303c\u0327"),     # decomposed accents
        lambda: chr(rng.randint(0x4E00, 0x9FFF)),                      # CJK
        lambda: chr(rng.randint(0x20000, 0x2A6DF)),                    # CJK ext. B
        lambda: chr(rng.randint(0xAC00, 0xD7A3)),                      # Hangul syllables
        lambda: chr(rng.randint(0x370, 0x3FF)),                        # Greek (final sigma)
        lambda: chr(rng.randint(0x400, 0x4FF)),                        # Cyrillic
        lambda: chr(rng.randint(0x600, 0x6FF)),                        # Arabic
        lambda: chr(rng.randint(0x900, 0x97F)),                        # Devanagari
        lambda: chr(rng.randint(0x1F300, 0x1FAFF)),                    # emoji
        lambda: rng.choice(sorted(W._WHITE_SPACE)),
        lambda: chr(rng.randint(0, 0x1F)),                             # C0 controls
        lambda: chr(rng.randint(0x7F, 0x9F)),                          # DEL, C1 controls
        lambda: rng.choice("\x00\ufffd\u200b\u200c\u200d\ufeff\u00ad\u2060"),
        lambda: rng.choice(specials),
        lambda: rng.choice(pieces).removeprefix("##"),
        lambda: rng.choice(overrides),
        lambda: chr(rng.choice([rng.randint(0, 0xD7FF), rng.randint(0xE000, 0x10FFFF)])),
        lambda: "".join(rng.choice("abcdefghij") for _ in range(rng.randint(95, 105))),  # 100-char cut
        lambda: "".join(rng.choice(pieces).removeprefix("##") for _ in range(rng.randint(2, 6))),
    ]
    out = []
    for _ in range(n):
        mix = rng.sample(range(len(pools)), rng.randint(1, 4))
        out.append("".join(pools[rng.choice(mix)]() for _ in range(rng.randint(1, 60))))
    return out


def test_ids_identical_on_the_repository_text(hf, wp):
    lines = _repo_lines()
    assert len(lines) > 10000
    for line in lines:
        assert wp.encode_ids(line) == hf.encode(line, add_special_tokens=False).ids, line


def test_ids_identical_on_random_edge_case_text(hf, wp):
    texts = _random_texts(30000)
    for text in texts:
        assert wp.encode_ids(text) == hf.encode(text, add_special_tokens=False).ids, ascii(text)
    long_text = " ".join(texts[:300])   # one long text through both
    assert wp.encode_ids(long_text) == hf.encode(long_text, add_special_tokens=False).ids


def test_bitgen_tokenizer_same_on_both_backends(hf):
    pure, ref = BitGenTokenizer.from_json(JSON_TEXT), BitGenTokenizer(tokenizers.Tokenizer.from_str(JSON_TEXT))
    assert isinstance(pure._tok, W.WordPiece)
    texts = ["Inspect the CAFÉ roof [SEP] now", "quadcopter scaffolding xylophonic", "", "   ",
             "carry 20 kg of sandbags up the stairs to level 3/room 12-b."]
    for t in texts:
        assert pure.encode(t) == ref.encode(t) and pure.tokens(t) == ref.tokens(t)
        assert pure.encode(t, 3) == ref.encode(t, 3)
    for a, b in zip(pure.encode_batch(texts, 8), ref.encode_batch(texts, 8)):
        assert (a == b).all()
    assert pure.vocab_size == ref.vocab_size
    for i in (0, 1, 2, 100, 101, 102, 103, 999, 2000, 30521):
        assert pure.token(i) == ref.token(i)
    with pytest.raises(IndexError):
        pure.token(30522)
    assert pure.token_id("drone") == ref.token_id("drone") and pure.token_id("nope-not-a-token") is None
    ids = ref.encode("environment: flooded tunnel; selected: drone, legged.")
    assert pure.decode(ids) == ref.decode(ids)


def test_to_str_round_trips(hf):
    wp = W.WordPiece.from_str(JSON_TEXT)
    again = tokenizers.Tokenizer.from_str(wp.to_str())
    for t in _random_texts(500, seed=1):
        assert again.encode(t, add_special_tokens=False).ids == hf.encode(t, add_special_tokens=False).ids


@pytest.mark.parametrize("change", [
    lambda s: s["normalizer"].update(lowercase=False),
    lambda s: s.update(pre_tokenizer={"type": "Whitespace"}),
    lambda s: s["normalizer"].update(strip_accents=False),
    lambda s: s["added_tokens"][0].update(lstrip=True),
])
def test_other_specs_are_refused(change):
    spec = json.loads(JSON_TEXT)
    change(spec)
    with pytest.raises(ValueError):
        W.WordPiece.from_str(json.dumps(spec))
    # BitGenTokenizer falls back to HF tokenizers for them
    assert not isinstance(BitGenTokenizer.from_json(json.dumps(spec))._tok, W.WordPiece)


def test_runtime_load_does_not_import_tokenizers():
    code = ("import sys; from bitgen_core.runtime import BitGenRuntime; rt = BitGenRuntime.load(); "
            "rt.select('inspect the roof'); print('tokenizers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
