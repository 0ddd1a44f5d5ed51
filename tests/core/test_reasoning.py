"""Tiny-R1 reasoning: ACT halting weights, step limit, dynamic == unrolled, and a ponder cost
that really trains the number of steps down while the task is still learned."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from bitgen_core.reasoning import TinyR1Reasoner

torch.set_num_threads(1)


def test_halting_weights_form_a_distribution_within_max_steps():
    torch.manual_seed(0)
    r = TinyR1Reasoner(16, max_steps=8, halting_bias_init=-2.0)
    out = r(torch.randn(32, 16) * 3)
    assert out.halting_weights.shape == (32, 8) and out.state.shape == (32, 16)
    torch.testing.assert_close(out.halting_weights.sum(1), torch.ones(32), atol=1e-6, rtol=0)
    assert (out.halting_weights >= 0).all()
    assert ((out.steps >= 1) & (out.steps <= 8)).all()
    # a row's weights are p_n before its halting step, nothing after it
    for row in range(32):
        n = int(out.steps[row])
        w, p = out.halting_weights[row], out.halting_probs[row]
        torch.testing.assert_close(w[:n - 1], p[:n - 1])
        assert (w[n:] == 0).all()
        assert p[:n - 1].sum() < 1 - r.eps            # it had not halted earlier
        assert n == 8 or p[:n].sum() >= 1 - r.eps     # and halts when the sum crosses 1 - eps
    # ponder cost = mean(N + R) with R = the weight of the last step
    remainder = out.halting_weights.gather(1, (out.steps.long() - 1).unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(out.ponder_cost, (out.steps + remainder).mean())


def test_step_cap_when_the_gate_never_fires():
    r = TinyR1Reasoner(8, max_steps=8, halting_bias_init=-30.0)
    out = r(torch.randn(4, 8))
    assert (out.steps == 8).all()
    assert torch.allclose(out.halting_weights[:, -1], torch.ones(4), atol=1e-6)


def test_early_halt_when_the_gate_fires_at_once():
    r = TinyR1Reasoner(8, max_steps=8, halting_bias_init=30.0)
    out = r(torch.randn(4, 8))
    assert (out.steps == 1).all() and out.halting_weights[:, 0].eq(1).all()


def test_dynamic_stop_equals_the_unrolled_export_form():
    torch.manual_seed(1)
    r = TinyR1Reasoner(16, max_steps=8)
    x = torch.randn(5, 16)
    a, b = r(x), r(x, dynamic=True)
    torch.testing.assert_close(a.state, b.state)
    torch.testing.assert_close(a.halting_weights, b.halting_weights)
    torch.testing.assert_close(a.ponder_cost, b.ponder_cost)


def _train(ponder_weight: float, steps: int = 100):
    torch.manual_seed(0)
    d, classes = 16, 3
    r = TinyR1Reasoner(d, max_steps=8, halting_bias_init=-2.0)
    head = nn.Linear(d, classes)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(128, d, generator=gen)
    y = (x[:, :classes] * torch.tensor([1.0, 0.5, -0.7])).argmax(1)
    opt = torch.optim.Adam([*r.parameters(), *head.parameters()], lr=1e-2)
    first = None
    for _ in range(steps):
        out = r(x)
        task = F.cross_entropy(head(out.state), y)
        first = task.item() if first is None else first
        loss = task + ponder_weight * out.ponder_cost
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = r(x)
        acc = (head(out.state).argmax(1) == y).float().mean().item()
    return first, task.item(), acc, out.steps.mean().item()


def test_ponder_cost_trains_the_number_of_steps_down_while_the_task_is_learned():
    start_steps = TinyR1Reasoner(16, halting_bias_init=-2.0)(torch.randn(64, 16)).steps.mean().item()
    first0, last0, acc0, steps0 = _train(0.0)
    first1, last1, acc1, steps1 = _train(0.05)
    assert start_steps >= 3
    assert last1 < 0.5 * first1 and acc1 > 0.85, (first1, last1, acc1)   # task still learned
    assert steps1 <= 2.0 and steps1 < steps0 - 2.0, (steps0, steps1)     # and thinking is cheaper
