"""Option parsing and TSPO rewards (R_A, R_T and the paper's totals). Pure functions; no Ray, no models."""
from __future__ import annotations

import re
import string
from typing import Sequence

import numpy as np

# Explicit answer statements first ("The answer is B", "Answer: b", "option C"), then a letter that starts the
# output ("B", "(B)", "B.", "B) text"), then a lone bracketed letter anywhere ("... (C) ...").
_STATEMENT = re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*[:\-]?\s*\(?([A-Za-z])\b\)?", re.IGNORECASE)
_LEADING = re.compile(r"^\s*[\(\[]?([A-Za-z])(?:[\)\]\.:,]|\s|$)")
_BRACKETED = re.compile(r"[\(\[]([A-Za-z])[\)\]]")


def parse_option(text: str, num_options: int) -> str | None:
    """The option letter an answer names, or None when it names none of the valid letters.

    Accepts "B", "(B)", "B.", "B) text", "The answer is B", "Answer: b". Lower-case letters count only in an
    explicit statement or alone, so the article "a" in "a red star" is never read as option A.
    """
    if not isinstance(text, str):
        return None
    valid = string.ascii_uppercase[:num_options]
    stripped = text.strip()
    if len(stripped) == 1:
        return stripped.upper() if stripped.upper() in valid else None
    m = _STATEMENT.search(stripped)
    if m and m.group(1).upper() in valid:
        return m.group(1).upper()
    m = _LEADING.match(stripped)
    if m and m.group(1) in valid:  # upper case only: "a red star" must not parse as A
        return m.group(1)
    m = _BRACKETED.search(stripped)
    if m and m.group(1).upper() in valid:
        return m.group(1).upper()
    return None


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
