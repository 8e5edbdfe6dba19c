"""The selection methods of inference and the selector names."""

import pytest
import torch

from tspo_ray.method import selection_methods


def test_deterministic_selectors():
    scores = torch.tensor([0.1, 0.9, 0.3, 0.8, 0.2, 0.7, 0.0, 0.95])
    assert selection_methods.select_topk(scores, 3).tolist() == [1, 3, 7]
    assert selection_methods.select_uniform(8, 4).tolist() == [1, 3, 5, 7]
    assert selection_methods.select_uniform(128, 8).tolist() == [8, 24, 40, 56, 72, 88, 104, 120]
    # centres round(i * 7 / 3) = 0, 2, 5, 7; bins {0,1} {2,3} {4,5,6} {7} (ties to the earlier centre)
    assert selection_methods.bin_centres(8, 4) == [0, 2, 5, 7]
    assert selection_methods.nearest_centre(8, [0, 2, 5, 7]).tolist() == [0, 0, 1, 1, 2, 2, 2, 3]
    assert selection_methods.select_binmax(scores, 4).tolist() == [1, 3, 5, 7]
    assert selection_methods.select_binmax(scores, 2).tolist() == [1, 7]
    assert selection_methods.select_topk(scores[:2], 5).tolist() == [0, 1]
    assert selection_methods.select_uniform(1, 8).tolist() == [0]
    assert selection_methods.select("bin-max", 8, 4, scores).tolist() == [1, 3, 5, 7]
    # the first and the last frame, then the best two of frames 1..6 (0.9 at 1, 0.8 at 3)
    assert selection_methods.select_topk_edges(scores, 4).tolist() == [0, 1, 3, 7]
    assert selection_methods.select("top-k+edges", 8, 2, scores).tolist() == [0, 7]
    assert selection_methods.select_topk_edges(scores, 1).tolist() == [0]
    assert selection_methods.select_topk_edges(scores[:3], 5).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="unknown selection method"):
        selection_methods.select("best", 8, 4, scores)
    with pytest.raises(ValueError, match="needs scores"):
        selection_methods.select("top-k", 8, 4, None)
    with pytest.raises(ValueError, match="takes no parameters"):
        selection_methods.select("top-k", 8, 4, scores, t1=0.3)


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
        got = selection_methods.select_binmax(scores, k).tolist()
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
    assert selection_methods.select_aks(scores, 4, t1=0.2, all_depth=2).tolist() == [1, 2, 3, 4]
    # t1 = 0.3: halved twice (a 4-frame half has top-4 mean = mean); each 2-frame quarter gives its top int(4/4)=1
    assert selection_methods.select_aks(scores, 4, t1=0.3, all_depth=2).tolist() == [1, 3, 4, 6]
    # spread-out evidence: two halves, one frame each, where top-k would take frames 0 and 1
    halves = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    assert selection_methods.select_aks(halves, 2, t1=0.6, all_depth=1).tolist() == [0, 4]
    assert selection_methods.select("aks", 8, 2, halves, t1=0.6, all_depth=1).tolist() == [0, 4]
    # fewer candidates than k: all of them; constant scores do not divide by zero
    assert selection_methods.select_aks(scores[:3], 4).tolist() == [0, 1, 2]
    assert selection_methods.select_aks(torch.zeros(16), 4, all_depth=1).tolist() == [0, 1, 8, 9]


def test_aks_matches_the_reference_restatement():
    g = torch.Generator().manual_seed(1)
    for T, k, setting in [(200, 16, "longvideobench"), (500, 64, "videomme"), (1000, 64, "longvideobench"),
                          (64, 64, "videomme"), (97, 8, "videomme")]:
        for shape in ("noise", "peaks"):
            scores = torch.randn(T, generator=g)
            if shape == "peaks":
                scores[torch.randint(0, T, (3,), generator=g)] += 6.0
            params = selection_methods.AKS_SETTINGS[setting]
            got = selection_methods.select_aks(scores, k, **params).tolist()
            assert got == reference_aks(scores.numpy(), k, **params)
            assert len(set(got)) == len(got) <= k


def test_selector_names():
    assert selection_methods.parse_selector("clip:bin-max") == ("clip", "bin-max")
    assert selection_methods.parse_selector("agent:aks") == ("agent", "aks")
    assert selection_methods.parse_selector("agent:top-k+edges") == ("agent", "top-k+edges")
    assert selection_methods.parse_selector("clip-top-k") == ("clip", "top-k")
    assert selection_methods.parse_selector("bin-max") == ("clip", "bin-max")
    assert selection_methods.parse_selector("uniform") == (None, "uniform")
    assert selection_methods.parse_selector("agent") == ("agent", None)
    for bad in ("clip", "agent:best", "siglip:top-k", "clip:uniform", ""):
        with pytest.raises(ValueError, match="unknown selector .*clip:bin-max"):
            selection_methods.parse_selector(bad)
    assert set(selection_methods.SELECTORS) >= {"uniform", "clip-top-k", "bin-max", "agent", "clip:aks", "agent:top-k"}

def test_events_takes_each_event_its_context_and_the_edges():
    # one event at 6..9 over a flat 0: median 0, top 1.0 at 8; the event is the run >= 0.7, so 5..10 are covered
    scores = torch.zeros(20)
    scores[6:10] = torch.tensor([0.8, 0.9, 1.0, 0.85])
    # peak 8, edges 0 and 19, context 10 (after) and 5 (before), then bin-max [0, 6, 8, 10, 14, 18] gives 6
    assert selection_methods.select_events(scores, 6).tolist() == [0, 5, 6, 8, 10, 19]
    assert selection_methods.select("events", 20, 6, scores).tolist() == [0, 5, 6, 8, 10, 19]


