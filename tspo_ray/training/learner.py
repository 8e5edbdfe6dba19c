"""The learner step: advantages over each group, then clipped GRPO epochs on the agent. No Ray here."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from tspo_ray.data.items import FeatureItem
from tspo_ray.method import grpo, sampling, sequential
from tspo_ray.training.rollout import Group, same_shape


def batch_to_device(items: Sequence[FeatureItem], groups: Sequence[Group],
                    device: torch.device | str) -> tuple[list[FeatureItem], list[Group]]:
    """The tensors the update reads (features, draws, old log-probs, rewards) on the agent's device."""
    move = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t  # noqa: E731
    items = [dataclasses.replace(it, frame_features=move(it.frame_features), text_feature=move(it.text_feature))
             for it in items]
    groups = [dataclasses.replace(g, draws=move(g.draws), logp_old=move(g.logp_old), rewards=move(g.rewards),
                                  r_answer=move(g.r_answer), r_temporal=move(g.r_temporal)) for g in groups]
    return items, groups


def group_logprob(agent: torch.nn.Module, item: FeatureItem, group: Group,
                  likelihood: sampling.LikelihoodKind) -> tuple[torch.Tensor, torch.Tensor]:
    """(S / tau, the likelihood terms of the group's draws) under the agent, by the policy the group was drawn with:
    a set-aware agent's sequential policy (tspo_ray.method.sequential) unless the sets were built around anchors."""
    if hasattr(agent, "set_policy") and group.sets is None:
        scores, kernel, penalty = agent.set_policy(item.frame_features, item.text_feature)
        return scores / group.tau, sequential.sequential_logprob(scores, kernel, penalty, group.tau, group.draws)
    logits = agent(item.frame_features, item.text_feature) / group.tau
    return logits, sampling.set_logprob(logits, group.draws, likelihood)


def batch_logprobs(agent: torch.nn.Module, items: Sequence[FeatureItem], groups: Sequence[Group],
                   likelihood: sampling.LikelihoodKind) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """group_logprob of each (item, group), with the agent's scores taken in ONE batched pass: the groups drawn by
    the plain policy as videos packed end to end along T (each seeing only its own frames), those drawn by a
    set-aware agent's sequential policy through its set_policies. Equal to one at a time up to float rounding: one
    call over 64 videos of 128 candidates costs a fraction of 64 calls, and the update is a step's critical path on
    Ray."""
    sequential_policy = hasattr(agent, "set_policy")
    by_policy = [i for i, g in enumerate(groups) if sequential_policy and g.sets is None]
    plain = sorted(set(range(len(groups))) - set(by_policy))
    out: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(groups)
    if len(plain) > 1 and all(items[i].frame_features.dim() == 2 for i in plain):
        lengths = [int(items[i].frame_features.shape[0]) for i in plain]
        scores = agent(torch.cat([items[i].frame_features for i in plain]),
                       torch.stack([items[i].text_feature for i in plain]), lengths=lengths).split(lengths)
        for i, s in zip(plain, scores):
            logits = s / groups[i].tau
            out[i] = logits, sampling.set_logprob(logits, groups[i].draws, likelihood)
    if len(by_policy) > 1 and hasattr(agent, "set_policies"):
        parts, penalty = agent.set_policies([items[i].frame_features for i in by_policy],
                                            [items[i].text_feature for i in by_policy])
        policy = dict(zip(by_policy, parts))  # group -> (S, K)
        shapes = {i: (*groups[i].draws.shape, int(items[i].frame_features.shape[0])) for i in by_policy}
        for members in same_shape(by_policy, shapes).values():  # the groups of one shape in one pass
            scores = torch.stack([policy[i][0] for i in members])
            kernel = type(parts[0][1]).stack([policy[i][1] for i in members])
            tau = torch.tensor([groups[i].tau for i in members], dtype=scores.dtype, device=scores.device)
            logp = sequential.sequential_logprob(scores[:, None, None, :], kernel, penalty, tau[:, None, None, None],
                                                 torch.stack([groups[i].draws for i in members]))
            for row, i in enumerate(members):
                out[i] = scores[row] / groups[i].tau, logp[row]
    return [o if o is not None else group_logprob(agent, it, g, likelihood) for o, it, g in zip(out, items, groups)]


