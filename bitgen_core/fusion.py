"""Cross-modal fusion (FIBER / ALBEF): gated cross-attention, ITC with a queue, ITM with hard negatives.

- `GatedCrossAttention`: text tokens attend to image tokens inside the backbone's upper layers
  (FIBER fuses in the backbone rather than in a separate fusion encoder). The residual branch
  is scaled by tanh(gate) with gate = 0 at init (Flamingo's trick), so inserting the block
  leaves a trained text model exactly unchanged and vision is blended in only as it helps.
- `ITCHead`: image-text contrastive loss (ALBEF §3.2): pooled features projected to a small
  normalised space, symmetric InfoNCE against the batch plus a FIFO queue of earlier features
  (MoCo), learnable temperature clamped to a range (ALBEF clamps it in place each step).
- `ITMHead`: image-text matching, a binary classifier on the fused state, trained on hard
  negatives drawn from the ITC similarities (ALBEF §3.2: "for each text, sample one negative
  image with probability ∝ softmax(s(T, I))").
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from bitgen_core.quant import BitLinear, RMSNorm


class GatedCrossAttention(nn.Module):
    """x + tanh(gate) · MHA(q = x, k = v = image tokens); exactly x at initialisation."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.q = BitLinear(d_model, d_model)
        self.kv = BitLinear(d_model, 2 * d_model)  # one RMSNorm + one matmul for keys and values
        self.o = BitLinear(d_model, d_model)
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, img: torch.Tensor, img_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B,L,d], img [B,T,d], img_mask [B,T] bool (True = real token; a sample whose row is
        all False, e.g. no camera frame, gets no image contribution) -> [B,L,d]."""
        b, l, d = x.shape
        t = img.shape[1]
        q = self.q(x).view(b, l, self.n_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(img).view(b, t, 2, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        att = torch.matmul(q, k.transpose(-2, -1)) * (self.head_dim ** -0.5)
        if img_mask is not None:
            att = att.masked_fill(~img_mask[:, None, None, :], torch.finfo(att.dtype).min)
        y = torch.matmul(att.softmax(dim=-1), v).transpose(1, 2).reshape(b, l, d)
        y = self.o(y)
        if img_mask is not None:
            y = y * img_mask.any(dim=-1).to(y.dtype)[:, None, None]
        return x + torch.tanh(self.gate) * y


def _all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every DDP rank (rank order) so every rank enqueues the same features."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


class ITCHead(nn.Module):
    """Image-text contrastive loss over [current batch ∪ FIFO queue of past features].

    The queue holds features of *earlier* batches only: the loss is computed first and the
    batch is enqueued afterwards, so no sample ever meets itself (or its own pair) as a
    negative. Until the queue has filled, only its written rows are used.
    Optional integer `ids` mark pairs that share content (same caption/scene): such pairs
    count as positives rather than negatives, as in ALBEF's retrieval fine-tuning.
    """

    def __init__(self, d_model: int, proj_dim: int = 64, queue_size: int = 4096, temp_init: float = 0.07,
                 temp_min: float = 0.01, temp_max: float = 0.5):
        super().__init__()
        if not temp_min <= temp_init <= temp_max:
            raise ValueError(f"temp_init={temp_init} must lie in [temp_min={temp_min}, temp_max={temp_max}]")
        if queue_size < 0:
            raise ValueError(f"queue_size must be >= 0, got {queue_size}")
        self.proj_dim, self.queue_size = proj_dim, queue_size
        self.temp_min, self.temp_max = temp_min, temp_max
        self.image_proj = BitLinear(d_model, proj_dim)
        self.text_proj = BitLinear(d_model, proj_dim)
        self.temp = nn.Parameter(torch.tensor(float(temp_init)))
        self.register_buffer("image_queue", torch.zeros(queue_size, proj_dim))
        self.register_buffer("text_queue", torch.zeros(queue_size, proj_dim))
        self.register_buffer("id_queue", torch.full((queue_size,), -1, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_count", torch.zeros((), dtype=torch.long))

    @property
    def temperature(self) -> torch.Tensor:
        """The temperature in use: the parameter clamped to [temp_min, temp_max]."""
        return self.temp.clamp(self.temp_min, self.temp_max)

    def embed_image(self, image_pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(image_pooled), dim=-1)

    def embed_text(self, text_pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(text_pooled), dim=-1)

    def forward(self, text_pooled: torch.Tensor, image_pooled: torch.Tensor, ids: torch.Tensor | None = None,
                enqueue: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """text_pooled, image_pooled [B,d] (row i of each is a pair) ->
        (loss, sim_i2t [B, B+n], sim_t2i [B, B+n]) with n = rows of the queue in use; the
        positive of row i is column i. Enqueues the batch afterwards when training."""
        if text_pooled.shape[0] != image_pooled.shape[0]:
            raise ValueError("text_pooled and image_pooled must hold the same number of pairs")
        with torch.no_grad():  # ALBEF: keep the parameter itself inside the range
            self.temp.clamp_(self.temp_min, self.temp_max)
        img, txt = self.embed_image(image_pooled), self.embed_text(text_pooled)
        b, n = img.shape[0], int(self.queue_count)
        img_all = torch.cat([img, self.image_queue[:n].to(img.dtype)], dim=0)
        txt_all = torch.cat([txt, self.text_queue[:n].to(txt.dtype)], dim=0)
        sim_i2t = img @ txt_all.t() / self.temp
        sim_t2i = txt @ img_all.t() / self.temp

        if ids is None:
            targets = torch.zeros_like(sim_i2t)
            targets[:, :b] = torch.eye(b, device=img.device, dtype=img.dtype)
        else:
            if bool((ids < 0).any()):
                raise ValueError("ITC ids must be >= 0 (-1 marks queue rows written without ids)")
            ids = ids.view(-1, 1).to(self.id_queue.device)
            pos = (ids == torch.cat([ids.t(), self.id_queue[:n].view(1, -1)], dim=1)).to(img.dtype)
            targets = pos / pos.sum(dim=1, keepdim=True)
        loss_i2t = -(F.log_softmax(sim_i2t, dim=1) * targets).sum(dim=1).mean()
        loss_t2i = -(F.log_softmax(sim_t2i, dim=1) * targets).sum(dim=1).mean()
        loss = (loss_i2t + loss_t2i) / 2

        if enqueue and self.training:
            self.dequeue_and_enqueue(img.detach(), txt.detach(), None if ids is None else ids.view(-1))
        return loss, sim_i2t, sim_t2i

    @torch.no_grad()
    def dequeue_and_enqueue(self, image_feat: torch.Tensor, text_feat: torch.Tensor,
                            ids: torch.Tensor | None = None) -> None:
        """Write features (all ranks' under DDP) at the ring pointer, overwriting the oldest."""
        if self.queue_size == 0:
            return
        if ids is None:
            ids = torch.full((image_feat.shape[0],), -1, dtype=torch.long, device=image_feat.device)
        image_feat, text_feat = _all_gather_no_grad(image_feat), _all_gather_no_grad(text_feat)
        ids = _all_gather_no_grad(ids)
        n = image_feat.shape[0]
        if n > self.queue_size:  # only the newest queue_size rows would survive anyway
            image_feat, text_feat, ids = image_feat[-self.queue_size:], text_feat[-self.queue_size:], ids[-self.queue_size:]
            n = self.queue_size
        idx = (self.queue_ptr + torch.arange(n, device=self.queue_ptr.device)) % self.queue_size
        self.image_queue[idx] = image_feat.to(self.image_queue.dtype)
        self.text_queue[idx] = text_feat.to(self.text_queue.dtype)
        self.id_queue[idx] = ids.to(self.id_queue.device)
        self.queue_ptr.fill_((int(self.queue_ptr) + n) % self.queue_size)
        self.queue_count.fill_(min(int(self.queue_count) + n, self.queue_size))

    @torch.no_grad()
    def reset_queue(self) -> None:
        self.image_queue.zero_()
        self.text_queue.zero_()
        self.id_queue.fill_(-1)
        self.queue_ptr.zero_()
        self.queue_count.zero_()


class ITMHead(nn.Module):
    """Does this text match this image? Binary classifier on the fused [B,d] state."""

    def __init__(self, d_model: int):
        super().__init__()
        self.norm = RMSNorm(d_model)
        # An output head, so full precision (BitNet keeps embeddings and heads unquantised).
        self.classifier = nn.Linear(d_model, 2)

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        """fused [N,d] -> logits [N,2] (index 1 = match)."""
        return self.classifier(self.norm(fused))

    @staticmethod
    @torch.no_grad()
    def sample_hard_negatives(sim_i2t: torch.Tensor, sim_t2i: torch.Tensor, generator: torch.Generator | None = None,
                              ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (neg_image_idx[B]: a negative image for each text, neg_text_idx[B]: a negative text
        for each image), drawn ∝ softmax of the in-batch ITC similarities, never the positive
        (nor, given `ids`, any pair sharing the positive's id). Needs two distinct pairs."""
        b = sim_i2t.shape[0]
        if ids is None:
            same = torch.eye(b, dtype=torch.bool, device=sim_i2t.device)
        else:
            ids = ids.view(-1)
            same = ids[:, None] == ids[None, :]
        if bool(same.all(dim=1).any()):
            raise ValueError("hard-negative sampling needs, for every pair, another pair with a different "
                             "id in the batch (batch size >= 2)")
        # +1e-5 (ALBEF) keeps every true negative drawable even if the softmax underflows.
        w_t2i = (F.softmax(sim_t2i[:, :b].float(), dim=1) + 1e-5).masked_fill(same, 0.0)
        w_i2t = (F.softmax(sim_i2t[:, :b].float(), dim=1) + 1e-5).masked_fill(same, 0.0)
        neg_image_idx = torch.multinomial(w_t2i, 1, generator=generator).squeeze(1)
        neg_text_idx = torch.multinomial(w_i2t, 1, generator=generator).squeeze(1)
        return neg_image_idx, neg_text_idx

    def loss(self, fused_pos: torch.Tensor, fused_neg_a: torch.Tensor, fused_neg_b: torch.Tensor) -> torch.Tensor:
        """Cross-entropy with label 1 for matched pairs and 0 for both kinds of negatives."""
        fused = torch.cat([fused_pos, fused_neg_a, fused_neg_b], dim=0)
        labels = torch.cat([torch.ones(fused_pos.shape[0], dtype=torch.long, device=fused.device),
                            torch.zeros(fused_neg_a.shape[0] + fused_neg_b.shape[0], dtype=torch.long,
                                        device=fused.device)])
        return F.cross_entropy(self(fused), labels)
