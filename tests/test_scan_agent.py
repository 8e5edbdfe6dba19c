"""Agent kinds by name, the scan kind and the set-aware sequential policy: hand-computed values, brute force."""
import itertools
import math

import numpy as np
import pytest
import torch

from tspo_ray.method import sampling, selection_methods
from tspo_ray.method.agent import AGENT_KINDS, TemporalAgent, register_agent
from tspo_ray.method.kinds import agent_from_config, agent_kinds, is_set_aware
from tspo_ray.method.scan_agent import (EventScanAgent, boundary_probabilities, event_index, neighbour_matches,
                                        same_event_kernel)
from tspo_ray.method.sequential import sequential_greedy, sequential_logprob, sequential_sample

D = 16


def events_video(lengths, seed=0, noise=0.05):
    """Candidates of consecutive events: event e's frames are its own random direction plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(len(lengths), D, generator=g) * 3
    frames = torch.cat([dirs[e].expand(n, D) for e, n in enumerate(lengths)])
    return frames + noise * torch.randn(frames.shape, generator=g), dirs


def loop_logprob(scores, kernel, lam, tau, order, adjacent=None, mu=0.0):
    """The set-aware likelihood written out step by step, in Python floats (with an adjacency matrix and its mu:
    + mu * the largest adjacency to the frames taken)."""
    s, K, total, taken = scores.tolist(), kernel.tolist(), 0.0, []
    A = adjacent.tolist() if adjacent is not None else [[0.0] * len(s)] * len(s)
    for i in order:
        logits = {j: (s[j] - lam * max([K[j][c] for c in taken], default=0.0)
                      + mu * max([A[j][c] for c in taken], default=0.0)) / tau
                  for j in range(len(s)) if j not in taken}
        total += logits[i] - math.log(sum(math.exp(v) for v in logits.values()))
        taken.append(i)
    return total


def random_policy(T, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(T, generator=g, dtype=torch.float64)
    a = torch.rand(T, T, generator=g, dtype=torch.float64)
    return scores, (a + a.T) / 2


class DenseKernel:
    """A kernel given as matrices, with an adjacency matrix and its bonus mu (what SameEventKernel computes), and
    optionally scores added to the first step only."""

    def __init__(self, K, A, mu, opening=None):
        self.K, self.A, self.bonus, self.opening = K, A, torch.as_tensor(mu, dtype=K.dtype), opening

    def __getitem__(self, idx):
        return self.K[idx]

    def adjacent(self, idx):
        return self.A[idx]


# --- the registry ---------------------------------------------------------------------------------------------

def test_kinds_by_name_and_the_default_is_eq3():
    assert {"eq3", "scan"} <= set(agent_kinds())
    plain = agent_from_config({"dim": D, "heads": 4})
    assert type(plain) is TemporalAgent and "kind" not in plain.config()  # eq3 checkpoints read as before
    scan = agent_from_config({"kind": "scan", "dim": D, "heads": 4})
    assert type(scan) is EventScanAgent and scan.config()["kind"] == "scan" and is_set_aware(scan)
    assert not is_set_aware(plain)
    with pytest.raises(ValueError, match="unknown agent kind 'nope'"):
        agent_from_config({"kind": "nope", "dim": D})


def test_register_refuses_a_second_class_under_a_taken_name():
    with pytest.raises(ValueError, match="registered already"):
        @register_agent("scan")
        class Other(TemporalAgent):
            pass
    assert AGENT_KINDS["scan"] is EventScanAgent


def test_scan_agent_rebuilds_from_its_config_and_scores_alike():
    torch.manual_seed(0)
    agent = EventScanAgent(D, heads=4, position_scale=5.0)
    copy = agent_from_config(agent.config())
    copy.load_state_dict(agent.state_dict())
    frames, _ = events_video([4, 6, 3, 5])
    text = torch.randn(D)
    assert torch.equal(agent(frames, text), copy(frames, text))
    # packed videos score as one at a time
    other, _ = events_video([3, 3, 7], seed=1)
    packed = agent(torch.cat([frames, other]), torch.stack([text, -text]), lengths=[18, 13])
    assert torch.allclose(packed, torch.cat([agent(frames, text), agent(other, -text)]), atol=1e-6)


@pytest.mark.parametrize("options", [{}, {"grounding": True, "query_conditioned": True}, {"enhancer": False},
                                     {"adjacency": True}, {"adjacency": True, "opening": True}])
def test_videos_of_one_length_scored_side_by_side_equal_one_at_a_time_values_and_gradients(options):
    torch.manual_seed(0)
    agent = EventScanAgent(D, heads=4, position_scale=5.0, **options)
    with torch.no_grad():  # a head that weighs every feature, so that each reaches the scores
        agent.head[2].weight.normal_(0, 0.5)
    videos = [events_video(n, seed=i)[0] for i, n in enumerate([[4, 6, 3], [5, 5, 3], [2, 9, 2], [3, 3, 7], [6, 6]])]
    texts = torch.randn(len(videos), D)
    lengths = [v.shape[0] for v in videos]
    assert sorted(lengths) == [12, 13, 13, 13, 13]  # four share a length: they go through one batched pass

    def grads(loss):
        agent.zero_grad()
        loss.backward()
        return {n: p.grad.clone() for n, p in agent.named_parameters() if p.grad is not None}

    one_by_one = [agent(v, t) for v, t in zip(videos, texts)]
    g_one = grads(sum((s * torch.arange(len(s))).sum() for s in one_by_one))
    packed = agent(torch.cat(videos), texts, lengths=lengths)
    g_packed = grads((torch.cat([s * torch.arange(len(s)) for s in packed.split(lengths)])).sum())
    assert torch.allclose(packed, torch.cat(one_by_one), atol=1e-5)
    # every parameter but lambda's (the policy's, not the scores') reaches the scores
    assert set(g_one) == set(g_packed) == {n for n, _ in agent.named_parameters()} - {"penalty_raw"}
    for name in g_one:
        assert torch.allclose(g_one[name], g_packed[name], atol=1e-4, rtol=1e-4), name
    # the set-aware policy's parts, batched
    policies, lam = agent.set_policies(videos, list(texts))
    for (s, K), v, t in zip(policies, videos, texts):
        s1, K1, lam1 = agent.set_policy(v, t)
        idx = torch.arange(len(s1))
        assert torch.allclose(s, s1, atol=1e-5) and torch.allclose(K[idx], K1[idx], atol=1e-5)
        assert torch.equal(lam, lam1)
        assert (K.bonus is None) == (K1.bonus is None) == (not options.get("adjacency"))
        if K.bonus is not None:
            assert torch.allclose(K.bonus, K1.bonus, atol=1e-5)
            assert torch.allclose(K.adjacent(idx), K1.adjacent(idx), atol=1e-5)
        assert (K.opening is None) == (K1.opening is None) == (not options.get("opening"))
        if K.opening is not None:
            assert torch.allclose(K.opening, K1.opening, atol=1e-5)


# --- the scan ---------------------------------------------------------------------------------------------------

def test_boundaries_and_the_prefix_scan_count_events_by_hand():
    e = torch.eye(4)
    frames = torch.stack([e[0], e[0], e[1], e[1], e[1], e[2]])  # neighbours: same, new, same, same, new
    b = boundary_probabilities(frames, torch.tensor(1e4), torch.tensor(0.5))
    assert b.tolist() == [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert event_index(b).tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 2.0]
    K = same_event_kernel(event_index(b))
    assert K[0, 1] == 1 and K[2, 4] == 1
    assert math.isclose(float(K[0, 2]), math.exp(-1 / (2 * 0.35**2)), rel_tol=1e-6)


def test_neighbour_matches_against_the_sum_written_out():
    index = torch.tensor([0.0, 0.0, 1.0, 1.0, 2.0, 3.0])
    match = torch.tensor([1.0, 3.0, -1.0, 0.0, 2.0, 5.0])
    got = neighbour_matches(index, match, 2)
    for j in range(6):
        for col, n in enumerate(range(-2, 3)):
            w = [math.exp(-(float(index[i] - index[j]) - n) ** 2 / (2 * 0.35**2)) for i in range(6)]
            want = sum(wi * float(m) for wi, m in zip(w, match)) / (sum(w) + 1)
            assert math.isclose(float(got[j, col]), want, rel_tol=1e-5, abs_tol=1e-6)
    # the event one step after j = 0's is event 1: frames 2, 3 (weight 1, match -1 + 0), with the prior weight 1 and
    # q = exp(-1 / (2 * 0.35^2)) from the events one count off (frames 0, 1: 1 + 3; frame 4: 2)
    q = math.exp(-1 / (2 * 0.35**2))
    assert math.isclose(float(got[0, 3]), (-1 + 6 * q) / (2 + 3 * q + 1), rel_tol=1e-5)


# --- the set-aware policy ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sequential_likelihood_is_exact_by_enumeration(seed):
    scores, kernel = random_policy(5, seed)
    lam, tau = 1.3, 0.7
    orders = torch.tensor(list(itertools.permutations(range(5), 3)))
    logp = sequential_logprob(scores, kernel, torch.tensor(lam, dtype=torch.float64), tau, orders).squeeze(-1)
    assert math.isclose(float(logp.exp().sum()), 1.0, rel_tol=1e-9)  # a distribution over ordered draws
    for order, lp in zip(orders.tolist(), logp.tolist()):
        assert math.isclose(lp, loop_logprob(scores, kernel, lam, tau, order), rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize("mu", [0.8, -0.5])
def test_sequential_likelihood_with_an_adjacency_bonus_is_exact_by_enumeration(mu):
    scores, kernel = random_policy(5, 7)
    _, adjacent = random_policy(5, 8)
    lam, tau = 1.3, 0.7
    orders = torch.tensor(list(itertools.permutations(range(5), 3)))
    logp = sequential_logprob(scores, DenseKernel(kernel, adjacent, mu), torch.tensor(lam, dtype=torch.float64), tau,
                              orders).squeeze(-1)
    assert math.isclose(float(logp.exp().sum()), 1.0, rel_tol=1e-9)
    plain = sequential_logprob(scores, kernel, torch.tensor(lam, dtype=torch.float64), tau, orders).squeeze(-1)
    assert not torch.allclose(logp, plain)  # the bonus reaches the likelihood
    for order, lp in zip(orders.tolist(), logp.tolist()):
        assert math.isclose(lp, loop_logprob(scores, kernel, lam, tau, order, adjacent, mu), rel_tol=1e-9,
                            abs_tol=1e-12)
    # samples follow it
    draws = sequential_sample(scores[:4], DenseKernel(kernel[:4, :4], adjacent[:4, :4], mu), lam, tau, 2, 40000,
                              torch.Generator().manual_seed(0))
    counts = {}
    for a, b in draws.tolist():
        counts[(a, b)] = counts.get((a, b), 0) + 1
    for order in itertools.permutations(range(4), 2):
        p = math.exp(loop_logprob(scores[:4], kernel[:4, :4], lam, tau, order, adjacent[:4, :4], mu))
        assert abs(counts.get(order, 0) / 40000 - p) < 0.012, (order, p)


def test_opening_scores_change_the_first_step_only_exactly():
    scores, kernel = random_policy(5, 9)
    _, adjacent = random_policy(5, 10)
    opening = torch.randn(5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    lam, tau, mu = 1.3, 0.7, 0.6
    orders = torch.tensor(list(itertools.permutations(range(5), 3)))
    logp = sequential_logprob(scores, DenseKernel(kernel, adjacent, mu, opening), torch.tensor(lam, dtype=torch.float64),
                              tau, orders).squeeze(-1)
    assert math.isclose(float(logp.exp().sum()), 1.0, rel_tol=1e-9)
    for order, lp in zip(orders.tolist(), logp.tolist()):
        first = math.log(sum(math.exp((float(scores[j]) + float(opening[j])) / tau) for j in range(5)))
        plain_first = math.log(sum(math.exp(float(scores[j]) / tau) for j in range(5)))
        # the first step's term with the opening, the later steps as without it
        want = (loop_logprob(scores, kernel, lam, tau, order, adjacent, mu) + float(opening[order[0]]) / tau
                - first + plain_first)
        assert math.isclose(lp, want, rel_tol=1e-9, abs_tol=1e-12)
    # the greedy decode: the opening picks the first frame, the rest follows the scores
    K = DenseKernel(torch.eye(4, dtype=torch.float64), torch.zeros(4, 4, dtype=torch.float64), 0.0,
                    torch.tensor([0.0, 0.0, 0.0, 5.0], dtype=torch.float64))
    s = torch.tensor([1.0, 0.9, 0.2, 0.1], dtype=torch.float64)
    assert sequential_greedy(s, K, 2.0, 2).tolist() == [0, 3]


def test_greedy_with_an_adjacency_bonus_follows_a_chain_of_events():
    from tspo_ray.method.scan_agent import SIGMA, SameEventKernel

    index = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])  # five candidates, one event each
    kernel = SameEventKernel(index, torch.tensor(0.5))
    far = math.exp(-1 / (2 * SIGMA**2))  # adjacency two events (or zero) apart
    assert torch.allclose(kernel.adjacent(torch.tensor([0])), torch.tensor([[far, 1.0, far, math.exp(-4 / (2 * SIGMA**2)),
                                                                               math.exp(-9 / (2 * SIGMA**2))]]))
    scores = torch.tensor([1.0, 0.2, 0.5, 0.45, 0.0])
    assert sequential_greedy(scores, SameEventKernel(index), 2.0, 2).tolist() == [0, 2]
    # frame 1: 0.2 + 0.5 * 1 = 0.7 beats frame 2: 0.5 + 0.5 * far; then 2 (next to 1) beats 3
    assert sequential_greedy(scores, kernel, 2.0, 3).tolist() == [0, 1, 2]
    batched = SameEventKernel.stack([kernel, SameEventKernel(index, torch.tensor(0.0))])
    assert batched.bonus.tolist() == [0.5, 0.0]
    with pytest.raises(ValueError, match="adjacency"):
        SameEventKernel.stack([kernel, SameEventKernel(index)])


def test_the_adjacency_bonus_is_the_heads_last_output_starts_at_its_init_and_is_recorded():
    torch.manual_seed(0)
    agent = EventScanAgent(D, heads=4, adjacency=True, adjacency_init=0.7)
    plain = EventScanAgent(D, heads=4)
    assert agent.head[2].out_features == plain.head[2].out_features + 1
    it = make_item(0)
    frames, text = it.frame_features, it.text_feature
    assert "adjacency" not in plain.config() and plain.set_policy(frames, text)[1].bonus is None
    s, K, lam = agent.set_policy(frames, text)
    assert abs(float(K.bonus.detach()) - 0.7) < 0.05  # the head's weights start near 0, its bias at the init
    copy = agent_from_config(agent.config())
    copy.load_state_dict(agent.state_dict())
    s2, K2, _ = copy.set_policy(frames, text)
    assert copy.adjacency_init == 0.7 and torch.equal(s, s2) and torch.equal(K.bonus, K2.bonus)


def test_sequential_likelihood_without_penalty_is_plackett_luce():
    scores, kernel = random_policy(7, 3)
    orders = torch.tensor([[3, 1, 6], [0, 5, 2], [6, 4, 1]])
    got = sequential_logprob(scores, kernel, torch.tensor(0.0, dtype=torch.float64), 0.5, orders)
    assert torch.allclose(got, sampling.plackett_luce_logprob(scores / 0.5, orders))


def test_sequential_samples_follow_the_likelihood():
    scores, kernel = random_policy(4, 4)
    lam, tau = 2.0, 1.0
    draws = sequential_sample(scores, kernel, lam, tau, 2, 40000, torch.Generator().manual_seed(0))
    assert all(len(set(r)) == 2 for r in draws[:200].tolist())
    counts = {}
    for a, b in draws.tolist():
        counts[(a, b)] = counts.get((a, b), 0) + 1
    for order in itertools.permutations(range(4), 2):
        p = math.exp(loop_logprob(scores, kernel, lam, tau, order))
        assert abs(counts.get(order, 0) / 40000 - p) < 0.012, (order, p)


def test_greedy_spreads_over_events_where_top_k_piles_onto_one():
    scores = torch.tensor([1.0, 0.9, 0.2, 0.5])
    kernel = torch.tensor([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    assert selection_methods.select_topk(scores, 2).tolist() == [0, 1]
    assert sequential_greedy(scores, kernel, 2.0, 2).tolist() == [0, 3]  # frame 1: 0.9 - 2 < 0.5
    assert sequential_greedy(scores, kernel, 0.3, 2).tolist() == [0, 1]  # a small penalty: 0.6 > 0.5
    assert sequential_greedy(scores, kernel, 2.0, 9).tolist() == [0, 1, 2, 3]  # fewer candidates than k


# --- training and selection wiring ------------------------------------------------------------------------------

def make_item(seed=0):
    from tspo_ray.data.items import FeatureItem
    from tspo_ray.data.records import QARecord

    g = torch.Generator().manual_seed(seed)
    lengths = [int(n) for n in torch.randint(3, 8, (7,), generator=g)]
    # boundaries of middling clarity (cosine distance near the boundary threshold), so the scan has gradients
    frames, dirs = events_video(lengths, seed=seed, noise=1.2)
    T = frames.shape[0]
    rec = QARecord(id=f"q{seed}", video="v.mp4", question="q?", options=["a", "b"], answer="A", type="general")
    return FeatureItem(rec, frames, dirs[2] + 0.1 * torch.randn(D, generator=g), np.arange(T),
                       np.arange(T, dtype=float), "v.mp4")


@pytest.mark.parametrize("options", [{}, {"adjacency": True}, {"adjacency": True, "opening": True}])
def test_every_trainable_parameter_changes_after_a_learner_step(options):
    from tspo_ray.method.rewards import RewardResult
    from tspo_ray.training.learner import learner_step
    from tspo_ray.training.rollout import sample_group

    torch.manual_seed(0)
    agent = EventScanAgent(D, heads=4, **options)
    items = [make_item(s) for s in range(3)]
    groups = []
    for it in items:
        grp = sample_group(agent, it, 6, 4, 0.3, "plackett_luce", 0, torch.Generator().manual_seed(1))
        with torch.no_grad():
            s, K, lam = agent.set_policy(it.frame_features, it.text_feature)
        assert torch.allclose(grp.logp_old, sequential_logprob(s, K, lam, 0.3, grp.draws).float(), atol=1e-5)
        r = torch.arange(6, dtype=torch.float32)
        groups.append(grp.with_rewards(RewardResult(r, r, torch.zeros(6))))
    before = {n: p.detach().clone() for n, p in agent.named_parameters()}
    opt = torch.optim.Adam(agent.parameters(), lr=1e-2)
    learner_step(agent, opt, items, groups, likelihood="plackett_luce", clip_eps=0.2, epochs=1, current_version=0)
    unchanged = [n for n, p in agent.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged, unchanged


@pytest.mark.parametrize("anchors,options", [(None, {}), (2, {}), (None, {"adjacency": True}),
                                             (None, {"adjacency": True, "opening": True})])
def test_a_batch_drawn_together_equals_one_item_at_a_time(anchors, options):
    """sample_groups batches the set-aware agent's policies and draws; with the same generator the groups are those
    of sample_group called item by item (mixed lengths, haystack items of another budget, anchored sets)."""
    import dataclasses

    from tspo_ray.training.rollout import sample_group, sample_groups

    torch.manual_seed(0)
    agent = EventScanAgent(D, heads=4, **options).eval()
    items = [make_item(s) for s in (1, 2, 1, 3, 2, 1)]  # some share a length
    items[3] = dataclasses.replace(items[3], target_mask=np.ones(items[3].frame_features.shape[0], dtype=bool))
    assert len({it.frame_features.shape[0] for it in items}) < len(items)
    got = sample_groups(agent, items, 5, 4, 0.3, "plackett_luce", 7, torch.Generator().manual_seed(11),
                        haystack_frames=6, anchors=anchors)
    gen = torch.Generator().manual_seed(11)
    want = [sample_group(agent, it, 5, 6 if it.target_mask is not None else 4, 0.3, "plackett_luce", 7, gen,
                         None if it.target_mask is not None else anchors) for it in items]
    for g, w in zip(got, want):
        assert g.key == w.key and g.version == 7 and g.tau == 0.3
        assert torch.equal(g.draws, w.draws)
        torch.testing.assert_close(g.logp_old, w.logp_old, rtol=1e-5, atol=1e-5)
        assert (g.sets is None) == (w.sets is None) and (g.sets is None or torch.equal(g.sets, w.sets))
    assert got[3].draws.shape == (5, 6) and got[0].draws.shape[1] == (4 if anchors is None else 2)
    # each group owns its tensors: a view of the batch's would pickle every group's draws (the coordinator sends them)
    for g in got:
        assert g.draws.untyped_storage().nbytes() == g.draws.numel() * g.draws.element_size()
        assert g.logp_old.untyped_storage().nbytes() == g.logp_old.numel() * g.logp_old.element_size()


def test_agent_greedy_selects_by_the_agent_policy_and_needs_a_set_aware_kind():
    from tspo_ray.selector import SelectionJob, select_many, select_positions

    torch.manual_seed(0)
    agent = EventScanAgent(D, heads=4).eval()
    it = make_item(5)
    pos, scores = select_positions(it.frame_features, it.text_feature, "agent:greedy", 4, agent)
    s, K, lam = agent.set_policy(it.frame_features, it.text_feature)
    assert pos.tolist() == sequential_greedy(s.detach(), K, lam, 4).tolist()
    assert torch.allclose(scores, s.detach())
    # the agent's default mode may be greedy, through the batched path too
    rec = select_many([SelectionJob(it.frame_features, it.text_feature, it.frame_indices, it.timestamps_s, 4, "agent"),
                       SelectionJob(it.frame_features, it.text_feature, it.frame_indices, it.timestamps_s, 4,
                                    "agent:top-k")], agent, inference_mode="greedy")
    assert rec[0]["positions"] == pos.tolist()
    assert rec[1]["positions"] == selection_methods.select_topk(s.detach(), 4).tolist()
    with pytest.raises(ValueError, match="set-aware"):
        select_positions(it.frame_features, it.text_feature, "agent:greedy", 4, TemporalAgent(D, heads=4))
    with pytest.raises(ValueError, match="unknown selector"):
        selection_methods.parse_selector("clip:greedy")


def test_scan_without_the_enhancer_has_no_eq3_weights_and_starts_at_twice_the_cosine():
    from tspo_ray.method.agent import cosine_to_text

    torch.manual_seed(0)
    agent = EventScanAgent(D, heads=4, enhancer=False)
    names = {n.split(".")[0] for n, _ in agent.named_parameters()}
    assert names == {"log_sharpness", "threshold", "penalty_raw", "head"}
    frames, _ = events_video([3, 4, 5])
    text = torch.randn(D)
    with torch.no_grad():
        agent.head[2].weight.zero_()
        assert torch.allclose(agent(frames, text), 2 * cosine_to_text(frames, text))
    copy = agent_from_config(agent.config())
    assert copy.config()["enhancer"] is False and not hasattr(copy, "mlp")


def test_config_builds_the_kind_with_its_options_and_names_a_bad_kind():
    from tspo_ray.config import ConfigError, load_config
    from tspo_ray.training.learner_state import build_agent

    cfg = load_config(overrides=["agent.kind=scan", "agent.heads=4", "agent.options.penalty=0.5",
                                 "agent.options.enhancer=false"])
    agent = build_agent(cfg, D)
    assert type(agent) is EventScanAgent and not agent.enhancer
    assert math.isclose(float(agent.penalty.detach()), 0.5, rel_tol=1e-6)
    assert type(build_agent(load_config(overrides=["agent.heads=4"]), D)) is TemporalAgent
    with pytest.raises(ConfigError, match="agent.kind"):
        load_config(overrides=["agent.kind=nope"])


def dense_neighbour_matches(index, match, offsets):
    delta = index[None, :] - index[:, None]
    cols = []
    for n in range(-offsets, offsets + 1):
        w = torch.exp(-(delta - n) ** 2 / (2 * 0.35**2))
        cols.append((w @ match) / (w.sum(-1) + 1))
    return torch.stack(cols, dim=-1)


@pytest.mark.parametrize("seed", [0, 1])
def test_banded_neighbour_matches_equal_the_dense_sum_over_all_candidates(seed):
    from tspo_ray.method.scan_agent import SameEventKernel

    g = torch.Generator().manual_seed(seed)
    b = (torch.rand(400, generator=g) < 0.15).double() * torch.rand(400, generator=g, dtype=torch.float64)
    b[0] = 0
    index = event_index(b)  # soft counts, runs of every length
    match = torch.randn(400, generator=g, dtype=torch.float64)
    want = dense_neighbour_matches(index, match, 3)
    assert torch.allclose(neighbour_matches(index, match, 3), want, atol=1e-12)  # runs narrower than T / 2
    # the all-pairs path (taken where the runs cover half the video), for videos side by side
    from tspo_ray.method.scan_agent import _all_pairs_neighbour_matches
    both = _all_pairs_neighbour_matches(torch.stack([index, index.flip(0).neg() + index[-1]]),
                                        torch.stack([match, match]), 3)
    assert torch.allclose(both[0], want, atol=1e-12)
    assert torch.allclose(both[1], dense_neighbour_matches(index.flip(0).neg() + index[-1], match, 3), atol=1e-12)
    lazy, dense = SameEventKernel(index), same_event_kernel(index)
    picks = torch.tensor([[5, 200, 7], [399, 0, 13]])
    assert torch.equal(lazy[picks], dense[picks])
    scores = torch.randn(400, generator=g, dtype=torch.float64)
    assert torch.equal(sequential_greedy(scores, lazy, 1.5, 8), sequential_greedy(scores, dense, 1.5, 8))
    assert torch.allclose(sequential_logprob(scores, lazy, torch.tensor(1.5), 0.3, picks),
                          sequential_logprob(scores, dense, torch.tensor(1.5), 0.3, picks))


# --- grounding: how sharply the question is found, read by the head ---------------------------------------------

def test_grounding_summary_by_hand():
    from tspo_ray.method.scan_agent import grounding_summary

    # ten values 0..9: max 9, 90th percentile (linear interpolation at 8.1) 8.1
    got = grounding_summary(torch.arange(10, dtype=torch.float32))
    assert torch.allclose(got, torch.tensor([9 / 4, 0.9 / 4]))
    # a flat match has no lead; one sharp peak leads by its height
    assert torch.allclose(grounding_summary(torch.zeros(20)), torch.zeros(2))
    peak = torch.zeros(20)
    peak[7] = 8.0
    assert torch.allclose(grounding_summary(peak), torch.tensor([2.0, 2.0]))


def test_grounding_feeds_the_head_is_recorded_and_changes_the_scores_only_through_the_head():
    torch.manual_seed(0)
    agent = EventScanAgent(D, heads=4, grounding=True)
    assert agent.head[0].in_features == D + 2 and agent.config()["grounding"] is True
    assert "grounding" not in EventScanAgent(D, heads=4).config()  # the default leaves old configs as they were
    copy = agent_from_config(agent.config())
    copy.load_state_dict(agent.state_dict())
    frames, _ = events_video([4, 6, 3, 5])
    text = torch.randn(D)
    assert torch.equal(agent(frames, text), copy(frames, text))
    # the head's input is the unit text and the summary of the standardised match
    from tspo_ray.method.agent import cosine_to_text
    from tspo_ray.method.scan_agent import grounding_summary, standardised

    match = standardised(cosine_to_text(frames, text))
    x = agent.head_input(text, match)
    assert torch.allclose(x[:D], text / text.norm()) and torch.allclose(x[D:], grounding_summary(match))
    # with the summary's input weights zeroed, the scores are those of the same agent without grounding
    plain = EventScanAgent(D, heads=4)
    state = {k: v for k, v in agent.state_dict().items()}
    state["head.0.weight"] = state["head.0.weight"][:, :D]
    plain.load_state_dict(state)
    with torch.no_grad():
        agent.head[0].weight[:, D:] = 0
    assert torch.allclose(agent(frames, text), plain(frames, text), atol=1e-6)


def test_residual_text_is_the_question_less_its_best_match_by_hand_and_is_recorded():
    from tspo_ray.method.agent import cosine_to_text
    from tspo_ray.method.scan_agent import standardised

    torch.manual_seed(0)
    agent = EventScanAgent(D, heads=4, residual_text=True)
    assert agent.head[0].in_features == 2 * D and agent.config()["residual_text"] is True
    assert "residual_text" not in EventScanAgent(D, heads=4).config()
    frames, _ = events_video([4, 6, 3, 5])
    text = frames[7] + 0.5 * torch.randn(D)  # asks about what frame 7's event shows
    match = standardised(cosine_to_text(frames, text))
    best = int(match.argmax())
    x = agent.head_input(text, match, frames)
    t, f = text / text.norm(), frames[best] / frames[best].norm()
    want = (t - (t @ f) * f) / (t - (t @ f) * f).norm()
    assert torch.allclose(x[:D], t) and torch.allclose(x[D:], want, atol=1e-6)
    assert abs(float(x[D:] @ f)) < 1e-5 and math.isclose(float(x[D:].norm()), 1.0, rel_tol=1e-5)
    # videos side by side read the same as one at a time
    other, _ = events_video([5, 5, 8], seed=3)
    texts = torch.stack([text, other[2]])
    both = agent(torch.cat([frames, other]), texts, lengths=[18, 18])
    assert torch.allclose(both, torch.cat([agent(frames, text), agent(other, other[2])]), atol=1e-5)
    copy = agent_from_config(agent.config())
    copy.load_state_dict(agent.state_dict())
    assert torch.equal(agent(frames, text), copy(frames, text))
