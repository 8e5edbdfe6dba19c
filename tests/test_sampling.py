"""The sampling distribution: Gumbel-top-k draws, the set likelihoods, the tau schedule."""
import itertools
import math

import pytest
import torch

from tspo_ray.method import sampling


def brute_force_ordered_prob(logits, ordered):
    p = torch.softmax(logits.double(), 0)
    prob, remaining = 1.0, 1.0
    for i in ordered:
        prob *= p[i].item() / remaining
        remaining -= p[i].item()
    return prob


def test_plackett_luce_matches_brute_force_and_sums_to_one():
    logits = torch.tensor([0.3, -1.0, 2.0, 0.5, 1.2], dtype=torch.float64)
    k = 3
    draws = torch.tensor(list(itertools.permutations(range(5), k)))
    lp = sampling.plackett_luce_logprob(logits, draws).squeeze(-1)
    for d, value in zip(draws.tolist(), lp):
        assert value.exp().item() == pytest.approx(brute_force_ordered_prob(logits, d), rel=1e-12)
    assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-12)


def test_plackett_luce_gradient_matches_autograd_of_enumeration():
    base = torch.tensor([0.1, 0.7, -0.4, 1.5], dtype=torch.float64)
    ordered = torch.tensor([[2, 0]])
    a = base.clone().requires_grad_()
    sampling.plackett_luce_logprob(a, ordered).sum().backward()

    def enumerated(logits):  # the same probability from explicit products of softmaxes
        p = torch.softmax(logits, 0)
        return torch.log(p[2] * p[0] / (1 - p[2]))

    b = base.clone().requires_grad_()
    enumerated(b).backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_plackett_luce_stable_at_low_temperature():
    scores = torch.tensor([2.0, 1.99, -1.0, -2.0] * 8, dtype=torch.float32)
    logits = scores / 0.01
    draws = sampling.gumbel_topk(logits, 8, 4, torch.Generator().manual_seed(0))
    lp = sampling.plackett_luce_logprob(logits, draws)
    assert torch.isfinite(lp).all() and (lp <= 1e-5).all()


def test_per_frame_form_is_log_softmax_of_each_frame():
    logits = torch.tensor([1.0, 2.0, 3.0])
    lp = sampling.per_frame_logprob(logits, torch.tensor([[2, 0]]))
    expected = [3 - math.log(math.exp(1) + math.exp(2) + math.exp(3)), 1 - math.log(math.exp(1) + math.exp(2) + math.exp(3))]
    torch.testing.assert_close(lp[0], torch.tensor(expected))
    assert sampling.set_logprob(logits, torch.tensor([[2, 0]]), "per_frame").shape == (1, 2)
    assert sampling.set_logprob(logits, torch.tensor([[2, 0]]), "plackett_luce").shape == (1, 1)
    with pytest.raises(ValueError, match="unknown likelihood"):
        sampling.set_logprob(logits, torch.tensor([[0]]), "nope")


def test_gumbel_topk_frequencies_match_plackett_luce():
    logits = torch.tensor([0.0, 1.0, -0.5, 0.7], dtype=torch.float64)
    draws = sampling.gumbel_topk(logits, 2, 40000, torch.Generator().manual_seed(3))
    assert draws.shape == (40000, 2)
    assert (draws[:, 0] != draws[:, 1]).all()
    for pair in [(1, 3), (3, 1), (0, 2)]:
        freq = ((draws[:, 0] == pair[0]) & (draws[:, 1] == pair[1])).double().mean().item()
        assert freq == pytest.approx(brute_force_ordered_prob(logits, pair), abs=0.01)


def test_gumbel_topk_is_reproducible_and_handles_short_videos():
    logits = torch.randn(10)
    a = sampling.gumbel_topk(logits, 4, 3, torch.Generator().manual_seed(5))
    b = sampling.gumbel_topk(logits, 4, 3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    short = sampling.gumbel_topk(torch.randn(3), 8, 2)
    assert short.shape == (2, 3) and all(sorted(r) == [0, 1, 2] for r in short.tolist())
    one = sampling.gumbel_topk(torch.randn(1), 8, 2)
    assert one.tolist() == [[0], [0]]
    assert sampling.plackett_luce_logprob(torch.randn(1), one).abs().max() < 1e-6

def test_linear_tau_schedule():
    assert sampling.linear_tau(0, 11) == pytest.approx(0.025)
    assert sampling.linear_tau(5, 11) == pytest.approx(0.0175)
    assert sampling.linear_tau(10, 11) == pytest.approx(0.01)
    assert sampling.linear_tau(50, 11) == pytest.approx(0.01)
    assert sampling.linear_tau(0, 1) == pytest.approx(0.01)


def test_entropy():
    assert sampling.frame_entropy(torch.zeros(4)).item() == pytest.approx(math.log(4))
    assert sampling.frame_entropy(torch.tensor([0.0, -1e4])).item() == pytest.approx(0.0, abs=1e-6)

