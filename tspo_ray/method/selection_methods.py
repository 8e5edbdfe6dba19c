"""The selection methods of inference: deterministic rules that turn a scorer's scores into keyframe positions.

A selector is named SCORER:METHOD ("clip:bin-max", "agent:aks"), plus "uniform", which needs no scores. Every method
returns candidate positions in temporal order: top-k, bin-max (the reference's), AKS (Adaptive Keyframe Sampling),
top-k+edges, events, anchors and chain. Pure tensor functions; the sampling distribution training draws from is in
tspo_ray.method.sampling.
"""
from __future__ import annotations

import inspect

import numpy as np
import torch

from tspo_ray.method.sampling import effective_k
from tspo_ray.registry import Registry

SCORERS = ("clip", "agent")
SELECTION_METHODS = ("top-k", "bin-max", "aks", "top-k+edges", "events", "anchors", "chain", "uniform")
#: old names kept: "agent" is the agent with the inference method recorded in its checkpoint (method None here)
SELECTOR_ALIASES = {"uniform": (None, "uniform"), "clip-top-k": ("clip", "top-k"), "bin-max": ("clip", "bin-max"),
                    "agent": ("agent", None)}
#: methods of a set-aware agent's own policy (tspo_ray.method.sequential): they need more than scores
SET_METHODS = ("greedy",)
SELECTORS = tuple(SELECTOR_ALIASES) + tuple(
    f"{scorer}:{method}" for scorer in SCORERS for method in SELECTION_METHODS if method != "uniform") + tuple(
    f"agent:{method}" for method in SET_METHODS)
#: the reference's AKS settings per benchmark (t2 = -100 disables the spread test)
AKS_SETTINGS = {"longvideobench": {"t1": 0.2, "t2": -100.0, "all_depth": 3},
                "videomme": {"t1": 0.8, "t2": -100.0, "all_depth": 5}}
#: the aks method's defaults (config eval.aks declares them from here): the LongVideoBench settings
AKS_DEFAULTS = AKS_SETTINGS["longvideobench"]


def parse_selector(name: str) -> tuple[str | None, str | None]:
    """'clip:bin-max' -> ('clip', 'bin-max'); aliases as in SELECTOR_ALIASES (scorer None: no scores needed,
    method None: the agent's default inference method). Unknown names raise ValueError listing the valid ones."""
    if name in SELECTOR_ALIASES:
        return SELECTOR_ALIASES[name]
    scorer, sep, method = str(name).partition(":")
    if sep and scorer in SCORERS and method in SELECTION_METHODS and method != "uniform":
        return scorer, method
    if sep and scorer == "agent" and method in SET_METHODS:
        return scorer, method
    raise ValueError(f"unknown selector {name!r}; choose one of {', '.join(SELECTORS)}")


