"""Selection from features: the scores a scorer ranks by (the agent's S, CLIP's cosine) and the positions a
selector name picks with them. Pure tensor code; tspo_ray.selector builds the features and the records around it."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tspo_ray.method import selection_methods


def clip_scores(frame_features: torch.Tensor, text_feature: torch.Tensor) -> torch.Tensor:
    """cos(F_f, F_t) per candidate: [T, D], [D] -> [T]."""
    return F.cosine_similarity(frame_features, text_feature[None], dim=-1)


def selector_scores(frame_features: torch.Tensor, text_feature: torch.Tensor, scorer: str | None,
                    agent=None) -> torch.Tensor | None:
    """The scores a scorer ranks by: the agent's S (eq. 3, before the temperature), CLIP's cosine, or None."""
    if scorer is None:
        return None
    if scorer == "clip":
        return clip_scores(frame_features, text_feature)
    if scorer == "agent":
        if agent is None:
            raise ValueError("the agent scorer needs agent weights (a tspo-ray checkpoint or a TSPO-0.4B folder); "
                             "this selector has a CLIP only: use clip:* or uniform")
        with torch.no_grad():
            return agent(frame_features, text_feature)
    raise ValueError(f"unknown scorer {scorer!r}; choose one of {selection_methods.SCORERS}")


def select_positions(frame_features: torch.Tensor, text_feature: torch.Tensor, selector: str, k: int, agent=None,
                     inference_mode: str = "top-k", **params) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(candidate positions in temporal order, the scores of all candidates or None) for a selector name."""
    scorer, method = selection_methods.parse_selector(selector)
    method = method or inference_mode
    if method in selection_methods.SET_METHODS:
        return set_policy_selection(frame_features, text_feature, k, agent)
    scores = selector_scores(frame_features, text_feature, scorer, agent)
    params = {**method_inputs(method, scorer, frame_features, text_feature, agent), **params}
    positions = selection_methods.select(method, frame_features.shape[0], k, on_cpu(scores), **on_cpu(params))
    return positions, scores


def on_cpu(x):
    """Scores (or a dict of tensors) on the CPU: the selection methods mix their own CPU index tensors with the
    scores' (T floats, O(T) work), so scores an accelerator computed come over first."""
    if isinstance(x, dict):
        return {k: on_cpu(v) for k, v in x.items()}
    return x.cpu() if isinstance(x, torch.Tensor) else x


def set_policy_selection(frame_features: torch.Tensor, text_feature: torch.Tensor, k: int, agent,
                         policy: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The greedy decode of a set-aware agent's own policy (tspo_ray.method.sequential): (positions, S).
    policy: its (S, K, lambda) for these features, when already computed (select_many batches them)."""
    from tspo_ray.method.sequential import sequential_greedy

    if agent is None or not hasattr(agent, "set_policy"):
        raise ValueError("greedy is the selection of a set-aware agent kind (agent.kind=scan); this agent scores "
                         "frames independently: use agent:top-k, agent:events, ...")
    if policy is None:
        with torch.no_grad():
            policy = agent.set_policy(frame_features, text_feature)
    scores, kernel, penalty = policy
    return sequential_greedy(scores, kernel, penalty, k), scores


def method_inputs(method: str, scorer: str | None, frame_features: torch.Tensor, text_feature: torch.Tensor,
                  agent=None) -> dict:
    """What a method reads beside the scores. The anchors method places the agent's best frames and spends the rest
    of the budget by CLIP's cosines; as many as the agent was trained to draw (policy.anchors, recorded with its
    checkpoint: `agent.anchors`). The chain method follows the candidates' events, found from their features."""
    if method == "anchors" and scorer == "agent":
        return {"base_scores": clip_scores(frame_features, text_feature),
                "anchors": int(getattr(agent, "anchors", selection_methods.ANCHORS))}
    if method == "chain":
        from tspo_ray.method.scan_agent import fixed_event_index

        return {"event_index": fixed_event_index(frame_features.float())}
    return {}
