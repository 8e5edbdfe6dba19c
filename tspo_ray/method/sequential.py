"""A set-aware policy: frames drawn one at a time, each step's scores lowered near the frames already taken.

Top-k of independent scores piles its k frames onto one event, since a frame scores like its neighbours. Here
step m draws from

    l_m(j) = (S_j - lambda * max_{c in {i_1..i_{m-1}}} K[j, c]) / tau       (j not yet taken; l_1 = S / tau)

where K [T, T] in [0, 1] says how much two candidates show the same thing (the scan agent: the same event, from
its boundary scan) and lambda >= 0 is how much a second frame of it is worth less. Both come from the agent and are
learned with it. A kernel that also carries `bonus` (mu, one per question) and `adjacent(idx)` (A, rows of how much
two candidates lie in neighbouring events) adds + mu * max_{c taken} A[j, c]: with mu > 0 a frame next to the frames
taken is worth more, so a set can follow a chain of events (X, then X + 1, then X + 2) instead of scattering. A
kernel that carries `opening` ([T]) adds it to the first step's scores only: where the set opens. The exact
log-probability of an ordered draw is

    log p(i_1..i_k) = sum_m [ l_m(i_m) - logsumexp_{j not taken} l_m(j) ],

with lambda = 0 the Plackett-Luce likelihood of Gumbel-top-k (sampling.plackett_luce_logprob). Sampling adds Gumbel
noise at each step; the deterministic choice (greedy) takes each step's best frame, so what the agent learned under
sampling is what its own inference selects, without a rule on top of the scores.
Pure tensor functions: scores [T], kernel [T, T] (or anything whose kernel[idx] gives those rows, [..., T]),
penalty a scalar tensor.
"""
from __future__ import annotations

import torch

from tspo_ray.method.sampling import effective_k


def _running_max(taken: torch.Tensor) -> torch.Tensor:
    """[..., k, T]: row m is the max of rows 0 .. m - 1 of taken [..., k, T] (zeros for m = 0)."""
    running = torch.cummax(taken, dim=-2).values
    return torch.cat([torch.zeros_like(running[..., :1, :]), running[..., :-1, :]], dim=-2)


def _step_penalties(kernel: torch.Tensor, ordered: torch.Tensor) -> torch.Tensor:
    """[..., k, T]: row m is max_{c among ordered[..., :m]} kernel[:, c] (zeros for m = 0)."""
    return _running_max(kernel[ordered])  # [..., k, T]: K is symmetric, so row c is K[:, c]


def adjacency_bonus(kernel) -> torch.Tensor | None:
    """The kernel's mu (a scalar, or [B] for B videos of one length), or None where it carries none."""
    return getattr(kernel, "bonus", None)


def opening_scores(kernel) -> torch.Tensor | None:
    """What the kernel adds to the first step's scores only ([T], or [B, T]), or None where it adds nothing."""
    return getattr(kernel, "opening", None)


def sequential_logprob(scores: torch.Tensor, kernel: torch.Tensor, penalty: torch.Tensor, tau,
                       ordered: torch.Tensor) -> torch.Tensor:
    """Exact log-probability of ordered draws under the set-aware policy: ordered [..., k] -> [..., 1].
    Several videos of one length at once: scores [B, 1, 1, T], kernel[idx [B, ...]] -> [B, ..., T], ordered
    [B, G, k], tau a float or [B, 1, 1, 1]."""
    T = scores.shape[-1]
    logits = scores - penalty * _step_penalties(kernel, ordered)  # [..., k, T]
    bonus = adjacency_bonus(kernel)
    if bonus is not None:
        near = _running_max(kernel.adjacent(ordered))
        logits = logits + bonus.reshape(*bonus.shape, *([1] * (near.dim() - bonus.dim()))) * near
    opening = opening_scores(kernel)
    if opening is not None:
        first = torch.zeros(logits.shape[-2], 1, dtype=logits.dtype, device=logits.device)
        first[0] = 1  # the first step only
        logits = logits + first * opening.reshape(*opening.shape[:-1], *([1] * (logits.dim() - opening.dim())), T)
    logits = logits / tau
    onehot = torch.zeros(*ordered.shape, T, dtype=torch.bool, device=scores.device)
    onehot.scatter_(-1, ordered.unsqueeze(-1), True)
    removed = (torch.cumsum(onehot.int(), dim=-2) - onehot.int()).bool()
    logits = logits.masked_fill(removed, float("-inf"))
    chosen = logits.gather(-1, ordered.unsqueeze(-1)).squeeze(-1)  # [..., k]
    return (chosen - torch.logsumexp(logits, dim=-1)).sum(-1, keepdim=True)


