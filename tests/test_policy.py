import itertools
import math

import pytest
import torch

from tspo_ray.method import policy


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
    lp = policy.plackett_luce_logprob(logits, draws).squeeze(-1)
    for d, value in zip(draws.tolist(), lp):
        assert value.exp().item() == pytest.approx(brute_force_ordered_prob(logits, d), rel=1e-12)
    assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-12)


def test_plackett_luce_gradient_matches_autograd_of_enumeration():
    base = torch.tensor([0.1, 0.7, -0.4, 1.5], dtype=torch.float64)
    ordered = torch.tensor([[2, 0]])
    a = base.clone().requires_grad_()
    policy.plackett_luce_logprob(a, ordered).sum().backward()

    def enumerated(logits):  # the same probability from explicit products of softmaxes
        p = torch.softmax(logits, 0)
        return torch.log(p[2] * p[0] / (1 - p[2]))

    b = base.clone().requires_grad_()
    enumerated(b).backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_plackett_luce_stable_at_low_temperature():
    scores = torch.tensor([2.0, 1.99, -1.0, -2.0] * 8, dtype=torch.float32)
    logits = scores / 0.01
    draws = policy.gumbel_topk(logits, 8, 4, torch.Generator().manual_seed(0))
    lp = policy.plackett_luce_logprob(logits, draws)
    assert torch.isfinite(lp).all() and (lp <= 1e-5).all()


def test_per_frame_form_is_log_softmax_of_each_frame():
    logits = torch.tensor([1.0, 2.0, 3.0])
    lp = policy.per_frame_logprob(logits, torch.tensor([[2, 0]]))
    expected = [3 - math.log(math.exp(1) + math.exp(2) + math.exp(3)), 1 - math.log(math.exp(1) + math.exp(2) + math.exp(3))]
    torch.testing.assert_close(lp[0], torch.tensor(expected))
    assert policy.set_logprob(logits, torch.tensor([[2, 0]]), "per_frame").shape == (1, 2)
    assert policy.set_logprob(logits, torch.tensor([[2, 0]]), "plackett_luce").shape == (1, 1)
    with pytest.raises(ValueError, match="unknown likelihood"):
        policy.set_logprob(logits, torch.tensor([[0]]), "nope")


def test_gumbel_topk_frequencies_match_plackett_luce():
    logits = torch.tensor([0.0, 1.0, -0.5, 0.7], dtype=torch.float64)
    draws = policy.gumbel_topk(logits, 2, 40000, torch.Generator().manual_seed(3))
    assert draws.shape == (40000, 2)
    assert (draws[:, 0] != draws[:, 1]).all()
    for pair in [(1, 3), (3, 1), (0, 2)]:
        freq = ((draws[:, 0] == pair[0]) & (draws[:, 1] == pair[1])).double().mean().item()
        assert freq == pytest.approx(brute_force_ordered_prob(logits, pair), abs=0.01)


