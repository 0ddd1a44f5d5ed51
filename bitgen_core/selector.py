"""RobotSelector: an independent sigmoid per robot type, scored against catalog text.

Each robot's embedding is computed from its catalog description, encoded by the model's own
text encoder (`BitGenModel.encode_text`), then projected here:

    e_r   = robot_proj(pooled_text(description_r))          (R, D)
    q     = task_proj(task_state)                            (B, D)
    logit = scale * cos(q, e_r) + prior(e_r) + bias          (B, R)
          (+ tanh(g) * <fact_proj(f), e_r / |e_r|>  with the facts' part f of the memory read,
           config.memory_robot; g starts at 0)

- Multi-label: a task may need one to three robots, so each robot gets its own sigmoid and
  BCE loss; probabilities do not sum to 1 and adding a robot never changes another's score.
- No per-robot parameter: the robot identity enters only through its description text, so a
  sixth catalog entry is scored with no code change and keeps the zero-shot signal of its
  description. The prior term is a linear function of e_r (a description-dependent bias:
  "general-purpose" robots can learn a higher base rate), plus one shared bias.
- Cosine with a learnable temperature (CLIP): the score does not depend on how long a
  description is, only on what it says.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from bitgen_core.quant import BitLinear


class RobotSelector(nn.Module):
    def __init__(self, d_model: int, embed_dim: int = 64, scale_init: float = 10.0,
                 max_scale: float = 100.0, fact_dim: int = 0):
        super().__init__()
        self.embed_dim = embed_dim
        self.task_proj = BitLinear(d_model, embed_dim)
        self.robot_proj = BitLinear(d_model, embed_dim)
        self.prior = BitLinear(embed_dim, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(()))
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale_init)))
        self.max_log_scale = math.log(max_scale)
        # no input norm: a fact the read barely takes in must stay a small term
        self.fact_proj = BitLinear(fact_dim, embed_dim, norm=False) if fact_dim else None
        self.fact_gate = nn.Parameter(torch.zeros(())) if fact_dim else None

    def robot_embeddings(self, description_states: torch.Tensor) -> torch.Tensor:
        """(R, d) pooled description encodings -> (R, D) robot embeddings."""
        return self.robot_proj(description_states)

    def forward(self, task_state: torch.Tensor, robot_emb: torch.Tensor,
                fact: torch.Tensor | None = None) -> torch.Tensor:
        """(B, d) task states x (R, D) robot embeddings -> (B, R) logits; `fact` (B, C) is the
        facts' part of the memory read (used when the selector has a fact term)."""
        q = F.normalize(self.task_proj(task_state), dim=-1)
        e = F.normalize(robot_emb, dim=-1)
        scale = self.log_scale.clamp(max=self.max_log_scale).exp()
        prior = self.prior(robot_emb).squeeze(-1)               # (R,)
        logits = scale * (q @ e.t()) + prior + self.bias
        if self.fact_proj is not None and fact is not None:
            logits = logits + torch.tanh(self.fact_gate) * (self.fact_proj(fact) @ e.t())
        return logits

    @staticmethod
    def probabilities(logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    @staticmethod
    def loss(logits: torch.Tensor, targets: torch.Tensor,
             pos_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Multi-label BCE; targets (B, R) multi-hot (soft labels allowed)."""
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype),
                                                  pos_weight=pos_weight)

    @staticmethod
    def topk(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices, confidences) of the k most probable robots per row, best first.

        k is capped at the number of robots; ties break towards the lower catalog index so
        the ranking is deterministic.
        """
        k = max(0, min(int(k), probs.shape[-1]))
        # stable sort keeps catalog order among equal probabilities
        order = torch.sort(probs, dim=-1, descending=True, stable=True).indices[..., :k]
        return order, probs.gather(-1, order)
