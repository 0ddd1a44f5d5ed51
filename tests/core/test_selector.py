"""RobotSelector: independent sigmoids (multi-label), deterministic top-k, robot identity only
from catalog text, so a sixth catalog entry needs no code change."""
import numpy as np
import pytest
import torch

from bitgen_core.catalog import Robot, RobotCatalog
from bitgen_core.selector import RobotSelector
from bitgen_core.tokenizer import BitGenTokenizer, minilm_init_embeddings

torch.set_num_threads(1)
D = 32


@pytest.fixture(scope="module")
def text_state():
    """A fixed stand-in text encoder: mean of MiniLM-seeded word vectors."""
    tok, emb = BitGenTokenizer.load(), torch.from_numpy(minilm_init_embeddings(D))

    def encode(texts):
        return torch.stack([emb[tok.encode(t)].mean(0) for t in texts])
    return encode


TASKS = [("film the roof of the stadium from above", [0]),
         ("inspect the hull of the ship below the waterline", [1]),
         ("hand tools to the worker and open the door", [2]),
         ("move pallets across the warehouse floor", [3]),
         ("climb the rubble after the earthquake", [4]),
         ("search the collapsed building and carry supplies up the stairs", [4, 2]),
         ("survey the flooded harbour above and below the water", [0, 1])]


def _trained(text_state, steps=150):
    torch.manual_seed(0)
    cat = RobotCatalog.load()
    sel = RobotSelector(D, embed_dim=16)
    x = text_state([t for t, _ in TASKS])
    y = torch.zeros(len(TASKS), len(cat))
    for i, (_, robots) in enumerate(TASKS):
        y[i, robots] = 1.0
    desc = text_state(cat.texts())
    opt = torch.optim.Adam(sel.parameters(), lr=3e-2)
    for _ in range(steps):
        loss = sel.loss(sel(x, sel.robot_embeddings(desc)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return sel, cat, x, y, desc


def test_multi_label_sigmoids_learn_two_robot_tasks(text_state):
    sel, cat, x, y, desc = _trained(text_state)
    with torch.no_grad():
        probs = sel.probabilities(sel(x, sel.robot_embeddings(desc)))
    assert ((probs > 0.5) == (y > 0.5)).all(), probs
    # independent sigmoids, not a softmax: the two-robot rows hold two confident robots
    assert probs[5].sum() > 1.5 and probs[6].sum() > 1.5
    assert not torch.allclose(probs.sum(1), torch.ones(len(TASKS)), atol=0.05)


def test_topk_orders_best_first_with_confidences():
    probs = torch.tensor([[0.1, 0.9, 0.3, 0.9, 0.05], [0.5, 0.2, 0.7, 0.1, 0.6]])
    idx, conf = RobotSelector.topk(probs, 3)
    assert idx.tolist() == [[1, 3, 2], [2, 4, 0]]      # ties keep catalog order
    torch.testing.assert_close(conf, torch.tensor([[0.9, 0.9, 0.3], [0.7, 0.6, 0.5]]))
    assert RobotSelector.topk(probs, 10)[0].shape == (2, 5)


def test_robot_identity_comes_only_from_the_description(text_state):
    sel, cat, x, _, desc = _trained(text_state, steps=20)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        a = sel(x, sel.robot_embeddings(desc))
        b = sel(x, sel.robot_embeddings(desc[perm]))
    torch.testing.assert_close(b, a[:, perm])
    # and no parameter is sized by the number of robots
    assert all(len(cat) not in p.shape for p in sel.parameters())


def test_a_sixth_catalog_entry_is_scored_and_leaves_the_five_unchanged(text_state):
    sel, cat, x, y, desc = _trained(text_state)
    boat = Robot(key="boat", name="Surface Vessel",
                 description="An autonomous boat for the water surface: patrols lakes, rivers and "
                             "harbours, carries heavy loads on water, cannot dive or leave the water.")
    cat6 = cat.with_robot(boat)
    desc6 = text_state(cat6.texts())
    with torch.no_grad():
        p5 = sel.probabilities(sel(x, sel.robot_embeddings(desc)))
        p6 = sel.probabilities(sel(x, sel.robot_embeddings(desc6)))
    assert p6.shape == (len(TASKS), 6) and torch.isfinite(p6).all()
    torch.testing.assert_close(p6[:, :5], p5)          # the trained five still work unchanged
    assert ((p6[:, :5] > 0.5) == (y > 0.5)).all()


def test_logit_scale_is_bounded():
    sel = RobotSelector(8, embed_dim=4, scale_init=10.0, max_scale=20.0)
    with torch.no_grad():
        sel.log_scale.fill_(10.0)
    q, e = torch.randn(3, 8), torch.randn(5, 4)
    assert sel(q, e).sub(sel.prior(e).squeeze(-1)).abs().max() <= 20.0 + 1e-4
