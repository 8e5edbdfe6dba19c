"""The learner's likelihoods of a batch in one packed forward pass equal the per-group ones, on random agents."""
import types

import pytest
import torch

from tspo_ray.method.kinds import agent_from_config
from tspo_ray.training.learner import batch_logprobs, group_logprob
from tspo_ray.training.rollout import Group


def batch(seed: int, lengths, dim: int = 16, G: int = 4, k: int = 3):
    g = torch.Generator().manual_seed(seed)
    items, groups = [], []
    for i, T in enumerate(lengths):
        items.append(types.SimpleNamespace(frame_features=torch.randn(T, dim, generator=g),
                                           text_feature=torch.randn(dim, generator=g)))
        draws = torch.stack([torch.randperm(T, generator=g)[:k] for _ in range(G)])
        groups.append(Group(f"q{i}", draws, torch.zeros(G, 1), tau=0.05 * (i + 1), version=0))
    return items, groups


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind,likelihood,lengths", [
    ("temporal", "plackett_luce", [7, 40, 13, 64, 5]), ("temporal", "per_frame", [7, 40, 13, 64, 5]),
    ("scan", "plackett_luce", [7, 40, 13, 64, 5]),
    # videos of one length go through the scan's batched pass together (and one of a kind alone)
    ("scan", "plackett_luce", [13, 40, 13, 13, 40, 7, 13, 40, 40, 13])])
def test_packed_equals_one_group_at_a_time(seed, kind, likelihood, lengths):
    torch.manual_seed(seed)
    settings = {"dim": 16, "heads": 4, "window": 5} | ({"kind": "scan"} if kind == "scan" else {})
    agent = agent_from_config(settings)
    items, groups = batch(seed, lengths)
    if kind == "scan":  # a set-aware agent's own groups keep its sequential policy; anchored sets are packed
        groups = [g if i % 2 else Group(g.key, g.draws, g.logp_old, g.tau, 0, sets=g.draws)
                  for i, g in enumerate(groups)]
    got = batch_logprobs(agent, items, groups, likelihood)
    assert len(got) == len(groups)
    for (logits, logp), item, group in zip(got, items, groups):
        want_logits, want_logp = group_logprob(agent, item, group, likelihood)
        assert logits.shape == want_logits.shape and logp.shape == want_logp.shape
        torch.testing.assert_close(logits, want_logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(logp, want_logp, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind,lengths", [("eq3", [9, 33, 20]), ("scan", [9, 33, 9, 9, 33])])
def test_gradients_reach_every_parameter_as_one_at_a_time(kind, lengths):
    torch.manual_seed(3)
    agent = agent_from_config({"dim": 16, "heads": 4, "window": 5, "kind": kind})
    items, groups = batch(3, lengths)
    grads = []
    for packed in (True, False):
        agent.zero_grad()
        pairs = (batch_logprobs(agent, items, groups, "plackett_luce") if packed
                 else [group_logprob(agent, it, g, "plackett_luce") for it, g in zip(items, groups)])
        torch.cat([lp for _, lp in pairs]).sum().backward()
        grads.append({n: p.grad.clone() for n, p in agent.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() == {n for n, _ in agent.named_parameters()}
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5)


def test_one_group_is_not_packed():
    torch.manual_seed(4)
    agent = agent_from_config({"dim": 16, "heads": 4, "window": 5})
    calls = []
    original = agent.forward
    agent.forward = lambda *a, **k: calls.append(k.get("lengths")) or original(*a, **k)
    items, groups = batch(4, [12])
    batch_logprobs(agent, items, groups, "plackett_luce")
    items, groups = batch(4, [12, 8])
    batch_logprobs(agent, items, groups, "plackett_luce")
    assert calls == [None, [12, 8]]
