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
- With `residual_text`, g also reads F_t with the direction of the question's best-matching candidate removed:
  what the question names is found in the video, so what is left is how it is asked.
- enhancer False drops eq. 3's weights (S_eq3 = 2 cos(F_f, F_t), what an untrained eq. 3 agent scores): the scan
  alone, a few thousand parameters that see the video only through its event structure and the question's match.
- The policy (tspo_ray.method.sequential): K[i, j] = exp(-(L_i - L_j)^2 / (2 SIGMA^2)), about 1 inside one event
  and 0 across a boundary, and a learned lambda = softplus(rho) >= 0: a frame of an event already taken is worth
  lambda less, so the greedy set spreads over the events the scores point to.
- With `adjacency`, the head also gives each question a mu (its last output, starting at `adjacency_init`), and a
  frame one event away from a frame taken is worth mu more (SameEventKernel.adjacent): a set can follow a chain of
  events (X, X + 1, X + 2), where the answer to "what comes two after X" needs all three and a skipped one makes
  the count wrong; a question that needs frames spread over the video can learn mu <= 0.
- With `opening`, the head also gives each question a beta (its last output, starting near 0), and the policy's
  first step alone adds beta * m (the standardised match): the set can open at what the question names (X) while
  its scores point at the answer's event, two away, and the chain then grows from X.
Videos of one length are scored side by side, every step one batched op over all of them (_same_length): a batch
of 64 questions costs a few of one. Cost: O(T * R) for the neighbour matches, R the longest run of candidates
within offsets + 3 events of one candidate (neighbour_matches), beside eq. 3's O(T * w); the policy reads K row by
row (SameEventKernel).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tspo_ray.method.agent import TemporalAgent, cosine_to_text, register_agent

#: width of the bumps over event counts, and of the same-event kernel
SIGMA = 0.35
#: the boundary detector's starting sharpness a and threshold c (learned by the agent; fixed in the clip:chain rule)
BOUNDARY_SHARPNESS, BOUNDARY_THRESHOLD = 30.0, 0.15


