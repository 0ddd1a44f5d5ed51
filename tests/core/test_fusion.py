"""FIBER/ALBEF fusion: gated cross-attention, ITC with a FIFO queue and clamped temperature,
ITM with hard negatives, DDP queue gathering, ONNX export."""

import os
import tempfile

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from bitgen_core.fusion import GatedCrossAttention, ITCHead, ITMHead
from bitgen_core.quant import set_export_mode

torch.set_num_threads(1)
D = 32


# ----------------------------------------------------------------- gated cross-attention
def _xattn(gate: float) -> GatedCrossAttention:
    """A seeded cross-attention block with its tanh gate opened to `gate`."""
    torch.manual_seed(0)
    xattn = GatedCrossAttention(D, 4)
    with torch.no_grad():
        xattn.gate.fill_(gate)
    return xattn


def test_gated_cross_attention_is_identity_at_init_and_gate_gets_gradient():
    torch.manual_seed(0)
    xattn = GatedCrossAttention(D, 4)
    x = torch.randn(2, 5, D, requires_grad=True)
    img = torch.randn(2, 16, D)
    out = xattn(x, img)
    assert torch.equal(out, x)
    out.pow(2).sum().backward()
    assert xattn.gate.grad is not None and xattn.gate.grad.abs().item() > 0
    with torch.no_grad():
        xattn.gate.fill_(0.5)
    y1, y2 = xattn(x, img), xattn(x, img + 1.0)
    assert not torch.allclose(y1, x) and not torch.allclose(y1, y2)  # the image now matters


