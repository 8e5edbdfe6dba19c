"""GRPO for the temporal agent: group-normalised advantages and the clipped importance-ratio surrogate.

Pure functions over explicit numbers. The frozen MLLM only produces rewards, so the ratio involves the selection
likelihood alone: ratio = exp(logp_new - logp_old), logp_old stored when the sets were sampled (possibly by an
older policy version: the ratio and its clipping keep that correct).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Advantages:
    values: torch.Tensor  # [N, G]
    zero_variance: torch.Tensor  # bool [N]: groups whose G rewards are all equal (no learning signal)


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> Advantages:
    """(r - mean_group) / (std_group + eps) over the G sets of each question: rewards [N, G].

    std is the unbiased sample std (as in TRL's GRPO). Zero-variance groups get advantage exactly 0.
    """
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [num_groups, G] with G >= 2, got {tuple(rewards.shape)}")
    rewards = rewards.double()
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)
    zero = (rewards.max(dim=1).values - rewards.min(dim=1).values) == 0
    adv = (rewards - mean) / (std + eps)
    adv = torch.where(zero[:, None], torch.zeros_like(adv), adv)
    return Advantages(adv.float(), zero)


def learning_rewards(r_answer: torch.Tensor, r_temporal: torch.Tensor, temporal_weight: float = 1.0) -> torch.Tensor:
    """The rewards GRPO learns from: R_A + w * R_T ([N, G] each; R_T is 0 for general items).

    At w = 1 these are the paper's totals up to the general items' constant + 1, which the centring within each
    group removes, so the advantages are the paper's. R_T rewards frames inside any target span, however they are
    spread over the spans; w < 1 weighs it below the answer."""
    if r_answer.shape != r_temporal.shape:
        raise ValueError(f"R_A {tuple(r_answer.shape)} and R_T {tuple(r_temporal.shape)} differ in shape")
    if not temporal_weight >= 0:
        raise ValueError(f"temporal_weight must be >= 0, got {temporal_weight}")
    return r_answer + temporal_weight * r_temporal


ADVANTAGE_NORMS = ("group", "family")


def family_advantages(rewards: torch.Tensor, families: list[str], eps: float = 1e-6) -> Advantages:
    """(r - mean_group) / (std_family + eps): centred in each group, scaled by the reward spread of all the batch's
    sets of the group's family (unbiased std over the family's N_f * G rewards, centred per group).

    Per-group scaling makes a group whose G rewards barely differ count as much as one that separates right from
    wrong; a family whose questions are rarely answered (few right sets) is then drowned by the noise of its near-
    ties. Scaling per family keeps each question's advantages in its family's units. Zero-variance groups stay 0.
    """
    if rewards.ndim != 2 or rewards.shape[1] < 2 or len(families) != rewards.shape[0]:
        raise ValueError(f"rewards must be [num_groups, G] with G >= 2 and one family per group, got "
                         f"{tuple(rewards.shape)} and {len(families)} families")
    rewards = rewards.double()
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    zero = (rewards.max(dim=1).values - rewards.min(dim=1).values) == 0
    adv = torch.zeros_like(centred)
    for fam in dict.fromkeys(families):
        rows = torch.tensor([i for i, f in enumerate(families) if f == fam])
        spread = centred[rows].pow(2).sum() / max(centred[rows].numel() - len(rows), 1)
        adv[rows] = centred[rows] / (spread.sqrt() + eps)
    adv = torch.where(zero[:, None], torch.zeros_like(adv), adv)
    return Advantages(adv.float(), zero)


@dataclass(frozen=True)
class LossOutput:
    loss: torch.Tensor
    metrics: dict[str, float]


def clipped_surrogate(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    clip_eps: float = 0.2,
    logp_ref: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> LossOutput:
    """The clipped GRPO loss (to minimise) for S sampled sets.

    logp_new, logp_old (and logp_ref): [S, m] likelihood terms of each set (m = 1 for the exact set likelihood,
    m = T_s for per-frame ratios); advantages: [S]. Per term:
        -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A),   ratio = exp(logp_new - logp_old),
    averaged over all terms, plus kl_coef * KL(new || ref) by the k3 estimator exp(ref - new) - (ref - new) - 1.
    """
    if logp_new.shape != logp_old.shape:
        raise ValueError(f"logp_new {tuple(logp_new.shape)} and logp_old {tuple(logp_old.shape)} differ")
    adv = advantages.reshape(-1, 1).to(logp_new.dtype)
    log_ratio = logp_new - logp_old.detach()
    ratio = torch.exp(log_ratio)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * adv
    loss = -torch.minimum(unclipped, clipped).mean()
    metrics = {}
    if logp_ref is not None and kl_coef:
        diff = logp_ref.detach() - logp_new
        kl = (torch.exp(diff) - diff - 1).mean()
        loss = loss + kl_coef * kl
        metrics["kl_ref"] = float(kl.detach())
    with torch.no_grad():
        metrics.update(
            clip_fraction=float(((ratio - 1).abs() > clip_eps).float().mean()),
            # k3 estimate of KL(old || new), as logged by cleanrl / TRL
            approx_kl=float(((ratio - 1) - log_ratio).mean()),
            ratio_mean=float(ratio.mean()),
            ratio_max=float(ratio.max()),
        )
    return LossOutput(loss, metrics)