def test_gumbel_topk_is_reproducible_and_handles_short_videos():
    logits = torch.randn(10)
    a = policy.gumbel_topk(logits, 4, 3, torch.Generator().manual_seed(5))
    b = policy.gumbel_topk(logits, 4, 3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    short = policy.gumbel_topk(torch.randn(3), 8, 2)
    assert short.shape == (2, 3) and all(sorted(r) == [0, 1, 2] for r in short.tolist())
    one = policy.gumbel_topk(torch.randn(1), 8, 2)
    assert one.tolist() == [[0], [0]]
    assert policy.plackett_luce_logprob(torch.randn(1), one).abs().max() < 1e-6


def test_deterministic_selectors():
    scores = torch.tensor([0.1, 0.9, 0.3, 0.8, 0.2, 0.7, 0.0, 0.95])
    assert policy.select_topk(scores, 3).tolist() == [1, 3, 7]
    assert policy.select_uniform(8, 4).tolist() == [1, 3, 5, 7]
    assert policy.select_uniform(128, 8).tolist() == [8, 24, 40, 56, 72, 88, 104, 120]
    # centres round(i * 7 / 3) = 0, 2, 5, 7; bins {0,1} {2,3} {4,5,6} {7} (ties to the earlier centre)
    assert policy.bin_centres(8, 4) == [0, 2, 5, 7]
    assert policy.nearest_centre(8, [0, 2, 5, 7]).tolist() == [0, 0, 1, 1, 2, 2, 2, 3]
    assert policy.select_binmax(scores, 4).tolist() == [1, 3, 5, 7]
    assert policy.select_binmax(scores, 2).tolist() == [1, 7]
    assert policy.select_topk(scores[:2], 5).tolist() == [0, 1]
    assert policy.select_uniform(1, 8).tolist() == [0]
    assert policy.select("bin-max", 8, 4, scores).tolist() == [1, 3, 5, 7]
    # the first and the last frame, then the best two of frames 1..6 (0.9 at 1, 0.8 at 3)
    assert policy.select_topk_edges(scores, 4).tolist() == [0, 1, 3, 7]
    assert policy.select("top-k+edges", 8, 2, scores).tolist() == [0, 7]
    assert policy.select_topk_edges(scores, 1).tolist() == [0]
    assert policy.select_topk_edges(scores[:3], 5).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="unknown selection method"):
        policy.select("best", 8, 4, scores)
    with pytest.raises(ValueError, match="needs scores"):
        policy.select("top-k", 8, 4, None)
    with pytest.raises(ValueError, match="takes no parameters"):
        policy.select("top-k", 8, 4, scores, t1=0.3)


def reference_binmax(scores, k):
    """The reference's bin-max, restated literally: uniform integer centres, argmin per position, argmax per slot."""
    T = len(scores)
    k = min(T, k)
    centres = [T - 1] if k == 1 else [round(i * ((T - 1) / (k - 1))) for i in range(k)]
    slots = torch.tensor([torch.argmin(torch.abs(x - torch.tensor(centres))) for x in torch.arange(T)])
    picks, start = [], 0
    for cluster in torch.unique(slots):
        slot = scores[slots == cluster]
        picks.append(start + int(slot.argmax()))
        start += len(slot)
    return picks


def test_binmax_matches_the_reference_restatement():
    g = torch.Generator().manual_seed(0)
    for T, k in [(10, 3), (13, 4), (7, 7), (128, 8), (300, 64), (65, 64), (9, 1), (1000, 17)]:
        scores = torch.randn(T, generator=g)
        got = policy.select_binmax(scores, k).tolist()
        assert got == reference_binmax(scores, k)
        assert got == sorted(got) and len(got) == min(T, k)


def reference_aks(score, k, t1, t2, all_depth):
    """The reference's AKS (recursive meanstd + per-segment heapq top), restated literally on numpy float32."""
    import heapq

    import numpy as np

    score = np.asarray(score, dtype=np.float32)
    if len(score) < k:
        return list(range(len(score)))

    def meanstd(segs):
        keep, split = [], []
        for s, fn, depth in segs:
            top = [s[t] for t in heapq.nlargest(k, range(len(s)), s.__getitem__)]
            if np.mean(top) - np.mean(s) > t1 and np.std(s) > t2:
                keep.append((s, fn, depth))
            elif depth < all_depth:
                h = len(s) // 2
                split += [(s[:h], fn[:h], depth + 1), (s[h:], fn[h:], depth + 1)]
            else:
                keep.append((s, fn, depth))
        return keep + (meanstd(split) if split else [])

    norm = (score - np.min(score)) / (np.max(score) - np.min(score))
    out = []
    for s, fn, depth in meanstd([(norm, list(range(len(score))), 0)]):
        out += [fn[t] for t in heapq.nlargest(int(k / 2**depth), range(len(s)), s.__getitem__)]
    return sorted(out)


