"""The `scan` agent kind: eq. 3 plus an event scan, read by the question, and a set-aware policy.

    S = S_eq3 + g(F_t) . phi                  phi [T, P]: where each candidate lies in the video's event structure

- Event boundaries: b_j = sigmoid(a * (d_j - c)), d_j = 1 - cos(F_f[j], F_f[j-1]) (b_0 = 0): how sure it is that
  candidate j starts a new event; a (> 0) and c are learned.
- A prefix scan counts them: L_j = b_1 + ... + b_j, the (soft) index of j's event. It reaches the whole video, as no
  attention window does.
- phi, per candidate (each a Gaussian bump of width SIGMA in event counts, or in time):
  - its event's index from the start, L_j = 0 .. max_count, and from the end, L_{T-1} - L_j = 0 .. max_count;
  - the question's match of the event n steps away, n = -offsets .. offsets: the mean of m_i over candidates i
    with L_i - L_j near n, where m is cos(F_f, F_t) standardised over the video (the event itself is n = 0);
  - its position t / (T - 1), at `positions` evenly spaced centres (no hand-set scale: g weighs each bump).
- g = MLP(F_t / |F_t|): the question says which of these matter (the third event: counts 0, 1, 2 from the start;
  two after X: the match 0, 1 and 2 events back), so the same structure scores differently for each question.
  With `grounding`, g also reads how sharply the question is found in this video (grounding_summary: the peak of
  the standardised match m and its lead over the 90th percentile): a question that names something shown once
  peaks, one about the video's order ("right before the end") does not, however alike their words are to a
  text encoder (the tiny CLIP puts "two before X" at cosine 0.82 to "right before the end").
- enhancer False drops eq. 3's weights (S_eq3 = 2 cos(F_f, F_t), what an untrained eq. 3 agent scores): the scan
  alone, a few thousand parameters that see the video only through its event structure and the question's match.
- The policy (tspo_ray.method.sequential): K[i, j] = exp(-(L_i - L_j)^2 / (2 SIGMA^2)), about 1 inside one event
  and 0 across a boundary, and a learned lambda = softplus(rho) >= 0: a frame of an event already taken is worth
  lambda less, so the greedy set spreads over the events the scores point to.
Cost: O(T * R) for the neighbour matches, R the longest run of candidates within offsets + 3 events of one
candidate (neighbour_matches), beside eq. 3's O(T * w); the policy reads K row by row (SameEventKernel).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tspo_ray.method.agent import TemporalAgent, cosine_to_text, register_agent

#: width of the bumps over event counts, and of the same-event kernel
SIGMA = 0.35


def boundary_probabilities(frame_features: torch.Tensor, sharpness: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """b [T]: sigmoid(sharpness * (d_j - threshold)) with d_j the cosine distance to the previous candidate; b_0 = 0."""
    unit = F.normalize(frame_features, dim=-1)
    d = 1 - (unit[1:] * unit[:-1]).sum(-1)
    return torch.cat([d.new_zeros(1), torch.sigmoid(sharpness * (d - threshold))])


def event_index(boundaries: torch.Tensor) -> torch.Tensor:
    """L [T]: the prefix sum of the boundary probabilities (the soft index of each candidate's event)."""
    return torch.cumsum(boundaries, dim=-1)


def bumps(x: torch.Tensor, centres: torch.Tensor, width: float) -> torch.Tensor:
    """[T, C]: exp(-(x_t - c)^2 / (2 width^2))."""
    return torch.exp(-(x[:, None] - centres[None, :]) ** 2 / (2 * width**2))


def same_event_kernel(index: torch.Tensor) -> torch.Tensor:
    """K [T, T] = exp(-(L_i - L_j)^2 / (2 SIGMA^2))."""
    return torch.exp(-(index[:, None] - index[None, :]) ** 2 / (2 * SIGMA**2))


#: event counts beyond which a bump's weight is dropped: exp(-REACH^2 / (2 SIGMA^2)) < 1e-16
REACH = 3.0


def neighbour_matches(index: torch.Tensor, match: torch.Tensor, offsets: int) -> torch.Tensor:
    """[T, 2 * offsets + 1]: column n + offsets holds, for each j, the mean of `match` over the candidates whose event
    index is L_j + n (weights exp(-(L_i - L_j - n)^2 / (2 SIGMA^2)); a prior weight of 1 at 0 where no event is).

    L never decreases along the video, so the candidates i with any weight above 1e-16 for j form one run, those with
    |L_i - L_j| <= offsets + REACH: each j meets only its run (gathered to the longest run's width), not all T
    candidates. Equal to the dense sum over all i up to the dropped weights."""
    T = index.shape[0]
    reach = offsets + REACH
    lo = torch.searchsorted(index.detach().contiguous(), (index.detach() - reach).contiguous())
    hi = torch.searchsorted(index.detach().contiguous(), (index.detach() + reach).contiguous(), right=True)
    width = int((hi - lo).max()) if T else 0
    cols_idx = lo[:, None] + torch.arange(width, device=index.device)[None, :]  # [T, W]
    inside = cols_idx < hi[:, None]
    cols_idx = cols_idx.clamp(max=T - 1)
    delta = index[cols_idx] - index[:, None]  # [j, w] = L_i - L_j for the run's i
    m = match[cols_idx]
    # one offset at a time: a pass over all offsets at once ([T, W, 7]) was 0.87x as fast at T = 128 and 0.43x at
    # T = 4,096 (memory, not the exps, is what it costs)
    cols = []
    for n in range(-offsets, offsets + 1):
        w = torch.exp(-(delta - n) ** 2 / (2 * SIGMA**2)) * inside
        cols.append((w * m).sum(-1) / (w.sum(-1) + 1))
    return torch.stack(cols, dim=-1)


class SameEventKernel:
    """K of same_event_kernel, row by row on demand (K[idx] for any index tensor: [..., T]): the set-aware policy
    reads only the rows of frames taken, so a video of T candidates never holds a T x T matrix."""

    def __init__(self, index: torch.Tensor):
        self.index = index

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(self.index[idx].unsqueeze(-1) - self.index) ** 2 / (2 * SIGMA**2))