def learner_step(
    agent: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    items: Sequence[FeatureItem],
    groups: Sequence[Group],
    *,
    likelihood: sampling.LikelihoodKind,
    clip_eps: float,
    epochs: int,
    current_version: int,
    filter_zero_variance: bool = True,
    kl_coef: float = 0.0,
    ref_agent: torch.nn.Module | None = None,
    max_grad_norm: float = 0.0,
    advantage_norm: str = "group",
    temporal_weight: float = 1.0,
) -> dict[str, float]:
    """One update on a batch of answered groups (items[i] belongs to groups[i]); returns the step's metrics.

    Each group's likelihood is taken at the temperature it was sampled with (`group.tau`), so the importance ratio
    compares the same distribution family even when a stale group was drawn under an earlier point of the schedule."""
    if len(items) != len(groups) or not groups:
        raise ValueError("learner_step needs one item per group and at least one group")
    rewards = torch.stack([g.rewards for g in groups])  # [N, G]: the paper's totals, as logged
    r_answer, r_temporal = torch.stack([g.r_answer for g in groups]), torch.stack([g.r_temporal for g in groups])
    learned = grpo.learning_rewards(r_answer, r_temporal, temporal_weight)  # at w = 1: the paper's advantages
    if advantage_norm == "family":  # grpo.family_advantages: each group scaled by its family's reward spread
        adv = grpo.family_advantages(learned, [str(getattr(it.record, "family", None) or "") for it in items])
    else:
        adv = grpo.group_advantages(learned)
    keep = [i for i in range(len(groups)) if not (filter_zero_variance and adv.zero_variance[i])]
    metrics = {
        "reward": float(rewards.mean()),
        "r_answer": float(r_answer.mean()),
        "r_temporal": float(r_temporal.mean()),
        "zero_variance_fraction": float(adv.zero_variance.float().mean()),
        "staleness": float(sum(current_version - g.version for g in groups) / len(groups)),
        "parse_failure_rate": float(sum(g.parse_failures for g in groups) / rewards.numel()),
        "tau": float(sum(g.tau for g in groups) / len(groups)),
        "groups_used": float(len(keep)),
    }
    metrics["accuracy"] = metrics["r_answer"]
    if not keep:  # nothing to learn from: report the same keys so metric curves have no holes
        with torch.no_grad():
            entropy = torch.stack([sampling.frame_entropy(agent(it.frame_features, it.text_feature) / g.tau)
                                   for it, g in zip(items, groups)])
        metrics.update(loss=0.0, clip_fraction=0.0, clip_fraction_first_epoch=0.0, approx_kl=0.0,
                       ratio_mean=1.0, ratio_max=1.0, entropy=float(entropy.mean()))
        return metrics
    epoch_metrics: list[dict[str, float]] = []
    for _ in range(epochs):
        logp_new, logp_old, logp_ref, advantages, entropies = [], [], [], [], []
        kept_items, kept_groups = [items[i] for i in keep], [groups[i] for i in keep]
        for i, (logits, logp) in zip(keep, batch_logprobs(agent, kept_items, kept_groups, likelihood)):
            logp_new.append(logp)
            logp_old.append(groups[i].logp_old)
            advantages.append(adv.values[i])
            entropies.append(sampling.frame_entropy(logits.detach()))
        if ref_agent is not None and kl_coef:
            with torch.no_grad():
                logp_ref = [lp for _, lp in batch_logprobs(ref_agent, kept_items, kept_groups, likelihood)]
        out = grpo.clipped_surrogate(
            torch.cat(logp_new), torch.cat(logp_old), torch.cat(advantages), clip_eps,
            logp_ref=torch.cat(logp_ref) if logp_ref else None, kl_coef=kl_coef,
        )
        optimizer.zero_grad()
        out.loss.backward()
        if max_grad_norm:
            out.metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(agent.parameters(), max_grad_norm))
        optimizer.step()
        out.metrics["loss"] = float(out.loss.detach())
        out.metrics["entropy"] = float(torch.stack(entropies).mean())
        epoch_metrics.append(out.metrics)
    # Clip fraction and approx-KL are most telling on the last epoch (the first is on-policy when max_lag = 0).
    metrics.update({k: v for k, v in epoch_metrics[-1].items()})
    metrics["clip_fraction_first_epoch"] = epoch_metrics[0]["clip_fraction"]
    return metrics
