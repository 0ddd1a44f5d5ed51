"""Stage 1 end to end on the smoke config: every loss, retrieval metrics, checkpoint, resume."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bitgen_core.data.generate import write_corpus
from bitgen_core.model import BitGenModel
from training import stage1
from training.common import REPO, TEACHER_FILE, minilm_table, read_teacher_keys

torch.set_num_threads(1)
SMOKE = str(REPO / "training" / "configs" / "smoke.yaml")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus1")
    write_corpus(out, 60, seed=3, images=True, n_memory_cases=2, progress=False)
    return out


def args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["--config", SMOKE, f"out={out}", f"data.captions=[{corpus}/captions.json]",
            f"data.distill_records=[{corpus}/train.jsonl]", f"data.feature_cache={corpus}/vcache",
            f"data.text_cache={corpus}/tcache", *extra]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_distill_loss_is_zero_on_the_teacher_and_positive_elsewhere():
    t = F.normalize(torch.randn(6, 384), dim=-1)
    assert stage1.distill_loss(3 * t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert stage1.distill_loss(torch.randn(6, 384), t).item() > 0.5


def test_smoke_run_logs_every_loss_and_retrieval_then_resumes(corpus, tmp_path):
    summary = stage1.main(args(corpus, tmp_path, "stage1.steps=2", "stage1.ckpt_every=2"))
    log = rows(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in log] == [2]
    for key in ("itc", "itm", "caption", "distill", "memory", "memory_kl"):
        assert log[0][key] > 0, key
    for key in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5"):
        assert 0.0 <= summary[key] <= 1.0 and summary[key.replace("1", "5")] >= summary[key]
    assert summary["held_out_pairs"] >= 2
    state = torch.load(tmp_path / "state.pt", weights_only=False)
    assert state["step"] == 2 and "heads" in state["modules"]
    # teacher embeddings were cached per text: the resumed run reads them back
    assert (corpus / "tcache" / TEACHER_FILE).exists()
    # ... and the texts it distilled are listed for stage 2, every one of them in the cache
    keys = read_teacher_keys(tmp_path / "model.pt")
    assert keys and len(keys) <= summary["distill_texts"]
    assert keys <= set(minilm_table(corpus / "tcache"))
    stage1.main(["--resume", *args(corpus, tmp_path, "stage1.steps=4", "stage1.ckpt_every=2")])
    log = rows(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in log] == [2, 4]
    assert log[1]["elapsed_s"] >= log[0]["elapsed_s"]
    assert torch.load(tmp_path / "state.pt", weights_only=False)["step"] == 4
    model = BitGenModel.load(tmp_path / "model.pt")
    assert model.config.d_model == 64