def select_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The top-k scoring frames, in temporal order."""
    k = effective_k(scores.shape[-1], k)
    return scores.topk(k).indices.sort().values


def select_uniform(num_candidates: int, k: int) -> torch.Tensor:
    """k frames at the centres of k equal bins over the candidates."""
    k = effective_k(num_candidates, k)
    return ((torch.arange(k, dtype=torch.float64) + 0.5) * num_candidates / k).long()


def spread(n: int, k: int) -> np.ndarray:
    """k indices into range(n) at the centres of k equal bins (all of them when n <= k): select_uniform
    for numpy callers. Pure."""
    if n <= k:
        return np.arange(n)
    return ((np.arange(k) + 0.5) * n / k).astype(np.int64)


def bin_centres(num_candidates: int, k: int) -> list[int]:
    """The reference's k evenly spaced centres over positions 0..T-1: round(i * (T-1) / (k-1)) with Python's
    round (half to even); one centre sits on the last position."""
    if k == 1:
        return [num_candidates - 1]
    step = (num_candidates - 1) / (k - 1)
    return [round(i * step) for i in range(k)]


def nearest_centre(num_candidates: int, centres: list[int]) -> torch.Tensor:
    """Bin of every position: the nearest centre, the earlier one on a tie (the reference's argmin): [T] long."""
    c = torch.tensor(centres, dtype=torch.long)
    x = torch.arange(num_candidates)
    right = torch.searchsorted(c, x).clamp(max=len(c) - 1)  # first centre >= x
    left = (right - 1).clamp(min=0)
    take_left = (x - c[left]).abs() <= (c[right] - x).abs()
    return torch.where(take_left, left, right)


def select_binmax(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The reference's bin-max: positions go to the nearest of k evenly spaced centres; the best-scoring position of
    each non-empty bin is kept (the first one on a tie)."""
    k = effective_k(scores.shape[-1], k)
    bins = nearest_centre(scores.shape[-1], bin_centres(scores.shape[-1], k))
    # bins are contiguous runs: their bounds come from where the bin id changes
    change = torch.nonzero(bins[1:] != bins[:-1]).flatten() + 1
    bounds = [0, *change.tolist(), len(bins)]
    return torch.tensor([a + int(scores[a:b].argmax()) for a, b in zip(bounds[:-1], bounds[1:])])


def select_topk_edges(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The first and the last candidate plus the top k-2 of the others, in temporal order."""
    T = scores.shape[-1]
    k = effective_k(T, k)
    if k == T:
        return torch.arange(T)
    if k <= 2:
        return torch.tensor([0, T - 1][:k])
    inner = scores[1:-1].topk(k - 2).indices + 1
    return torch.cat([torch.tensor([0]), inner.sort().values, torch.tensor([T - 1])])


#: the events method's settings, chosen on the embedded world's validation split (benchmarks/events_settings.py)
EVENTS_ACCEPT, EVENTS_RUN = 0.2, 0.3


def select_events(scores: torch.Tensor, k: int, accept: float = EVENTS_ACCEPT, run: float = EVENTS_RUN) -> torch.Tensor:
    """Events with their context: one frame per high-scoring event, the frames just outside each event, the video's
    first and last candidate, then bin-max for what is left of the budget. In temporal order.

    A question about an event is often answered by what surrounds it ("right after X", "how many times": each
    appearance and a gap between them, "at the beginning"), which top-k never picks: its k frames pile onto one
    event. With m = the median score:
    - peaks, best first: a position is a peak while its score is >= top - accept * (top - m) and it is not inside
      or next to an earlier peak's event; its event is the contiguous run around it scoring >= s - run * (s - m);
    - the budget goes, in this order, to the best peak, the two edges (k >= 3), the other peaks, each peak's
      context (the candidate after its event, then the one before), and the bin-max picks not yet taken (then
      the best remaining scores, so exactly min(k, T) come back).
    """
    T = scores.shape[-1]
    k = effective_k(T, k)
    if k == T:
        return torch.arange(T)
    return _first_k(events_priority(scores, k, accept, run), k)


def events_priority(scores: torch.Tensor, k: int, accept: float = EVENTS_ACCEPT, run: float = EVENTS_RUN) -> list[int]:
    """Every candidate position once, in the order the events method spends its budget on them (select_events)."""
    T = scores.shape[-1]
    s = scores.detach().double().cpu().numpy()
    median = float(np.median(s))
    order = np.argsort(-s, kind="stable")
    top = s[order[0]]
    covered = np.zeros(T, dtype=bool)
    events: list[tuple[int, int, int]] = []  # (peak, first, last) of each event, best first
    for p in order:
        if len(events) == k or s[p] < top - accept * (top - median):
            break
        if covered[p]:
            continue
        floor = s[p] - run * (s[p] - median)
        first, last = p, p
        while first > 0 and s[first - 1] >= floor:
            first -= 1
        while last < T - 1 and s[last + 1] >= floor:
            last += 1
        covered[max(first - 1, 0): last + 2] = True
        events.append((int(p), first, last))
    peaks = [p for p, _, _ in events]
    context = [c for _, first, last in events for c in (last + 1, first - 1) if 0 <= c < T]
    edges = [0, T - 1] if k >= 3 else []
    wanted = [*peaks[:1], *edges, *peaks[1:], *context, *select_binmax(scores, k).tolist(), *order.tolist()]
    return list(dict.fromkeys(int(p) for p in wanted))  # first occurrences, in priority order


def _first_k(priority: list[int], k: int) -> torch.Tensor:
    return torch.tensor(sorted(list(dict.fromkeys(priority))[:k]), dtype=torch.long)


#: frames of the budget the agent places itself under the anchors method (policy.anchors)
ANCHORS = 2


def anchored_set(anchors: list[int], base_scores: torch.Tensor, k: int) -> torch.Tensor:
    """The anchors method's set around given anchors: the anchors, then the events method on the base (CLIP) cosines
    for the rest of the budget, in temporal order. Training expands each sampled draw of anchors with it, and
    inference expands the agent's best anchors, so both see the same kind of set."""
    k = effective_k(base_scores.shape[-1], k)
    return _first_k([*(int(a) for a in anchors), *events_priority(base_scores, k)], k)


def select_anchors(scores: torch.Tensor, k: int, base_scores: torch.Tensor | None = None,
                   anchors: int = ANCHORS) -> torch.Tensor:
    """The `anchors` best-scoring candidates, the rest of the budget by the events method on base_scores.

    The events method finds what the question names and the frames around it, and nothing else; a question whose
    frames follow from temporal structure ("two events after X", "the third event") needs frames no cosine with
    the question points to. Here the scorer places `anchors` frames where it likes, and the events method supplies
    the context (what is named, the edges, the frames around each event). base_scores defaults to `scores`: CLIP's
    cosines for clip:anchors, so that rule is the events method with its best frames first.
    """
    base = scores if base_scores is None else base_scores
    if base.shape[-1] != scores.shape[-1]:
        raise ValueError(f"base scores cover {base.shape[-1]} candidates, the scores {scores.shape[-1]}")
    k = effective_k(scores.shape[-1], k)
    top = scores.topk(min(max(int(anchors), 0), k)).indices.tolist()
    return anchored_set(top, base, k)


#: the chain rule's weights: above any difference of two cosines, so a frame of an event already taken always comes
#: after, and a frame next to a taken event always before, every other frame
CHAIN_WEIGHT = 4.0


def select_chain(scores: torch.Tensor, k: int, event_index: torch.Tensor | None = None) -> torch.Tensor:
    """A chain of events around the best frame: the best-scoring candidate, then each step the best candidate of an
    event next to those taken (either side), one frame per event until the chain meets both ends of the video.

    It is the set-aware policy's greedy decode (tspo_ray.method.sequential) with fixed weights: the same-event
    penalty and the adjacency bonus both at CHAIN_WEIGHT, over event_index [T] (L: the soft event index of each
    candidate, from its features: scan_agent.fixed_event_index). A training-free rule: features, cosines and order
    only. It is what an untrained scan agent with the adjacency bonus does from the peak of its scores."""
    from tspo_ray.method.scan_agent import SameEventKernel
    from tspo_ray.method.sequential import sequential_greedy

    if event_index is None or event_index.shape[-1] != scores.shape[-1]:
        raise ValueError("the chain method needs the event index of every candidate (from its features)")
    kernel = SameEventKernel(event_index.to(scores.dtype), scores.new_tensor(CHAIN_WEIGHT))
    return sequential_greedy(scores, kernel, CHAIN_WEIGHT, k)


def _stable_top(values: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest values, ties to the earlier index (as heapq.nlargest, which the reference uses)."""
    return np.argsort(-values, kind="stable")[:n]


def aks_segments(normalised: np.ndarray, k: int, t1: float, t2: float, all_depth: int) -> list[tuple[int, int, int]]:
    """Adaptive Keyframe Sampling's split: (start, end, depth) of the kept segments, in temporal order.

    A segment is kept when (mean of its top-k scores - its mean) > t1 and its std > t2 (k is the whole budget at
    every depth, as upstream); otherwise it is halved (first half len // 2) until depth all_depth, where it is kept.
    """
    kept, todo = [], [(0, len(normalised), 0)]
    while todo:
        start, end, depth = todo.pop()
        if end <= start:  # halving a 1-frame segment leaves an empty half
            continue
        seg = normalised[start:end]
        top_mean = seg[_stable_top(seg, k)].mean()
        if (top_mean - seg.mean() > t1 and seg.std() > t2) or depth >= all_depth:
            kept.append((start, end, depth))
        else:
            mid = start + (end - start) // 2
            todo += [(mid, end, depth + 1), (start, mid, depth + 1)]
    return sorted(kept)


def select_aks(scores: torch.Tensor, k: int, t1: float = AKS_DEFAULTS["t1"], t2: float = AKS_DEFAULTS["t2"],
               all_depth: int = AKS_DEFAULTS["all_depth"]) -> torch.Tensor:
    """Adaptive Keyframe Sampling as the reference runs it: min-max normalise the scores once, split (aks_segments),
    take the top int(k / 2**depth) of each kept segment. Nothing fills the shortfall when a segment is shorter than
    its share: like upstream, fewer than k frames may come back. Defaults: the LongVideoBench settings."""
    T = scores.shape[-1]
    if T <= k:
        return torch.arange(effective_k(T, k))
    # float32 as the reference (confidence.float().numpy()); constant scores normalise to 0, not NaN
    s = scores.detach().float().cpu().numpy()
    span = s.max() - s.min()
    normalised = (s - s.min()) / span if span > 0 else np.zeros_like(s)
    picks = [start + _stable_top(normalised[start:end], int(k / 2**depth))
             for start, end, depth in aks_segments(normalised, k, t1, t2, all_depth)]
    return torch.from_numpy(np.sort(np.concatenate(picks))).long()


def select(method: str, num_candidates: int, k: int, scores: torch.Tensor | None = None, **params) -> torch.Tensor:
    """Candidate positions chosen by a method registered in METHODS; params go to aks (t1, t2, all_depth), events
    (accept, run), anchors (base_scores, anchors) and chain (event_index)."""
    if method in SET_METHODS:
        raise ValueError(f"method {method!r} is a set-aware agent's own policy: it needs the agent, not only scores "
                         "(tspo_ray.method.selection.select_positions)")
    fn = METHODS.get(method).obj
    if method == "uniform":
        return select_uniform(num_candidates, k)
    if scores is None or scores.shape[-1] != num_candidates:
        raise ValueError(f"method {method!r} needs scores for all {num_candidates} candidates")
    if params and len(inspect.signature(fn).parameters) <= 2:
        raise ValueError(f"method {method!r} takes no parameters, got {sorted(params)}")
    return fn(scores, k, **params)


#: the selection methods by name, each (scores [T], k, **its params) -> positions in temporal order; "uniform"
#: needs no scores. A method is added here and in SELECTION_METHODS, in this file.
METHODS = Registry("selection method")
for _name, _method in (("top-k", select_topk), ("bin-max", select_binmax), ("aks", select_aks),
                       ("top-k+edges", select_topk_edges), ("events", select_events), ("anchors", select_anchors),
                       ("chain", select_chain), ("uniform", select_uniform)):
    METHODS.register(_name, _method)
assert METHODS.names() == SELECTION_METHODS
