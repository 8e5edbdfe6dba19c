import math

import pytest
import torch

from tspo_ray.method import grpo, sampling
from tspo_ray.method.agent import TemporalAgent


def test_group_advantages_hand_computed():
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 3.0]])
    adv = grpo.group_advantages(rewards)
    s = math.sqrt(1 / 3)  # unbiased std of [1, 0, 1, 0]
    torch.testing.assert_close(adv.values[0], torch.tensor([0.5 / s, -0.5 / s, 0.5 / s, -0.5 / s]), atol=1e-5, rtol=0)
    assert adv.values[1].abs().max() == 0
    std = math.sqrt((3 * 0.75**2 + 2.25**2) / 3)
    torch.testing.assert_close(adv.values[2], torch.tensor([-0.75, -0.75, -0.75, 2.25]) / std, atol=1e-5, rtol=0)
    assert adv.zero_variance.tolist() == [False, True, False]
    with pytest.raises(ValueError):
        grpo.group_advantages(torch.ones(3))


def test_clipped_surrogate_hand_computed():
    # ratios 1.5 (A=+1: clipped at 1.2), 0.5 (A=+1: unclipped 0.5), 1.5 (A=-1: unclipped -1.5), 0.5 (A=-1: clipped -0.8)
    logp_old = torch.zeros(4, 1)
    logp_new = torch.log(torch.tensor([[1.5], [0.5], [1.5], [0.5]]))
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    out = grpo.clipped_surrogate(logp_new, logp_old, adv, clip_eps=0.2)
    assert out.loss.item() == pytest.approx(-(1.2 + 0.5 - 1.5 - 0.8) / 4)
    assert out.metrics["clip_fraction"] == 1.0
    k3 = sum((r - 1) - math.log(r) for r in (1.5, 0.5, 1.5, 0.5)) / 4
    assert out.metrics["approx_kl"] == pytest.approx(k3, rel=1e-5)


def test_kl_penalty_k3():
    logp_new = torch.tensor([[-1.0], [-2.0]], requires_grad=True)
    logp_ref = torch.tensor([[-1.5], [-1.0]])
    out = grpo.clipped_surrogate(logp_new, logp_new.detach(), torch.zeros(2), logp_ref=logp_ref, kl_coef=0.1)
    d = torch.tensor([-0.5, 1.0])
    expected_kl = (torch.exp(d) - d - 1).mean().item()
    assert out.metrics["kl_ref"] == pytest.approx(expected_kl, rel=1e-6)
    assert out.loss.item() == pytest.approx(0.1 * expected_kl, rel=1e-6)


@pytest.mark.parametrize("likelihood", ["plackett_luce", "per_frame"])
def test_ratio_moves_after_one_step_and_clipping_engages(likelihood):
    torch.manual_seed(0)
    T, D, G, k, tau = 24, 16, 8, 4, 0.05
    agent = TemporalAgent(D, heads=4)
    frames, text = torch.randn(T, D), torch.randn(D)
    before = {n: p.detach().clone() for n, p in agent.named_parameters()}
    with torch.no_grad():
        logits = agent(frames, text) / tau
    draws = sampling.gumbel_topk(logits, k, G, torch.Generator().manual_seed(1))
    logp_old = sampling.set_logprob(logits, draws, likelihood)
    rewards = (draws < 12).float().mean(-1, keepdim=True).T  # [1, G]: reward frames in the first half
    adv = grpo.group_advantages(rewards).values.reshape(-1)
    opt = torch.optim.Adam(agent.parameters(), lr=5e-3)
    metrics = []
    for _epoch in range(2):
        logp_new = sampling.set_logprob(agent(frames, text) / tau, draws, likelihood)
        out = grpo.clipped_surrogate(logp_new, logp_old, adv, clip_eps=0.2)
        metrics.append(out.metrics)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    # epoch 1 is on-policy: ratio exactly 1, nothing clipped; the update moves it and epoch 2 clips
    assert metrics[0]["ratio_mean"] == pytest.approx(1.0, abs=1e-6) and metrics[0]["clip_fraction"] == 0
    assert metrics[1]["ratio_max"] > 1.0 + 1e-3
    assert metrics[1]["clip_fraction"] > 0
    assert all(not torch.equal(before[n], p) for n, p in agent.named_parameters())


def test_family_advantages_scale_each_group_by_its_family_spread_by_hand():
    from tspo_ray.method.grpo import family_advantages, group_advantages

    rewards = torch.tensor([[1.0, 0.0], [2.0, 0.0], [1.0, 1.0], [3.0, 1.0]])
    got = family_advantages(rewards, ["a", "a", "b", "b"])
    # family a: centred rows (.5, -.5), (1, -1): sum of squares 2.5 over 4 - 2 degrees of freedom -> std sqrt(1.25)
    s = 1.25 ** 0.5
    assert torch.allclose(got.values[:2], torch.tensor([[0.5 / s, -0.5 / s], [1 / s, -1 / s]]), atol=1e-5)
    # family b: a zero-variance group (0 advantage) and (1, -1) over 4 - 2 -> std 1
    assert torch.allclose(got.values[2:], torch.tensor([[0.0, 0.0], [1.0, -1.0]]), atol=1e-5)
    assert got.zero_variance.tolist() == [False, False, True, False]
    # GRPO's per-group scale would give both family-a groups the same +-0.707
    assert torch.allclose(group_advantages(rewards).values[:2].abs(), torch.full((2, 2), 0.5 ** 0.5), atol=1e-5)
    with pytest.raises(ValueError, match="one family per group"):
        family_advantages(rewards, ["a"])


def test_learning_rewards_weigh_r_t_below_the_answer_by_hand():
    from tspo_ray.method.grpo import group_advantages, learning_rewards

    r_a = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    r_t = torch.tensor([[0.25, 1.0, 0.5, 0.0]])
    assert torch.allclose(learning_rewards(r_a, r_t, 0.5), torch.tensor([[1.125, 0.5, 1.25, 0.0]]))
    # w = 0: a set that piles every frame into the spans but answers wrong no longer ties one that answers right
    pile, right = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    assert group_advantages(learning_rewards(right, pile, 1.0)).zero_variance.tolist() == [True]
    assert group_advantages(learning_rewards(right, pile, 0.0)).values[0, 0] > 0
    # w = 1 gives the paper's advantages for needle (R_A + R_T) and general (R_A + 1) items alike
    totals = torch.cat([r_a + r_t, r_a + 1.0])
    ours = learning_rewards(torch.cat([r_a, r_a]), torch.cat([r_t, torch.zeros_like(r_t)]), 1.0)
    assert torch.allclose(group_advantages(ours).values, group_advantages(totals).values, atol=1e-6)
    with pytest.raises(ValueError, match="temporal_weight"):
        learning_rewards(r_a, r_t, -1.0)
    with pytest.raises(ValueError, match="shape"):
        learning_rewards(r_a, r_t[:, :2], 0.5)
