"""Tiny-R1 recurrent reasoning: an LSTM that thinks for a learned number of steps (ACT).

The fused task state (the backbone's hidden state at [SEP]) is fed to an LSTM cell for up
to `max_steps` steps. After each step a halting unit emits p_n = sigmoid(halt(h_n)).
Adaptive Computation Time (Graves 2016, "Adaptive Computation Time for Recurrent Neural
Networks"):

    N = min{ n : p_1 + ... + p_n >= 1 - eps }  (capped at max_steps)
    R = 1 - (p_1 + ... + p_{N-1})              the remainder
    weights w_n = p_n for n < N, R for n = N, 0 after; they sum to 1
    state  = sum_n w_n h_n                      the "pondered" state
    ponder cost rho = N + R                     added to the loss as tau * rho

N is piecewise constant; the gradient of rho flows through R (dR/dp_n = -1 for n < N), which
pushes early halting probabilities up and so trains the number of steps down, against the
task loss that pays for any accuracy lost. Like Graves we feed a first-step flag so the cell
knows when a new ponder sequence starts.

Export: `forward(x)` always computes all max_steps steps and applies the halting weights
with masks (no data-dependent Python control flow), so the same graph exports to ONNX.
`forward(x, dynamic=True)` stops as soon as every row has halted: identical outputs, fewer
steps, for eager inference.

Every linear is a BitLinear (BitNet b1.58), with the RMSNorm it carries in front.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from bitgen_core.quant import BitLinear


@dataclass
class ReasoningOutput:
    state: torch.Tensor             # (B, d) reasoned task state (input + pondered LSTM state)
    ponder_cost: torch.Tensor       # scalar: mean over the batch of N + R
    steps: torch.Tensor             # (B,) N, the number of steps each row ran (float)
    halting_weights: torch.Tensor   # (B, max_steps) w_n; each row sums to 1
    halting_probs: torch.Tensor     # (B, max_steps) the raw p_n

    @property
    def expected_steps(self) -> torch.Tensor:
        """(B,) sum_n n * w_n: a smooth read-out of how long the model thought."""
        n = torch.arange(1, self.halting_weights.shape[1] + 1, dtype=self.halting_weights.dtype,
                         device=self.halting_weights.device)
        return (self.halting_weights * n).sum(-1)


class BitLSTMCell(nn.Module):
    """LSTM cell whose input-and-recurrent projection is one ternary BitLinear."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.gates = BitLinear(input_size + hidden_size, 4 * hidden_size, bias=True)
        with torch.no_grad():   # forget-gate bias 1 (Jozefowicz et al. 2015): remember by default
            self.gates.bias[hidden_size:2 * hidden_size].fill_(1.0)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, g, o = self.gates(torch.cat([x, h], dim=-1)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class TinyR1Reasoner(nn.Module):
    def __init__(self, d_model: int, max_steps: int = 8, halting_eps: float = 0.01,
                 halting_bias_init: float = -1.0, hidden_size: int | None = None):
        super().__init__()
        self.d_model, self.max_steps, self.eps = d_model, max_steps, halting_eps
        self.hidden_size = hidden_size or d_model
        self.cell = BitLSTMCell(d_model + 1, self.hidden_size)   # +1: Graves's first-step flag
        self.halt = BitLinear(self.hidden_size, 1, bias=True)
        with torch.no_grad():
            self.halt.bias.fill_(halting_bias_init)
        self.out = BitLinear(self.hidden_size, d_model)

    def forward(self, x: torch.Tensor, dynamic: bool = False) -> ReasoningOutput:
        b = x.shape[0]
        h = x.new_zeros(b, self.hidden_size)
        c = x.new_zeros(b, self.hidden_size)
        threshold = 1.0 - self.eps
        cum = x.new_zeros(b)                    # sum of p_i over the steps before this one
        weighted = x.new_zeros(b, self.hidden_size)
        steps, remainder = x.new_zeros(b), x.new_zeros(b)
        weights, probs = [], []
        for n in range(self.max_steps):
            flag = x.new_full((b, 1), 1.0 if n == 0 else 0.0)
            h, c = self.cell(torch.cat([x, flag], dim=-1), h, c)
            p = torch.sigmoid(self.halt(h)).squeeze(-1)
            running = cum < threshold                                  # not halted before step n
            # the last step takes all the remaining mass: N never exceeds max_steps
            halts_here = running if n == self.max_steps - 1 else running & (cum + p >= threshold)
            r = 1.0 - cum
            w = torch.where(halts_here, r, torch.where(running, p, torch.zeros_like(p)))
            weighted = weighted + w.unsqueeze(-1) * h
            steps = steps + running.to(x.dtype)
            remainder = remainder + torch.where(halts_here, r, torch.zeros_like(r))
            cum = cum + torch.where(running, p, torch.zeros_like(p))
            weights.append(w)
            probs.append(p)
            if dynamic and not bool((running & ~halts_here).any()):
                break
        pad = self.max_steps - len(weights)     # only in dynamic mode: later weights are 0
        weights += [x.new_zeros(b)] * pad
        probs += [x.new_zeros(b)] * pad
        return ReasoningOutput(
            state=x + self.out(weighted),
            ponder_cost=(steps + remainder).mean(),
            steps=steps,
            halting_weights=torch.stack(weights, dim=1),
            halting_probs=torch.stack(probs, dim=1),
        )
