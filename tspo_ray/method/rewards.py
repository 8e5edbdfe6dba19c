"""TSPO rewards (R_A, R_T and the paper's totals) and the option parsing R_A reads. Pure functions; no Ray, no models."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from tspo_ray.method.answer_parsing import parse_option

__all__ = ["parse_option", "answer_reward", "temporal_reward", "total_reward", "RewardResult"]


@dataclass(frozen=True)
class RewardResult:
    """The rewards of one group's G sets."""

    rewards: torch.Tensor  # [G] total reward of each set
    r_answer: torch.Tensor  # [G]
    r_temporal: torch.Tensor  # [G]
    parse_failures: int = 0


def answer_reward(predicted: str | None, answer: str) -> float:
    """R_A = 1[predicted option = answer]; an unparsed output scores 0."""
    return float(predicted is not None and predicted.upper() == answer.upper())


def temporal_reward(timestamps_s: Sequence[float], target_spans: Sequence[Sequence[float]]) -> float:
    """R_T = (selected frames inside any target span) / T_s; spans are closed [start_s, end_s]."""
    ts = np.asarray(timestamps_s, dtype=np.float64)
    if ts.size == 0:
        return 0.0
    inside = np.zeros(ts.shape, dtype=bool)
    for start, end in target_spans:
        inside |= (ts >= start) & (ts <= end)
    return float(inside.mean())


def total_reward(question_type: str, r_answer: float, r_temporal: float) -> float:
    """The paper's total: general items R_A + 1, needle items R_A + R_T."""
    if question_type == "needle":
        return r_answer + r_temporal
    if question_type == "general":
        return r_answer + 1.0
    raise ValueError(f"unknown question type {question_type!r}")
