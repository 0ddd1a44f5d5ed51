"""BitGenTokenizer: MiniLM WordPiece ids, BitGen specials, clean decoding, streaming, files,
and the MiniLM-seeded embeddings."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitgen_core.errors import ModelLoadError
from bitgen_core.tokenizer import (DEFAULT_TOKENIZER_DIR, BitGenTokenizer, minilm_init_embeddings,
                                   minilm_model_dir)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tok():
    return BitGenTokenizer.load()


@pytest.fixture(scope="module")
def emb64():
    return minilm_init_embeddings(64)


@pytest.mark.parametrize("text", [
    "send something to check the roof of the parking garage after the storm.",
    "environment: flooded tunnel → underwater; needs: inspection, heavy payload; selected: drone, legged.",
    "we need eyes on the north pier (fast), the divers can't go down.",
    "carry 20 kg of sandbags up the stairs to level 3/room 12-b.",
])
def test_round_trip_on_real_english(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_normalises_case_and_accents(tok):
    assert tok.decode(tok.encode("Inspect the CAFÉ roof")) == "inspect the cafe roof"


def test_ids_are_minilm_ids(tok):
    # same vocabulary file, same ids: MiniLM's embedding row i is our token i
    vocab = (minilm_model_dir() / "vocab.txt").read_text(encoding="utf-8").split("\n")
    for word in ("drone", "warehouse", "submarine", "stairs"):
        assert tok.encode(word) == [vocab.index(word)]
    assert tok.vocab_size == 30522


def test_unknown_words_split_into_pieces_not_unk(tok):
    pieces = tok.tokens("quadcopter")
    assert len(pieces) > 1 and pieces[0] == "quad" and all(p.startswith("##") for p in pieces[1:])
    assert tok.unk_id not in tok.encode("quadcopter scaffolding xylophonic")
    assert tok.decode(tok.encode("quadcopter")) == "quadcopter"


def test_special_tokens(tok):
    assert (tok.pad_id, tok.eos_id, tok.sink_id, tok.unk_id, tok.bos_id, tok.sep_id) == \
           (0, 1, 2, 100, 101, 102)
    assert tok.token(tok.eos_id) == "[EOS]" and tok.token(tok.sink_id) == "[SINK]"
    # specials are atomic when written out, and skipped (or kept) on decode
    assert tok.encode("drone [SEP] wheels [EOS]") == [tok.encode("drone")[0], tok.sep_id,
                                                      tok.encode("wheels")[0], tok.eos_id]
    ids = [tok.sink_id] + tok.encode("selected: drone") + [tok.eos_id, tok.pad_id]
    assert tok.decode(ids) == "selected: drone"
    assert "[EOS]" in tok.decode(ids, skip_special=False)
    # no [CLS]/[SEP] template and no truncation/padding inherited from MiniLM
    assert len(tok.encode("a " * 300)) == 300


def test_encode_truncates_and_batches(tok):
    assert tok.encode("one two three four five", max_len=3) == tok.encode("one two three")
    ids, mask = tok.encode_batch(["a robot", "", "inspect the long pipe quickly"], max_len=4)
    assert ids.shape == mask.shape == (3, 4) and ids.dtype == np.int64
    assert mask.sum(1).tolist() == [2, 0, 4]
    assert (ids[mask == 0] == tok.pad_id).all()


def test_streamed_pieces_concatenate_to_decode(tok):
    text = "environment: rubble → legged; needs: stairs, don't wait; selected: legged, humanoid."
    ids = [tok.sink_id] + tok.encode(text) + [tok.eos_id]
    stream = tok.decode_stream()
    pieces = [stream.step(i) for i in ids]
    assert "".join(pieces) == tok.decode(ids) == text
    assert pieces[0] == "" and pieces[-1] == ""          # specials stream nothing
    assert sum(1 for p in pieces if p) == len(ids) - 2   # one piece per real token


def test_save_load_round_trip(tmp_path, tok):
    path = tok.save(tmp_path)
    again = BitGenTokenizer.load(tmp_path)
    assert path.name == "tokenizer.json"
    text = "deliver the medical kit to the third floor"
    assert again.encode(text) == tok.encode(text) and again.eos_id == tok.eos_id
    with pytest.raises(ModelLoadError, match="not found"):
        BitGenTokenizer.load(tmp_path / "missing")
    (tmp_path / "tokenizer.json").write_text("{ not json")
    with pytest.raises(ModelLoadError, match="unreadable"):
        BitGenTokenizer.load(tmp_path)


def test_shipped_tokenizer_is_what_the_build_script_makes():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_tokenizer.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (DEFAULT_TOKENIZER_DIR / "meta.json").exists()


def test_minilm_embeddings_keep_neighbourhoods(tok, emb64):
    assert emb64.shape == (30522, 64) and emb64.dtype == np.float32
    unit = emb64 / np.linalg.norm(emb64, axis=1, keepdims=True)

    def cos(a, b):
        return float(unit[tok.encode(a)[0]] @ unit[tok.encode(b)[0]])

    assert cos("drone", "aircraft") > cos("drone", "submarine") + 0.1
    assert cos("submarine", "underwater") > cos("submarine", "aircraft") + 0.1
    assert cos("stairs", "staircase") > cos("stairs", "ocean") + 0.3
    # nearest neighbours of 'drone' are about flying, as in MiniLM itself
    near = np.argsort(-(unit @ unit[tok.encode("drone")[0]]))[1:15]
    assert {"helicopter", "aerial", "aircraft"} <= {tok.token(int(i)) for i in near}


def test_minilm_embeddings_are_deterministic_and_scaled(emb64):
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=2, user_api="blas"):     # the caller's BLAS threads do not matter
        again = minilm_init_embeddings(64)
    np.testing.assert_array_equal(again, emb64)
    assert np.linalg.norm(emb64, axis=1).mean() == pytest.approx(1.0, rel=1e-4)
    # the PCA prefix property: a 32-d projection is the first 32 columns of the 64-d one
    e32 = minilm_init_embeddings(32)
    k = float((emb64[:, :32] * e32).sum() / (e32 * e32).sum())
    np.testing.assert_allclose(e32 * k, emb64[:, :32], atol=1e-4)