def boundary_probabilities(frame_features: torch.Tensor, sharpness: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """b [..., T]: sigmoid(sharpness * (d_j - threshold)) with d_j the cosine distance to the previous candidate;
    b_0 = 0. frame_features [..., T, D]: any leading dims are videos of one length, scanned side by side."""
    unit = F.normalize(frame_features, dim=-1)
    d = 1 - (unit[..., 1:, :] * unit[..., :-1, :]).sum(-1)
    return torch.cat([d.new_zeros(*d.shape[:-1], 1), torch.sigmoid(sharpness * (d - threshold))], dim=-1)


def event_index(boundaries: torch.Tensor) -> torch.Tensor:
    """L [..., T]: the prefix sum of the boundary probabilities (the soft index of each candidate's event)."""
    return torch.cumsum(boundaries, dim=-1)


def fixed_event_index(frame_features: torch.Tensor) -> torch.Tensor:
    """L [..., T] by the boundary detector's starting settings (no learned weights): what a training-free rule sees."""
    one = frame_features.new_ones(())
    return event_index(boundary_probabilities(frame_features, BOUNDARY_SHARPNESS * one, BOUNDARY_THRESHOLD * one))


#: exp(-x) for x past this is below 2e-35 and is taken as exp(-EXP_FLOOR): the CPU's exp takes a slow path,
#: 15 to 35 times slower, for arguments under -87, which the bumps of events far apart reach (most pairs in a video)
EXP_FLOOR = 80.0


def gaussian(d: torch.Tensor, width: float) -> torch.Tensor:
    """exp(-d^2 / (2 width^2)), floored at exp(-EXP_FLOOR)."""
    return torch.exp((d.square() * (-1 / (2 * width**2))).clamp_min(-EXP_FLOOR))


def bumps(x: torch.Tensor, centres: torch.Tensor, width: float) -> torch.Tensor:
    """[..., T, C]: exp(-(x_t - c)^2 / (2 width^2))."""
    return gaussian(x[..., :, None] - centres, width)


def same_event_kernel(index: torch.Tensor) -> torch.Tensor:
    """K [T, T] = exp(-(L_i - L_j)^2 / (2 SIGMA^2))."""
    return gaussian(index[:, None] - index[None, :], SIGMA)


#: event counts beyond which a bump's weight is dropped: exp(-REACH^2 / (2 SIGMA^2)) < 1e-16
REACH = 3.0


def neighbour_matches(index: torch.Tensor, match: torch.Tensor, offsets: int) -> torch.Tensor:
    """[..., T, 2 * offsets + 1]: column n + offsets holds, for each j, the mean of `match` over the candidates whose
    event index is L_j + n (weights exp(-(L_i - L_j - n)^2 / (2 SIGMA^2)); a prior weight of 1 at 0 where no event
    is). index and match [..., T]: leading dims are videos of one length.

    L never decreases along the video, so the candidates i with any weight above 1e-16 for j form one run, those with
    |L_i - L_j| <= offsets + REACH: each j meets only its run (gathered to the longest run's width), not all T
    candidates. Equal to the dense sum over all i up to the dropped weights. Where the runs cover half the video or
    more (a video of T = 128 candidates and a dozen events), all pairs at once cost less than gathering them."""
    T = index.shape[-1]
    reach = offsets + REACH
    flat_index, flat_match = index.reshape(-1, T), match.reshape(-1, T)
    sorted_index = flat_index.detach().contiguous()
    lo = torch.searchsorted(sorted_index, (sorted_index - reach).contiguous())
    hi = torch.searchsorted(sorted_index, (sorted_index + reach).contiguous(), right=True)
    width = int((hi - lo).max()) if T else 0
    if 2 * width >= T:
        return _all_pairs_neighbour_matches(flat_index, flat_match, offsets).view(*index.shape, 2 * offsets + 1)
    cols_idx = lo[..., None] + torch.arange(width, device=index.device)  # [V, T, W]
    inside = cols_idx < hi[..., None]
    cols_idx = cols_idx.clamp(max=T - 1).view(flat_index.shape[0], -1)
    # [v, j, w] = L_i - L_j and m_i for the run's i
    delta = (flat_index.gather(-1, cols_idx).view(*lo.shape, width) - flat_index[..., None])
    m = flat_match.gather(-1, cols_idx).view(*lo.shape, width)
    # one offset at a time: a pass over all offsets at once ([T, W, 7]) was 0.87x as fast at T = 128 and 0.43x at
    # T = 4,096 (memory, not the exps, is what it costs)
    cols = []
    for n in range(-offsets, offsets + 1):
        w = gaussian(delta - n, SIGMA) * inside
        cols.append((w * m).sum(-1) / (w.sum(-1) + 1))
    return torch.stack(cols, dim=-1).view(*index.shape, 2 * offsets + 1)


def _all_pairs_neighbour_matches(index: torch.Tensor, match: torch.Tensor, offsets: int) -> torch.Tensor:
    """neighbour_matches over all pairs: index, match [V, T] -> [V, T, 2 * offsets + 1].

    With d = L_i - L_j and c = -1 / (2 SIGMA^2), the exponent c (d - n)^2 = c d^2 - 2 c n d + c n^2: c d^2 and
    -2 c d are computed once, each offset adds them (one pass) and its exp(c n^2) scales the two sums after, which
    are one matmul with [m, 1]. The exponent before that scale is at most -c n^2 (37 at n = 3: finite in float32)
    and is floored at -EXP_FLOOR as gaussian() does."""
    d = index[..., None, :] - index[..., :, None]  # [V, j, i]
    c = -1 / (2 * SIGMA**2)
    square, linear = d.square() * c, d * (-2 * c)
    sums_of = torch.stack([match, torch.ones_like(match)], dim=-1)  # [V, i, 2]
    cols = []
    for n in range(-offsets, offsets + 1):
        sums = torch.add(square, linear, alpha=n).clamp_min(-EXP_FLOOR).exp() @ sums_of * math.exp(c * n * n)
        cols.append(sums[..., 0] / (sums[..., 1] + 1))
    return torch.stack(cols, dim=-1)


class SameEventKernel:
    """K of same_event_kernel, row by row on demand: the set-aware policy reads only the rows of frames taken, so a
    video of T candidates never holds a T x T matrix. index [T]: K[idx] for any index tensor is [..., T]; index
    [B, T] (B videos of one length): K[idx] for idx [B, ...] is [B, ..., T], each video's rows of its own K.
    With a bonus (mu: a scalar per video, [] or [B]), adjacent(idx) gives the rows of
    A[i, j] = exp(-(|L_i - L_j| - 1)^2 / (2 SIGMA^2)), about 1 for candidates one event apart (either side) and 0
    inside one event or two apart; the policy adds mu * max A to the frames taken (tspo_ray.method.sequential).
    With opening scores ([T] or [B, T]), the policy adds them to its first step only."""

    def __init__(self, index: torch.Tensor, bonus: torch.Tensor | None = None, opening: torch.Tensor | None = None):
        self.index, self.bonus, self.opening = index, bonus, opening

    def _differences(self, idx: torch.Tensor) -> torch.Tensor:
        """L_c - L_j for the rows c of idx: [..., T] (index [T]) or [B, ..., T] (index [B, T])."""
        if self.index.dim() == 1:
            return self.index[idx].unsqueeze(-1) - self.index
        B, T = self.index.shape
        taken = self.index.gather(-1, idx.reshape(B, -1)).view(*idx.shape, 1)
        return taken - self.index.view(B, *([1] * (idx.dim() - 1)), T)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return gaussian(self._differences(idx), SIGMA)

    def adjacent(self, idx: torch.Tensor) -> torch.Tensor:
        return gaussian(self._differences(idx).abs() - 1, SIGMA)

    @classmethod
    def stack(cls, kernels: list["SameEventKernel"]) -> "SameEventKernel":
        """The kernels of videos of one length as one [B, T] kernel."""
        def stacked(parts: list, what: str):
            if any(p is None for p in parts) and not all(p is None for p in parts):
                raise ValueError(f"kernels with and without {what} cannot be stacked")
            return None if parts[0] is None else torch.stack(parts)

        return cls(torch.stack([k.index for k in kernels]), stacked([k.bonus for k in kernels], "an adjacency bonus"),
                   stacked([k.opening for k in kernels], "opening scores"))


#: grounding_summary's length
GROUNDING_FEATURES = 2


def grounding_summary(match: torch.Tensor) -> torch.Tensor:
    """[..., 2]: how sharply a question is found in one video, from its standardised match m [..., T]: (max m,
    max m - the 90th percentile of m), each divided by 4 to be of order 1. Pure statistics of the cosines."""
    if not match.shape[-1]:
        return match.new_zeros(*match.shape[:-1], 2)
    top = match.max(dim=-1).values
    q90 = torch.quantile(match, 0.9, dim=-1)
    return torch.stack([top, top - q90], dim=-1) / 4


def standardised(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x standardised over its last dim (zeros where it has one entry)."""
    if x.shape[-1] <= 1:
        return torch.zeros_like(x)
    return (x - x.mean(-1, keepdim=True)) / (x.std(-1, unbiased=False, keepdim=True) + eps)


@register_agent("scan")
class EventScanAgent(TemporalAgent):
    """eq. 3 + an event scan read by the question (module doc); set_policy gives the set-aware policy's parts."""

    def __init__(self, dim: int, window: int = 12, heads: int = 8, hidden: int | None = None,
                 query_conditioned: bool = False, position_scale: float = 1.0, max_count: int = 4,
                 offsets: int = 3, positions: int = 9, head_hidden: int = 64, penalty: float = 2.0,
                 enhancer: bool = True, grounding: bool = False, residual_text: bool = False,
                 adjacency: bool = False, adjacency_init: float = 1.0, opening: bool = False):
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
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(BOUNDARY_SHARPNESS)))
        self.threshold = nn.Parameter(torch.tensor(BOUNDARY_THRESHOLD))
        self.penalty_raw = nn.Parameter(torch.tensor(math.log(math.expm1(penalty))))  # softplus^-1
        self.grounding, self.residual_text = bool(grounding), bool(residual_text)
        self.adjacency, self.adjacency_init, self.opening = bool(adjacency), float(adjacency_init), bool(opening)
        head_in = dim + (GROUNDING_FEATURES if self.grounding else 0) + (dim if self.residual_text else 0)
        # after the features' weights: the question's mu (adjacency), then its beta (opening)
        head_out = self.num_features + (1 if self.adjacency else 0) + (1 if self.opening else 0)
        self.head = nn.Sequential(nn.Linear(head_in, head_hidden), nn.ReLU(), nn.Linear(head_hidden, head_out))
        nn.init.normal_(self.head[2].weight, std=0.01)
        nn.init.zeros_(self.head[2].bias)
        if self.adjacency:
            with torch.no_grad():
                self.head[2].bias[self.num_features] = self.adjacency_init

    @property
    def num_features(self) -> int:
        return 2 * (self.max_count + 1) + 2 * self.offsets + 1 + self.positions

    @property
    def penalty(self) -> torch.Tensor:
        return F.softplus(self.penalty_raw)

    def structure(self, frame_features: torch.Tensor, text_feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(phi [..., T, P], L [..., T]) of one video, or of videos of one length side by side ([..., T, D])."""
        phi, index, _ = self._structure(frame_features, text_feature)
        return phi, index

    def _structure(self, frame_features: torch.Tensor,
                   text_feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(phi [..., T, P], L [..., T], the standardised match m [..., T])."""
        T, dev = frame_features.shape[-2], frame_features.device
        index = event_index(boundary_probabilities(frame_features, self.log_sharpness.exp(), self.threshold))
        counts = torch.arange(self.max_count + 1, device=dev, dtype=index.dtype)
        match = standardised(cosine_to_text(frame_features, text_feature))
        where = torch.arange(T, device=dev, dtype=index.dtype) / max(T - 1, 1)
        centres = torch.linspace(0, 1, self.positions, device=dev, dtype=index.dtype)
        places = bumps(where, centres, 1 / (self.positions - 1)).expand(*index.shape, self.positions)
        phi = torch.cat([bumps(index, counts, SIGMA), bumps(index[..., -1:] - index, counts, SIGMA),
                         neighbour_matches(index, match, self.offsets), places], dim=-1)
        return phi, index, match

    def head_input(self, text_feature: torch.Tensor, match: torch.Tensor,
                   frame_features: torch.Tensor | None = None) -> torch.Tensor:
        """What g reads: F_t / |F_t|; with `grounding` also the question's grounding_summary in this video; with
        `residual_text` also the question less what it finds in this video: F_t with the direction of its
        best-matching candidate removed, unit length (removing what is asked about leaves how it is asked)."""
        text = F.normalize(text_feature, dim=-1)
        parts = [text]
        if self.grounding:
            parts.append(grounding_summary(match).to(text.dtype))
        if self.residual_text:
            best = frame_features.gather(-2, match.argmax(-1)[..., None, None].expand(*match.shape[:-1], 1,
                                                                                       frame_features.shape[-1]))
            found = F.normalize(best.squeeze(-2), dim=-1)
            parts.append(F.normalize(text - (text * found).sum(-1, keepdim=True) * found, dim=-1))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else text

    def _same_length(self, frame_features: torch.Tensor, text_feature: torch.Tensor):
        """(S [..., T], SameEventKernel parts: L [..., T], mu [...] or None without `adjacency`, the first step's
        beta * m [..., T] or None without `opening`): videos of one length side by side ([..., T, D], their
        questions [..., D]), every step one batched op over all of them (a batch of 64 questions costs a few of one:
        the per-op overhead, not the arithmetic, is what a video of 128 candidates spends)."""
        phi, index, match = self._structure(frame_features, text_feature)
        out = self.head(self.head_input(text_feature, match, frame_features))
        weights = out[..., :self.num_features]
        extra = out[..., self.num_features:].unbind(-1)
        bonus = extra[0] if self.adjacency else None
        opening = extra[-1][..., None] * match if self.opening else None
        if self.enhancer:
            base = super().forward(frame_features, text_feature)
        else:
            base = 2 * cosine_to_text(frame_features, text_feature)
        return base + (phi @ weights.unsqueeze(-1)).squeeze(-1), index, bonus, opening

    def _packed(self, frame_features: torch.Tensor, text_feature: torch.Tensor,
                lengths: list[int]) -> tuple[list[torch.Tensor], list[SameEventKernel]]:
        """(S per video, K per video) of videos packed end to end ([sum T_i, D], questions [N, D]): the videos of
        each length are stacked and scored together (_same_length); each sees only its own frames."""
        lengths = [int(n) for n in lengths]
        if frame_features.dim() != 2 or sum(lengths) != frame_features.shape[0] or min(lengths, default=1) < 1:
            raise ValueError(f"packed videos of lengths {lengths} need frame_features [{sum(lengths)}, D], "
                             f"got {list(frame_features.shape)}")
        parts = frame_features.split(lengths)
        scores: list[torch.Tensor | None] = [None] * len(lengths)
        kernels: list[SameEventKernel | None] = [None] * len(lengths)
        by_length: dict[int, list[int]] = {}
        for i, n in enumerate(lengths):
            by_length.setdefault(n, []).append(i)
        for members in by_length.values():
            s, L, mu, opening = self._same_length(torch.stack([parts[i] for i in members]), text_feature[members])
            for row, i in enumerate(members):
                scores[i], kernels[i] = s[row], SameEventKernel(L[row], None if mu is None else mu[row],
                                                                None if opening is None else opening[row])
        return scores, kernels

    def forward(self, frame_features: torch.Tensor, text_feature: torch.Tensor,
                lengths: list[int] | None = None) -> torch.Tensor:
        """S [T] (or [sum T_i] for videos packed along T with `lengths`, as TemporalAgent.forward)."""
        if lengths is None:
            if frame_features.dim() != 2:
                raise ValueError(f"the scan agent scores one video [T, D] at a time, got {list(frame_features.shape)}")
            return self._same_length(frame_features, text_feature)[0]
        return torch.cat(self._packed(frame_features, text_feature, lengths)[0])

    def set_policy(self, frame_features: torch.Tensor, text_feature: torch.Tensor):
        """(S [T], K (rows on demand: SameEventKernel, with mu under `adjacency`), lambda) of the set-aware policy
        (tspo_ray.method.sequential)."""
        scores, index, bonus, opening = self._same_length(frame_features, text_feature)
        return scores, SameEventKernel(index, bonus, opening), self.penalty

    def set_policies(self, frame_features: list[torch.Tensor], text_features: list[torch.Tensor]):
        """set_policy of several videos ([T_i, D] each, one question [D] each) in one batched pass: a list of
        (S, K), and lambda."""
        lengths = [int(f.shape[0]) for f in frame_features]
        scores, kernels = self._packed(torch.cat(list(frame_features)), torch.stack(list(text_features)), lengths)
        return list(zip(scores, kernels)), self.penalty

    def config(self) -> dict:
        return {**super().config(), "kind": "scan", "max_count": self.max_count, "offsets": self.offsets,
                "positions": self.positions, "head_hidden": self.head_hidden, "penalty": self.initial_penalty,
                **({} if self.enhancer else {"enhancer": False}), **({"grounding": True} if self.grounding else {}),
                **({"residual_text": True} if self.residual_text else {}),
                **({"adjacency": True, "adjacency_init": self.adjacency_init} if self.adjacency else {}),
                **({"opening": True} if self.opening else {})}