@torch.no_grad()
def _decode(scores: torch.Tensor, kernel, penalty: float, tau: float, k: int, rows: int,
            uniforms: torch.Tensor | None) -> torch.Tensor:
    """[B, rows, k]: the draws for B videos of one length at once (scores [B, T], kernel[idx [B, ...]] -> [B, ..., T]);
    uniforms [B, k, rows, T] give each step's Gumbel noise, None the greedy decode."""
    B, T = scores.shape
    s = scores.detach().double()[:, None, :]
    worst = torch.zeros(B, rows, T, dtype=torch.float64, device=s.device)  # max K to the frames taken so far
    bonus = adjacency_bonus(kernel)
    if bonus is not None:
        bonus = bonus.detach().double().reshape(B, 1, 1)
        near = torch.zeros_like(worst)  # max A to the frames taken so far
    opening = opening_scores(kernel)
    if opening is not None:
        opening = opening.detach().double().reshape(B, 1, T)
    taken = torch.zeros(B, rows, T, dtype=torch.bool, device=s.device)
    out = torch.empty(B, rows, k, dtype=torch.long, device=s.device)
    for m in range(k):
        logits = s - penalty * worst
        if bonus is not None:
            logits = logits + bonus * near
        if m == 0 and opening is not None:
            logits = logits + opening
        logits = logits / tau
        if uniforms is not None:
            u = uniforms[:, m]
            logits = logits - torch.log((-torch.log(u.clamp_min(1e-300))).clamp_min(1e-300))
        pick = logits.masked_fill(taken, float("-inf")).argmax(-1)  # [B, rows]
        out[:, :, m] = pick
        taken.scatter_(-1, pick[..., None], True)
        worst = torch.maximum(worst, kernel[pick].detach().double())
        if bonus is not None:
            near = torch.maximum(near, kernel.adjacent(pick).detach().double())
    return out


def draw_uniforms(k: int, num_samples: int, T: int, generator: torch.Generator | None = None,
                  device=None) -> torch.Tensor:
    """[k, num_samples, T]: the uniforms sequential_sample turns into each step's Gumbel noise, in the order it
    draws them (step by step), so that noise drawn ahead of time gives the same samples."""
    return torch.rand((k, num_samples, T), generator=generator, dtype=torch.float64, device=device)


def sequential_sample(scores: torch.Tensor, kernel: torch.Tensor, penalty: torch.Tensor | float, tau: float, k: int,
                      num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """num_samples ordered draws of k distinct frames from the set-aware policy: [G, k], in draw order
    (each step a Gumbel-max draw from that step's distribution, so exact samples of sequential_logprob's p)."""
    k = effective_k(scores.shape[-1], k)
    uniforms = draw_uniforms(k, num_samples, scores.shape[-1], generator, scores.device)
    return _decode(scores[None], _Single(kernel), float(torch.as_tensor(penalty).detach()), tau, k, num_samples,
                   uniforms[None])[0]


def sequential_sample_batch(scores: torch.Tensor, kernel, penalty: torch.Tensor | float, tau: float,
                            uniforms: torch.Tensor) -> torch.Tensor:
    """sequential_sample of B videos of one length at once: scores [B, T], kernel[idx [B, ...]] -> [B, ..., T] (e.g.
    the scan agent's SameEventKernel of stacked event indices), uniforms [B, k, G, T] (draw_uniforms per video)
    -> [B, G, k]. Given each video's uniforms, the draws are sequential_sample's, one video at a time."""
    k, rows = uniforms.shape[1], uniforms.shape[2]
    return _decode(scores, kernel, float(torch.as_tensor(penalty).detach()), tau, k, rows, uniforms)


class _Single:
    """One video's kernel (a [T, T] tensor, or rows on demand) seen as a batch of one: [1, ...] -> [1, ..., T]."""

    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return self.kernel[idx[0]][None]

    @property
    def bonus(self) -> torch.Tensor | None:
        bonus = adjacency_bonus(self.kernel)
        return None if bonus is None else bonus.reshape(1)

    def adjacent(self, idx: torch.Tensor) -> torch.Tensor:
        return self.kernel.adjacent(idx[0])[None]

    @property
    def opening(self) -> torch.Tensor | None:
        opening = opening_scores(self.kernel)
        return None if opening is None else opening[None]


def sequential_greedy(scores: torch.Tensor, kernel: torch.Tensor, penalty: torch.Tensor | float, k: int) -> torch.Tensor:
    """The policy's deterministic choice: each step's best frame; positions in temporal order."""
    k = effective_k(scores.shape[-1], k)
    return _decode(scores[None], _Single(kernel), float(torch.as_tensor(penalty).detach()), 1.0, k, 1,
                   None)[0, 0].sort().values