def test_events_accepts_peaks_near_the_top_only():
    scores = torch.zeros(30)
    scores[5:7] = torch.tensor([1.0, 0.95])  # event A, peak 5
    scores[20:23] = torch.tensor([0.9, 0.92, 0.9])  # event B, peak 21 (>= 1.0 - 0.2 * 1.0)
    scores[14] = 0.5  # below the acceptance line at the default accept = 0.2
    assert selection_methods.select_events(scores, 8).tolist() == [0, 4, 5, 7, 19, 21, 23, 29]
    # accept 0.6 lowers the line to 0.4: 14 becomes a peak and takes the budget of B's "before" context (19)
    assert selection_methods.select("events", 30, 8, scores, accept=0.6).tolist() == [0, 4, 5, 7, 14, 21, 23, 29]
    assert selection_methods.select_events(scores, 2).tolist() == [5, 21]  # k < 3: no edges
    assert selection_methods.select_events(scores[:5], 8).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="takes no parameters"):
        selection_methods.select("bin-max", 30, 8, scores, accept=0.6)


def test_events_on_constant_scores_is_one_event_then_bin_max():
    # every frame ties: one event covers the video (no context exists), the edges, then bin-max [0, 2, 5, 8]
    assert selection_methods.select_events(torch.full((10,), 0.3), 4).tolist() == [0, 2, 5, 9]


def test_events_returns_min_k_t_distinct_sorted_frames_with_the_top_and_the_edges():
    g = torch.Generator().manual_seed(3)
    for T, k in [(1, 8), (3, 8), (9, 8), (40, 3), (128, 8), (300, 32), (17, 16)]:
        for _ in range(10):
            scores = torch.randn(T, generator=g)
            got = selection_methods.select_events(scores, k).tolist()
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
    got = selection_methods.select_anchors(scores, 6, base)
    assert got.tolist() == [0, 8, 10, 13, 15, 19]
    assert selection_methods.select("anchors", 20, 6, scores, base_scores=base).tolist() == [0, 8, 10, 13, 15, 19]
    assert selection_methods.select_anchors(scores, 6, base, anchors=1).tolist() == [0, 5, 8, 10, 15, 19]
    # an anchor the events method would take anyway costs nothing: the set is the events set
    on_peak = torch.zeros(20)
    on_peak[8], on_peak[0] = 2.0, 1.0
    assert (selection_methods.select_anchors(on_peak, 6, base).tolist()
            == selection_methods.select_events(base, 6).tolist())
    # without base scores, the scores are the base (clip:anchors): the events set with the top frames first
    assert selection_methods.select_anchors(base, 6).tolist() == [0, 5, 7, 8, 10, 19]
    with pytest.raises(ValueError, match="base scores cover 19"):
        selection_methods.select_anchors(scores, 6, base[:19])


def test_anchored_set_returns_min_k_t_distinct_sorted_frames_holding_every_anchor():
    g = torch.Generator().manual_seed(5)
    for T, k in [(1, 8), (3, 8), (9, 8), (40, 3), (128, 8), (300, 32)]:
        for _ in range(10):
            base = torch.randn(T, generator=g)
            anchors = torch.randperm(T, generator=g)[: min(2, k, T)].tolist()
            got = selection_methods.anchored_set(anchors, base, k).tolist()
            assert got == sorted(set(got)) and len(got) == min(k, T)
            assert set(anchors) <= set(got)


def test_chain_grows_a_run_of_events_from_the_best_frame_one_frame_per_event():
    index = torch.tensor([0.0, 0, 1, 1, 2, 2, 3, 3])  # two candidates per event
    scores = torch.tensor([0.1, 0.0, 0.3, 0.2, 0.9, 0.8, 0.25, 0.5])
    # 4 (the best); then the best of events 1 and 3 (7: 0.5); then of events 1 and 4 (none): 2; then event 0: 0
    assert selection_methods.select_chain(scores, 4, event_index=index).tolist() == [0, 2, 4, 7]
    assert selection_methods.select_topk(scores, 4).tolist() == [2, 4, 5, 7]
    # past both ends of the video, the second frames of the events come after
    assert selection_methods.select_chain(scores, 5, event_index=index).tolist() == [0, 2, 4, 5, 7]
    with pytest.raises(ValueError, match="event index"):
        selection_methods.select_chain(scores, 4)


def test_clip_chain_reads_the_events_from_the_features():
    from tspo_ray.method.selection import select_positions

    g = torch.Generator().manual_seed(0)
    dirs = torch.randn(6, 16, generator=g)
    frames = torch.cat([d.expand(3, 16) for d in dirs]) + 0.01 * torch.randn(18, 16, generator=g)
    text = dirs[3] + 0.1 * dirs[4]
    pos, scores = select_positions(frames, text, "clip:chain", 3)
    events = [int(p) // 3 for p in pos.tolist()]
    # one frame in each of three neighbouring events around event 3 (the question's), event 4 (its runner-up) next
    assert events in ([2, 3, 4], [3, 4, 5])
    assert int(scores.argmax()) in pos.tolist()
