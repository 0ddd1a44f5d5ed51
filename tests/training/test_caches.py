"""The training caches hold the same bytes whichever run, batch or order first filled them, so
a clean checkout with cold caches trains the same model as one with warm caches."""
from pathlib import Path

import numpy as np
import torch

from training import common as C

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["Inspect the roof.", "Carry the spare gearbox from bay 4 to the loading dock at the far end of the yard.",
         "Find the hiker on the north ridge.", "Dive under the hull and check the propeller shaft for fishing line."]


def test_teacher_embeddings_do_not_depend_on_the_batch_that_computed_them(tmp_path):
    together = C.minilm_embeddings(TEXTS, tmp_path / "a")
    C.minilm_embeddings(TEXTS[2:3], tmp_path / "b")           # one text first, the rest later
    apart = C.minilm_embeddings(TEXTS[::-1], tmp_path / "b")[::-1]
    np.testing.assert_array_equal(together, apart)
    assert (tmp_path / "a" / C.TEACHER_FILE).exists()
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=2e-3)


def test_vision_features_do_not_depend_on_the_batch_that_computed_them(tmp_path):
    torch.manual_seed(0)
    model = C.build_model({"model": {"preset": "tiny"}}).eval()
    imgs = sorted(str(p) for p in (REPO / "data" / "dev" / "images").glob("*.png"))[:3]
    together = C.vision_features(model, imgs, tmp_path / "a", C.Dist())
    C.vision_features(model, imgs[1:2], tmp_path / "b", C.Dist())
    apart = C.vision_features(model, imgs[::-1], tmp_path / "b", C.Dist())
    for p in imgs:
        assert together[p].dtype == torch.float16 and together[p].shape[0] == model.vision.n_tokens
        assert torch.equal(together[p], apart[p])
    names = sorted(f.name for f in (tmp_path / "a").iterdir())
    assert len(names) == 3 and all(n.endswith(f"-s{model.vision.image_size}-b1.pt") for n in names)