def test_aks_hand_computed():
    scores = torch.tensor([0.0, 0.2, 0.9, 1.0, 0.1, 0.1, 0.1, 0.1])
    # whole video: mean of the top 4 (0.55) - mean (0.3125) = 0.2375 > 0.2: kept, its top 4 (ties to the earlier)
    assert policy.select_aks(scores, 4, t1=0.2, all_depth=2).tolist() == [1, 2, 3, 4]
    # t1 = 0.3: halved twice (a 4-frame half has top-4 mean = mean); each 2-frame quarter gives its top int(4/4)=1
    assert policy.select_aks(scores, 4, t1=0.3, all_depth=2).tolist() == [1, 3, 4, 6]
    # spread-out evidence: two halves, one frame each, where top-k would take frames 0 and 1
    halves = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    assert policy.select_aks(halves, 2, t1=0.6, all_depth=1).tolist() == [0, 4]
    assert policy.select("aks", 8, 2, halves, t1=0.6, all_depth=1).tolist() == [0, 4]
    # fewer candidates than k: all of them; constant scores do not divide by zero
    assert policy.select_aks(scores[:3], 4).tolist() == [0, 1, 2]
    assert policy.select_aks(torch.zeros(16), 4, all_depth=1).tolist() == [0, 1, 8, 9]


def test_aks_matches_the_reference_restatement():
    g = torch.Generator().manual_seed(1)
    for T, k, setting in [(200, 16, "longvideobench"), (500, 64, "videomme"), (1000, 64, "longvideobench"),
                          (64, 64, "videomme"), (97, 8, "videomme")]:
        for shape in ("noise", "peaks"):
            scores = torch.randn(T, generator=g)
            if shape == "peaks":
                scores[torch.randint(0, T, (3,), generator=g)] += 6.0
            params = policy.AKS_SETTINGS[setting]
            got = policy.select_aks(scores, k, **params).tolist()
            assert got == reference_aks(scores.numpy(), k, **params)
            assert len(set(got)) == len(got) <= k


def test_selector_names():
    assert policy.parse_selector("clip:bin-max") == ("clip", "bin-max")
    assert policy.parse_selector("agent:aks") == ("agent", "aks")
    assert policy.parse_selector("agent:top-k+edges") == ("agent", "top-k+edges")
    assert policy.parse_selector("clip-top-k") == ("clip", "top-k")
    assert policy.parse_selector("bin-max") == ("clip", "bin-max")
    assert policy.parse_selector("uniform") == (None, "uniform")
    assert policy.parse_selector("agent") == ("agent", None)
    for bad in ("clip", "agent:best", "siglip:top-k", "clip:uniform", ""):
        with pytest.raises(ValueError, match="unknown selector .*clip:bin-max"):
            policy.parse_selector(bad)
    assert set(policy.SELECTORS) >= {"uniform", "clip-top-k", "bin-max", "agent", "clip:aks", "agent:top-k"}


def test_linear_tau_schedule():
    assert policy.linear_tau(0, 11) == pytest.approx(0.025)
    assert policy.linear_tau(5, 11) == pytest.approx(0.0175)
    assert policy.linear_tau(10, 11) == pytest.approx(0.01)
    assert policy.linear_tau(50, 11) == pytest.approx(0.01)
    assert policy.linear_tau(0, 1) == pytest.approx(0.01)


def test_entropy():
    assert policy.frame_entropy(torch.zeros(4)).item() == pytest.approx(math.log(4))
    assert policy.frame_entropy(torch.tensor([0.0, -1e4])).item() == pytest.approx(0.0, abs=1e-6)


def test_events_takes_each_event_its_context_and_the_edges():
    # one event at 6..9 over a flat 0: median 0, top 1.0 at 8; the event is the run >= 0.7, so 5..10 are covered
    scores = torch.zeros(20)
    scores[6:10] = torch.tensor([0.8, 0.9, 1.0, 0.85])
    # peak 8, edges 0 and 19, context 10 (after) and 5 (before), then bin-max [0, 6, 8, 10, 14, 18] gives 6
    assert policy.select_events(scores, 6).tolist() == [0, 5, 6, 8, 10, 19]
    assert policy.select("events", 20, 6, scores).tolist() == [0, 5, 6, 8, 10, 19]


