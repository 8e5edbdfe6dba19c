"""The sampling distribution of the policy: Gumbel-top-k draws, set log-likelihoods, the tau schedule.

Pure tensor functions. The policy over frames is the softmax of S / tau; a keyframe set of T_s frames is a draw
without replacement. Two likelihoods of a drawn set are offered:

- "plackett_luce": the exact probability of the ordered draw,
      log p(i_1..i_k) = sum_m [ l_{i_m} - logsumexp_{j not in {i_1..i_{m-1}}} l_j ];
  the importance ratio is taken per set.
- "per_frame": the reference code's form: log_softmax over all candidates of each selected frame, with the
  importance ratio taken per frame and averaged over the T_s frames.

Both return a [..., m] tensor (m = 1 for plackett_luce, m = k for per_frame) so the GRPO loss treats them alike.
The deterministic selection methods of inference are in tspo_ray.method.selection_methods.
"""
from __future__ import annotations

import logging
from typing import Literal

import torch

log = logging.getLogger(__name__)

LikelihoodKind = Literal["plackett_luce", "per_frame"]
LIKELIHOODS = ("plackett_luce", "per_frame")
#: the temperature schedule's ends, tau 0.025 -> 0.01 (config policy.tau_start / tau_end declare them from here)
TAU_START, TAU_END = 0.025, 0.01


def effective_k(num_candidates: int, k: int) -> int:
    """The number of frames a selector returns: k, or all candidates when there are fewer (logged)."""
    if num_candidates < 1:
        raise ValueError("a video needs at least one candidate frame")
    if k < 1:
        raise ValueError(f"the number of frames to select must be >= 1, got {k}")
    if num_candidates < k:
        log.info("only %d candidate frames for T_s=%d: selecting all of them", num_candidates, k)
        return num_candidates
    return k


def gumbel_topk(logits: torch.Tensor, k: int, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw num_samples sets of k distinct indices without replacement from softmax(logits): [G, k], in draw order.

    Gumbel-top-k: the top-k of logits + Gumbel noise, sorted by perturbed value, is distributed exactly as k
    sequential draws without replacement (Plackett-Luce), so the order of the returned indices is the draw order.
    """
    k = effective_k(logits.shape[-1], k)
    u = torch.rand((num_samples, logits.shape[-1]), generator=generator, dtype=torch.float64, device=logits.device)
    exponential = (-torch.log(u.clamp_min(1e-300))).clamp_min(1e-300)
    gumbel = -torch.log(exponential)
    perturbed = logits.detach().double()[None, :] + gumbel
    return perturbed.topk(k, dim=-1, sorted=True).indices


def plackett_luce_logprob(logits: torch.Tensor, ordered: torch.Tensor) -> torch.Tensor:
    """Exact log-probability of ordered draws without replacement: logits [T], ordered [..., k] -> [..., 1].

    A masked logsumexp per step (O(k*T)) instead of subtracting probability mass, which cancels catastrophically
    at tau = 0.01 where a few frames hold almost all the mass.
    """
    chosen = logits[ordered]  # [..., k]
    # removed[..., m, j] = frame j was drawn before step m
    onehot = torch.zeros(*ordered.shape, logits.shape[-1], dtype=torch.bool, device=logits.device)
    onehot.scatter_(-1, ordered.unsqueeze(-1), True)
    removed = torch.cumsum(onehot.int(), dim=-2) - onehot.int()
    step_logits = logits.expand(*ordered.shape, logits.shape[-1]).masked_fill(removed.bool(), float("-inf"))
    log_norm = torch.logsumexp(step_logits, dim=-1)  # [..., k]
    return (chosen - log_norm).sum(-1, keepdim=True)


def per_frame_logprob(logits: torch.Tensor, ordered: torch.Tensor) -> torch.Tensor:
    """The reference's per-frame form: log_softmax(logits)[i] for each selected frame: [..., k]."""
    return torch.log_softmax(logits, dim=-1)[ordered]


def set_logprob(logits: torch.Tensor, ordered: torch.Tensor, kind: LikelihoodKind) -> torch.Tensor:
    """Log-likelihood terms of drawn sets under logits (= S / tau): [..., m], see the module docstring."""
    if kind == "plackett_luce":
        return plackett_luce_logprob(logits, ordered)
    if kind == "per_frame":
        return per_frame_logprob(logits, ordered)
    raise ValueError(f"unknown likelihood {kind!r}; choose one of {LIKELIHOODS}")


def frame_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the frame distribution softmax(logits) over the last axis."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def linear_tau(step: int, total_steps: int, tau_start: float = TAU_START, tau_end: float = TAU_END) -> float:
    """The temperature at a step: linear from tau_start (step 0) to tau_end (last step), constant after."""
    if total_steps <= 1:
        return tau_end
    frac = min(max(step, 0) / (total_steps - 1), 1.0)
    return tau_start + (tau_end - tau_start) * frac