def test_gated_cross_attention_matches_reference_mha():
    xattn = _xattn(0.3)
    x, img = torch.randn(2, 5, D), torch.randn(2, 7, D)
    q = xattn.q(x)
    k, v = xattn.kv(img).split(D, dim=-1)
    heads = lambda t: t.view(2, -1, 4, D // 4).transpose(1, 2)  # noqa: E731
    ref = F.scaled_dot_product_attention(heads(q), heads(k), heads(v)).transpose(1, 2).reshape(2, 5, D)
    want = x + torch.tanh(torch.tensor(0.3)) * xattn.o(ref)
    torch.testing.assert_close(xattn(x, img), want, atol=1e-5, rtol=1e-5)


def test_gated_cross_attention_mask_hides_tokens_and_missing_images():
    xattn = _xattn(1.0)
    x, img = torch.randn(2, 5, D), torch.randn(2, 6, D)
    mask = torch.tensor([[True] * 4 + [False] * 2, [False] * 6])
    out = xattn(x, img, mask)
    img2 = img.clone()
    img2[0, 4:] = 100.0
    torch.testing.assert_close(xattn(x, img2, mask), out, atol=0, rtol=0)  # masked tokens unseen
    assert torch.equal(out[1], x[1])  # a sample without a frame passes through
    torch.testing.assert_close(out[:1], xattn(x[:1], img[:1, :4]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("export_mode", [False, True])
def test_gated_cross_attention_onnx_matches_torch(tmp_path, export_mode):
    xattn = _xattn(0.7).eval()
    set_export_mode(xattn, export_mode)
    path = str(tmp_path / "xattn.onnx")
    x, img = torch.randn(2, 5, D), torch.randn(2, 16, D)
    torch.onnx.export(xattn, (x, img), path, input_names=["x", "img"], output_names=["y"],
                      dynamic_axes={"x": {0: "b", 1: "l"}, "img": {0: "b"}}, opset_version=17, dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    x2 = torch.randn(3, 9, D)  # other batch and sequence length than traced
    img2 = torch.randn(3, 16, D)
    with torch.no_grad():
        want = xattn(x2, img2).numpy()
    got = sess.run(None, {"x": x2.numpy(), "img": img2.numpy()})[0]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


# ----------------------------------------------------------------- ITC queue
def _marked(start: int, n: int, dim: int = 8) -> torch.Tensor:
    """Rows whose first entry is their global index: lets the test read the queue order."""
    f = torch.zeros(n, dim)
    f[:, 0] = torch.arange(start, start + n, dtype=torch.float32)
    return f


def test_itc_queue_is_fifo_with_wraparound():
    head = ITCHead(D, proj_dim=8, queue_size=10)
    for i in range(3):  # 12 items into 10 slots, batch size not dividing the queue
        head.dequeue_and_enqueue(_marked(4 * i, 4), -_marked(4 * i, 4), torch.arange(4 * i, 4 * i + 4))
    assert int(head.queue_ptr) == 2 and int(head.queue_count) == 10
    assert head.image_queue[:, 0].tolist() == [10, 11, 2, 3, 4, 5, 6, 7, 8, 9]
    assert (-head.text_queue[:, 0]).tolist() == [10, 11, 2, 3, 4, 5, 6, 7, 8, 9]
    assert head.id_queue.tolist() == [10, 11, 2, 3, 4, 5, 6, 7, 8, 9]
    head.dequeue_and_enqueue(_marked(100, 13), _marked(100, 13))  # bigger than the queue
    assert sorted(head.image_queue[:, 0].tolist()) == list(range(103, 113))
    assert int(head.queue_count) == 10 and (head.id_queue == -1).all()
    head.reset_queue()
    assert int(head.queue_count) == 0 and int(head.queue_ptr) == 0


def test_itc_current_batch_is_never_its_own_negative():
    torch.manual_seed(0)
    b, q = 4, 6
    head = ITCHead(D, proj_dim=16, queue_size=q).train()
    t0, i0 = torch.randn(b, D), torch.randn(b, D)
    loss, s_i2t, s_t2i = head(t0, i0)
    assert s_i2t.shape == (b, b) and s_t2i.shape == (b, b)  # empty queue: batch only, no self copy
    assert int(head.queue_count) == b  # ... and the batch was enqueued afterwards

    t1, i1 = torch.randn(b, D), torch.randn(b, D)
    queue_txt, queue_img = head.text_queue[:b].clone(), head.image_queue[:b].clone()
    loss, s_i2t, s_t2i = head(t1, i1)
    assert s_i2t.shape == (b, 2 * b) and s_t2i.shape == (b, 2 * b)
    img, txt = head.embed_image(i1), head.embed_text(t1)
    temp = head.temperature
    torch.testing.assert_close(s_i2t, torch.cat([img @ txt.t(), img @ queue_txt.t()], 1) / temp)
    torch.testing.assert_close(s_t2i, torch.cat([txt @ img.t(), txt @ queue_img.t()], 1) / temp)
    # the loss is InfoNCE with the positive on the diagonal and nowhere else
    want = (F.cross_entropy(s_i2t, torch.arange(b)) + F.cross_entropy(s_t2i, torch.arange(b))) / 2
    torch.testing.assert_close(loss, want)
    # a full queue gives logits B x (B + queue_size)
    loss, s_i2t, _ = head(torch.randn(b, D), torch.randn(b, D))
    assert s_i2t.shape == (b, b + q)
    head.eval()
    head(torch.randn(b, D), torch.randn(b, D))
    assert int(head.queue_ptr) == (3 * b) % q  # evaluation never writes the queue


def test_itc_ids_make_duplicate_pairs_positives():
    torch.manual_seed(0)
    head = ITCHead(D, proj_dim=16, queue_size=8).train()
    t, i = torch.randn(4, D), torch.randn(4, D)
    ids = torch.tensor([0, 1, 1, 2])
    _, s_i2t, s_t2i = head(t, i, ids=ids)
    loss, s_i2t, s_t2i = head(t, i, ids=ids, enqueue=False)
    pos = (ids[:, None] == torch.cat([ids, ids])[None, :]).float()
    tgt = pos / pos.sum(1, keepdim=True)
    want = (-(s_i2t.log_softmax(1) * tgt).sum(1).mean() - (s_t2i.log_softmax(1) * tgt).sum(1).mean()) / 2
    torch.testing.assert_close(loss, want)
    with pytest.raises(ValueError):
        head(t, i, ids=torch.tensor([0, -1, 1, 2]))


@pytest.mark.parametrize("direction", [-1.0, 1.0])
def test_itc_temperature_stays_clamped_after_steps_that_push_it_out(direction):
    torch.manual_seed(0)
    head = ITCHead(D, proj_dim=16, queue_size=16, temp_min=0.01, temp_max=0.5).train()
    opt = torch.optim.SGD([head.temp], lr=10.0)
    t, i = torch.randn(4, D), torch.randn(4, D)
    lo, hi = float(np.float32(0.01)), float(np.float32(0.5))  # the bounds as float32 holds them
    for _ in range(3):
        loss, s_i2t, _ = head(t, i)
        (direction * head.temp).backward()  # a push far below/above the range
        opt.step()
        opt.zero_grad()
        assert not lo <= head.temp.item() <= hi  # the optimizer did push it out...
        assert lo <= head.temperature.item() <= hi  # ...but the temperature in use is clamped
        _, s_i2t, _ = head(t, i, enqueue=False)
        assert lo <= head.temp.item() <= hi  # and forward puts the parameter back (ALBEF)
        cos = s_i2t * head.temp.detach()
        assert cos.abs().max() <= 1.0 + 1e-5
    assert head.temp.item() == pytest.approx(0.01 if direction > 0 else 0.5)


def test_itc_training_on_synthetic_pairs_drives_loss_down():
    torch.manual_seed(0)
    n, b = 512, 32
    text = torch.randn(n, D)
    image = text @ torch.randn(D, D) / D ** 0.5 + 0.1 * torch.randn(n, D)  # paired, different spaces
    head = ITCHead(D, proj_dim=16, queue_size=64).train()
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
    losses = []
    for step in range(150):
        idx = torch.randint(0, n, (b,))
        loss, _, _ = head(text[idx], image[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.5 * first
    head.eval()
    with torch.no_grad():
        sim = head.embed_image(image[:64]) @ head.embed_text(text[:64]).t()
    assert (sim.argmax(1) == torch.arange(64)).float().mean() > 0.5  # chance is 1/64


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        head = ITCHead(D, proj_dim=8, queue_size=16)
        base = 100 * rank
        head.dequeue_and_enqueue(_marked(base, 3), _marked(base, 3), torch.arange(base, base + 3))
        torch.save({k: v.clone() for k, v in head.state_dict().items() if "queue" in k},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_itc_queue_gathers_all_ranks_under_ddp(tmp_path):
    init_file = tempfile.mktemp(dir=tmp_path)
    mp.spawn(_ddp_worker, args=(2, init_file, str(tmp_path)), nprocs=2, join=True)
    q0, q1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for key in q0:
        assert torch.equal(q0[key], q1[key]), key  # every rank holds the same queue
    assert q0["image_queue"][:6, 0].tolist() == [0, 1, 2, 100, 101, 102]
    assert int(q0["queue_count"]) == 6 and int(q0["queue_ptr"]) == 6


# ----------------------------------------------------------------- ITM
def _clustered_sims(b: int = 16, clusters: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(clusters, 16, generator=g), dim=-1)
    label = torch.arange(b) % clusters
    img = F.normalize(centers[label] + 0.3 * torch.randn(b, 16, generator=g), dim=-1)
    txt = F.normalize(centers[label] + 0.3 * torch.randn(b, 16, generator=g), dim=-1)
    sim = img @ txt.t() / 0.07
    return sim, sim.t().contiguous(), label


def test_itm_negatives_are_hard_and_never_positive():
    sim_i2t, sim_t2i, label = _clustered_sims()
    b = sim_i2t.shape[0]
    g = torch.Generator().manual_seed(0)
    hard, rand = [], []
    off_diag = ~torch.eye(b, dtype=torch.bool)
    for _ in range(50):
        neg_img, neg_txt = ITMHead.sample_hard_negatives(sim_i2t, sim_t2i, generator=g)
        assert (neg_img != torch.arange(b)).all() and (neg_txt != torch.arange(b)).all()
        hard.append(sim_t2i[torch.arange(b), neg_img].mean())
        hard.append(sim_i2t[torch.arange(b), neg_txt].mean())
    rand = sim_i2t[off_diag].mean()
    assert torch.stack(hard).mean() > rand + 3.0  # in logit units (sims / 0.07)
    # with a queue appended, only in-batch columns are candidates
    wide = torch.cat([sim_i2t, torch.full((b, 32), 100.0)], 1)
    neg_img, neg_txt = ITMHead.sample_hard_negatives(wide, wide, generator=g)
    assert (neg_img < b).all() and (neg_txt < b).all()


def test_itm_negatives_skip_pairs_sharing_an_id():
    sim_i2t, sim_t2i, label = _clustered_sims()
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        neg_img, neg_txt = ITMHead.sample_hard_negatives(sim_i2t, sim_t2i, generator=g, ids=label)
        assert (label[neg_img] != label).all() and (label[neg_txt] != label).all()
    with pytest.raises(ValueError):
        ITMHead.sample_hard_negatives(sim_i2t[:1, :1], sim_t2i[:1, :1])


def test_itm_head_learns_match_vs_mismatch():
    torch.manual_seed(0)
    head = ITMHead(D)
    direction = torch.randn(D)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(100):
        pos = torch.randn(16, D) + direction
        neg_a, neg_b = torch.randn(16, D) - direction, torch.randn(16, D) - direction
        loss = head.loss(pos, neg_a, neg_b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
    with torch.no_grad():
        assert (head(torch.randn(32, D) + direction).argmax(1) == 1).float().mean() > 0.95
        assert (head(torch.randn(32, D) - direction).argmax(1) == 0).float().mean() > 0.95