def test_events_accepts_peaks_near_the_top_only():
    scores = torch.zeros(30)
    scores[5:7] = torch.tensor([1.0, 0.95])  # event A, peak 5
    scores[20:23] = torch.tensor([0.9, 0.92, 0.9])  # event B, peak 21 (>= 1.0 - 0.2 * 1.0)
    scores[14] = 0.5  # below the acceptance line at the default accept = 0.2
    assert policy.select_events(scores, 8).tolist() == [0, 4, 5, 7, 19, 21, 23, 29]
    # accept 0.6 lowers the line to 0.4: 14 becomes a peak and takes the budget of B's "before" context (19)
    assert policy.select("events", 30, 8, scores, accept=0.6).tolist() == [0, 4, 5, 7, 14, 21, 23, 29]
    assert policy.select_events(scores, 2).tolist() == [5, 21]  # k < 3: no edges
    assert policy.select_events(scores[:5], 8).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="takes no parameters"):
        policy.select("bin-max", 30, 8, scores, accept=0.6)


def test_events_on_constant_scores_is_one_event_then_bin_max():
    # every frame ties: one event covers the video (no context exists), the edges, then bin-max [0, 2, 5, 8]
    assert policy.select_events(torch.full((10,), 0.3), 4).tolist() == [0, 2, 5, 9]


def test_events_returns_min_k_t_distinct_sorted_frames_with_the_top_and_the_edges():
    g = torch.Generator().manual_seed(3)
    for T, k in [(1, 8), (3, 8), (9, 8), (40, 3), (128, 8), (300, 32), (17, 16)]:
        for _ in range(10):
            scores = torch.randn(T, generator=g)
            got = policy.select_events(scores, k).tolist()
            assert got == sorted(set(got)) and len(got) == min(k, T) and 0 <= got[0] and got[-1] < T
            assert int(scores.argmax()) in got
            if 3 <= k < T:
                assert got[0] == 0 and got[-1] == T - 1


def test_anchors_puts_the_scorer_frames_first_and_the_events_method_on_the_base_fills_the_rest():
    # base (CLIP) cosines: the same single event at 6..9 as in the events test above
    base = torch.zeros(20)
    base[6:10] = torch.tensor([0.8, 0.9, 1.0, 0.85])
    scores = torch.zeros(20)
    scores[15], scores[13] = 2.0, 1.0  # the scorer's two anchors
    # anchors 15, 13, then the events priority on the base: peak 8, edges 0 and 19, context 10 and 5, bin-max 6...
    got = policy.select_anchors(scores, 6, base)
    assert got.tolist() == [0, 8, 10, 13, 15, 19]
    assert policy.select("anchors", 20, 6, scores, base_scores=base).tolist() == [0, 8, 10, 13, 15, 19]
    assert policy.select_anchors(scores, 6, base, anchors=1).tolist() == [0, 5, 8, 10, 15, 19]
    # an anchor the events method would take anyway costs nothing: the set is the events set
    on_peak = torch.zeros(20)
    on_peak[8], on_peak[0] = 2.0, 1.0
    assert policy.select_anchors(on_peak, 6, base).tolist() == policy.select_events(base, 6).tolist()
    # without base scores, the scores are the base (clip:anchors): the events set with the top frames first
    assert policy.select_anchors(base, 6).tolist() == [0, 5, 7, 8, 10, 19]
    with pytest.raises(ValueError, match="base scores cover 19"):
        policy.select_anchors(scores, 6, base[:19])


def test_anchored_set_returns_min_k_t_distinct_sorted_frames_holding_every_anchor():
    g = torch.Generator().manual_seed(5)
    for T, k in [(1, 8), (3, 8), (9, 8), (40, 3), (128, 8), (300, 32)]:
        for _ in range(10):
            base = torch.randn(T, generator=g)
            anchors = torch.randperm(T, generator=g)[: min(2, k, T)].tolist()
            got = policy.anchored_set(anchors, base, k).tolist()
            assert got == sorted(set(got)) and len(got) == min(k, T)
            assert set(anchors) <= set(got)
