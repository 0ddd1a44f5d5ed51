"""GRPO math on hand-made numbers, and the trace rewards on good and bad traces."""
import math

import pytest
import torch

from bitgen_core.catalog import RobotCatalog
from training import grpo

torch.set_num_threads(1)
CAT = RobotCatalog.load()
GOOD = "environment: flooded basement → underwater; needs: inspection → underwater, drone; selected: underwater"


def test_group_advantages_normalise_within_each_group():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0], [3.0, 1.0, 2.0, 2.0]])
    a = grpo.group_advantages(r, eps=0.0 + 1e-12)
    assert torch.allclose(a[0], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-6)
    assert torch.all(a[1] == 0)                              # no signal in a tied group
    std = math.sqrt(0.5)                                     # population std of [3, 1, 2, 2]
    assert torch.allclose(a[2], torch.tensor([1 / std, -1 / std, 0.0, 0.0]), atol=1e-5)
    assert torch.allclose(a.mean(1), torch.zeros(3), atol=1e-6)


def test_clipped_surrogate_takes_the_pessimistic_branch():
    new, old = torch.tensor([[0.5, -0.5]]), torch.zeros(1, 2)          # ratios e^0.5, e^-0.5
    up = grpo.clipped_surrogate(new, old, torch.tensor([1.0]), clip=0.2)
    # positive advantage: gains are capped at ratio 1.2; a smaller ratio is not clipped
    assert up[0, 0].item() == pytest.approx(-1.2)
    assert up[0, 1].item() == pytest.approx(-math.exp(-0.5))
    down = grpo.clipped_surrogate(new, old, torch.tensor([-1.0]), clip=0.2)
    # negative advantage: the larger ratio is kept unclipped (min of -r*1 and -1.2*1), the
    # smaller one is clipped at 0.8
    assert down[0, 0].item() == pytest.approx(math.exp(0.5))
    assert down[0, 1].item() == pytest.approx(0.8)


def test_k3_kl_is_zero_at_equality_and_matches_the_formula():
    lp = torch.tensor([[-1.0, -2.0]])
    assert torch.allclose(grpo.kl_k3(lp, lp), torch.zeros(1, 2))
    ref = lp + math.log(2.0)                                 # ref / new = 2
    assert grpo.kl_k3(lp, ref)[0, 0].item() == pytest.approx(2 - math.log(2) - 1)
    assert torch.all(grpo.kl_k3(lp, lp - 3.0) > 0)


def test_grpo_loss_masks_padding_and_adds_beta_kl():
    new = torch.tensor([[0.0, 0.0, 9.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    adv = torch.tensor([1.0, -1.0])
    out = grpo.grpo_loss(new, new.clone(), new.clone(), adv, mask, clip=0.2, beta=0.1)
    # ratio 1 everywhere that counts: per-trace loss -A, KL 0; the padded 9.0 is ignored
    assert out["loss"].item() == pytest.approx(0.0)
    assert out["kl"].item() == pytest.approx(0.0)
    ref = new - math.log(2.0)
    out = grpo.grpo_loss(new, new, ref, torch.zeros(2), mask, clip=0.2, beta=0.1)
    k3 = math.exp(-math.log(2)) + math.log(2) - 1
    assert out["loss"].item() == pytest.approx(0.1 * k3, rel=1e-5)


def test_grpo_loss_gradient_pushes_up_positive_advantage_tokens():
    new = torch.zeros(2, 3, requires_grad=True)
    out = grpo.grpo_loss(new, torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([1.0, -1.0]),
                         torch.ones(2, 3, dtype=torch.bool), beta=0.0)
    out["loss"].backward()
    assert torch.all(new.grad[0] < 0) and torch.all(new.grad[1] > 0)


def test_reward_of_a_good_trace():
    r = grpo.trace_reward(GOOD, ["underwater"], ["underwater"], CAT)
    assert (r.f1, r.well_formed, r.consistent, r.total) == (1.0, 1.0, 1.0, 2.0)


def test_reward_of_wrong_inconsistent_and_malformed_traces():
    wrong = GOOD.replace("selected: underwater", "selected: drone")
    r = grpo.trace_reward(wrong, ["underwater"], ["underwater"], CAT)
    assert (r.f1, r.well_formed, r.consistent) == (0.0, 1.0, 0.0) and r.total == 0.5
    partial = GOOD.replace("selected: underwater", "selected: underwater, drone")
    r = grpo.trace_reward(partial, ["underwater"], ["underwater", "drone"], CAT)
    assert r.f1 == pytest.approx(2 / 3) and r.consistent == 1.0
    for bad in ("", "selected: underwater", "environment: pool; needs: x → drone; selected: robot dog",
                GOOD.replace("; selected:", " selected:")):
        r = grpo.trace_reward(bad, ["underwater"], ["underwater"], CAT)
        assert r.total == 0.0 and r.well_formed == 0.0


def test_chosen_robots_threshold_top1_and_cap():
    keys = ["drone", "underwater", "humanoid", "wheeled", "legged"]
    assert grpo.chosen_robots(torch.tensor([0.1, 0.2, 0.3, 0.05, 0.01]), keys) == ["humanoid"]
    assert grpo.chosen_robots(torch.tensor([0.9, 0.8, 0.7, 0.6, 0.55]), keys) == ["drone", "underwater", "humanoid"]
    assert grpo.chosen_robots(torch.tensor([0.2, 0.9, 0.1, 0.6, 0.3]), keys) == ["underwater", "wheeled"]