#: grounding_summary's length
GROUNDING_FEATURES = 2


def grounding_summary(match: torch.Tensor) -> torch.Tensor:
    """[2]: how sharply a question is found in one video, from its standardised match m [T]: (max m, max m - the
    90th percentile of m), each divided by 4 to be of order 1. Pure statistics of the cosines, no weights."""
    top = match.max() if match.numel() else match.new_zeros(())
    q90 = torch.quantile(match, 0.9) if match.numel() else match.new_zeros(())
    return torch.stack([top, top - q90]) / 4


def standardised(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return (x - x.mean()) / (x.std(unbiased=False) + eps) if x.numel() > 1 else torch.zeros_like(x)


@register_agent("scan")
class EventScanAgent(TemporalAgent):
    """eq. 3 + an event scan read by the question (module doc); set_policy gives the set-aware policy's parts."""

    def __init__(self, dim: int, window: int = 12, heads: int = 8, hidden: int | None = None,
                 query_conditioned: bool = False, position_scale: float = 1.0, max_count: int = 4,
                 offsets: int = 3, positions: int = 9, head_hidden: int = 64, penalty: float = 2.0,
                 enhancer: bool = True, grounding: bool = False):
        super().__init__(dim, window=window, heads=heads, hidden=hidden, query_conditioned=query_conditioned,
                         position_scale=position_scale)
        self.enhancer = bool(enhancer)
        if not self.enhancer:  # no eq. 3 weights: S_eq3 is what an untrained eq. 3 agent scores, 2 cos(F_f, F_t)
            del self.query, self.key, self.value, self.mlp
            if query_conditioned:
                del self.film
        if max_count < 0 or offsets < 0 or positions < 2 or head_hidden < 1 or not penalty > 0:
            raise ValueError("scan agent needs max_count >= 0, offsets >= 0, positions >= 2, head_hidden >= 1, "
                             f"penalty > 0; got {max_count}, {offsets}, {positions}, {head_hidden}, {penalty}")
        self.max_count, self.offsets, self.positions = int(max_count), int(offsets), int(positions)
        self.head_hidden, self.initial_penalty = int(head_hidden), float(penalty)
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(30.0)))
        self.threshold = nn.Parameter(torch.tensor(0.15))
        self.penalty_raw = nn.Parameter(torch.tensor(math.log(math.expm1(penalty))))  # softplus^-1
        self.grounding = bool(grounding)
        head_in = dim + (GROUNDING_FEATURES if self.grounding else 0)
        self.head = nn.Sequential(nn.Linear(head_in, head_hidden), nn.ReLU(), nn.Linear(head_hidden, self.num_features))
        nn.init.normal_(self.head[2].weight, std=0.01)
        nn.init.zeros_(self.head[2].bias)

    @property
    def num_features(self) -> int:
        return 2 * (self.max_count + 1) + 2 * self.offsets + 1 + self.positions

    @property
    def penalty(self) -> torch.Tensor:
        return F.softplus(self.penalty_raw)

    def structure(self, frame_features: torch.Tensor, text_feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(phi [T, P], L [T]) of one video."""
        phi, index, _ = self._structure(frame_features, text_feature)
        return phi, index

    def _structure(self, frame_features: torch.Tensor,
                   text_feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(phi [T, P], L [T], the standardised match m [T])."""
        T, dev = frame_features.shape[0], frame_features.device
        index = event_index(boundary_probabilities(frame_features, self.log_sharpness.exp(), self.threshold))
        counts = torch.arange(self.max_count + 1, device=dev, dtype=index.dtype)
        match = standardised(cosine_to_text(frame_features, text_feature))
        where = torch.arange(T, device=dev, dtype=index.dtype) / max(T - 1, 1)
        centres = torch.linspace(0, 1, self.positions, device=dev, dtype=index.dtype)
        phi = torch.cat([bumps(index, counts, SIGMA), bumps(index[-1] - index, counts, SIGMA),
                         neighbour_matches(index, match, self.offsets),
                         bumps(where, centres, 1 / (self.positions - 1))], dim=-1)
        return phi, index, match

    def head_input(self, text_feature: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
        """What g reads: F_t / |F_t|, and with `grounding` the question's grounding_summary in this video."""
        text = F.normalize(text_feature, dim=-1)
        if not self.grounding:
            return text
        return torch.cat([text, grounding_summary(match).to(text.dtype)])

    def _one(self, frame_features: torch.Tensor, text_feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        phi, index, match = self._structure(frame_features, text_feature)
        weights = self.head(self.head_input(text_feature, match))
        if self.enhancer:
            base = super().forward(frame_features, text_feature)
        else:
            base = 2 * cosine_to_text(frame_features, text_feature)
        return base + phi @ weights, index

    def forward(self, frame_features: torch.Tensor, text_feature: torch.Tensor,
                lengths: list[int] | None = None) -> torch.Tensor:
        """S [T] (or [sum T_i] for videos packed along T with `lengths`, as TemporalAgent.forward)."""
        if lengths is None:
            if frame_features.dim() != 2:
                raise ValueError(f"the scan agent scores one video [T, D] at a time, got {list(frame_features.shape)}")
            return self._one(frame_features, text_feature)[0]
        parts = frame_features.split([int(n) for n in lengths])
        return torch.cat([self._one(f, t)[0] for f, t in zip(parts, text_feature)])

    def set_policy(self, frame_features: torch.Tensor, text_feature: torch.Tensor):
        """(S [T], K (rows on demand: SameEventKernel), lambda) of the set-aware policy (tspo_ray.method.sequential)."""
        scores, index = self._one(frame_features, text_feature)
        return scores, SameEventKernel(index), self.penalty

    def config(self) -> dict:
        return {**super().config(), "kind": "scan", "max_count": self.max_count, "offsets": self.offsets,
                "positions": self.positions, "head_hidden": self.head_hidden, "penalty": self.initial_penalty,
                **({} if self.enhancer else {"enhancer": False}), **({"grounding": True} if self.grounding else {})}
