"""QA records of a haystack video (world.py) from question families (families.py): every question a family's
programs can ask about the video, within its constraints, then a sample of them.

For each variant of a family, every binding of its slots to what the video shows (each distinct colour, shape or
object) is tried: the program runs on the video's true timeline, and the binding is kept when the program answers
and the constraints hold. A family keeps `per_video` of them at random (all when absent), spread over their answers
when it asks for balance. Every question is typed "needle" with target_spans = the segments its program needed
(R_T is defined for all). Wrong options are things the same video shows elsewhere, those next to the answer and
to the object the question names first, so frames from the wrong place lead to a wrong answer; meta
["distractor_segments"] names a segment that shows each one. Counting options are always "1".."4". The option order
is shuffled. meta holds the generator's ground truth for tests and analysis; answerers never read it.
"""
from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from typing import Sequence

from tspo_ray.synthetic.families import Family, NoEvidence, TrueTimeline, Variant, run_program
from tspo_ray.synthetic.world import MAX_RECURRENCE, VideoPlan

COUNT_OPTIONS = tuple(str(k) for k in range(1, MAX_RECURRENCE + 1))


@dataclass
class Draft:
    """A question before its options are drawn and shuffled."""

    family: str
    form: str
    question: str
    answer: str
    targets: list[int]  # indices of the segments needed to answer
    witnesses: dict[str, int] = field(default_factory=dict)  # candidate wrong option -> a segment showing it
    preferred: list[str] = field(default_factory=list)  # hard wrong options, used first when available
    truth: dict = field(default_factory=dict)


def _value(plan: VideoPlan, i: int, kind: str) -> str:
    s = plan.segments[i]
    return s.name if kind == "object" else getattr(s, kind)


def _witnesses(plan: VideoPlan, kind: str, exclude: set[int], answer: str) -> dict[str, int]:
    """Each value of `kind` shown outside `exclude` (and other than the answer) -> the first segment showing it."""
    out: dict[str, int] = {}
    for i in range(len(plan.segments)):
        value = _value(plan, i, kind)
        if i not in exclude and value != answer:
            out.setdefault(value, i)
    return out


def _bindings(variant: Variant, plan: VideoPlan) -> list[dict[str, str]]:
    """Every assignment of the variant's slots to values the video shows together in one segment."""
    if not variant.slots:
        return [{}]
    seen = {tuple(getattr(s, a) for a in variant.slots) for s in plan.segments}
    return [dict(zip(variant.slots, values)) for values in sorted(seen)]


def _holds(variant: Variant, timeline: TrueTimeline, slots: dict, result) -> bool:
    c = variant.constraints
    found = [i for i, e in enumerate(timeline.events) if slots and all(getattr(e, a) == v for a, v in slots.items())]
    if "appearances" in c and len(found) != c["appearances"]:
        return False
    if "needle" in c and any(timeline.events[i].needle != c["needle"] for i in found):
        return False
    if "answer_needle" in c and any(timeline.events[i].needle != c["answer_needle"] for i in result.events):
        return False
    return True


def family_drafts(family: Family, plan: VideoPlan, rng: random.Random) -> list[Draft]:
    """The drafts a family keeps for a video (see the module docstring). Deterministic for an rng state."""
    timeline = TrueTimeline.of_plan(plan)
    drafts = []
    for variant in family.variants:
        for slots in _bindings(variant, plan):
            try:
                result = run_program(variant.program, timeline, slots)
            except NoEvidence:
                continue
            if not _holds(variant, timeline, slots, result):
                continue
            drafts.append(_draft(family, variant, plan, slots, result, rng))
    rng.shuffle(drafts)
    if family.balance:  # round-robin over the answers
        by_answer: dict[str, list[Draft]] = {}
        for d in drafts:
            by_answer.setdefault(d.answer, []).append(d)
        drafts = [d for group in _round_robin(list(by_answer.values())) for d in group]
    return drafts if family.per_video is None else drafts[: family.per_video]


def _round_robin(groups: list[list[Draft]]) -> list[list[Draft]]:
    out = []
    while any(groups):
        out.append([g.pop(0) for g in groups if g])
    return out


def _draft(family: Family, variant: Variant, plan: VideoPlan, slots: dict, result, rng: random.Random) -> Draft:
    answer = str(result.value)
    wording = rng.choice(variant.wordings)
    truth = {"slots": slots, "answer_segments": list(result.events)}
    if variant.answer == "count":
        return Draft(family.name, variant.form, wording.format(**slots), answer, list(result.touched), truth=truth)
    kind = variant.answer
    targets = set(result.touched)
    near = [j for i in result.events for j in (i - 1, i + 1)] + [j for j in (min(targets) - 1, min(targets) + 1)]
    preferred = [_value(plan, j, kind) for j in near if 0 <= j < len(plan.segments)]
    witnesses = _witnesses(plan, kind, set(result.events), answer)
    return Draft(family.name, variant.form, wording.format(**slots), answer, sorted(targets), witnesses,
                 [p for p in preferred if p != answer], truth)


def draw_options(draft: Draft, rng: random.Random, n: int = 4) -> list[str] | None:
    """The answer and n-1 wrong options (hard ones first, then at random), shuffled; None if too few exist."""
    if draft.family and not draft.witnesses and draft.answer in COUNT_OPTIONS:
        options = list(COUNT_OPTIONS)
    else:
        pool = [o for o in draft.witnesses if o != draft.answer]
        hard = [o for o in dict.fromkeys(draft.preferred) if o in pool][: n - 2]  # leave room for a random one
        rest = [o for o in pool if o not in hard]
        if len(hard) + len(rest) < n - 1:
            return None
        options = [draft.answer] + hard + rng.sample(rest, n - 1 - len(hard))
    rng.shuffle(options)
    return options


def to_record(plan: VideoPlan, video_rel: str, qid: str, draft: Draft, options: list[str]) -> dict:
    """A QA record (tspo_ray.data.records schema) with the ground truth in meta."""
    meta = {"family": draft.family, "form": draft.form, "answer_text": draft.answer, "segments": draft.targets,
            **draft.truth}
    if draft.witnesses:
        meta["distractor_segments"] = {o: draft.witnesses[o] for o in options if o != draft.answer}
    return {
        "id": qid, "video": video_rel, "question": draft.question, "options": options,
        "answer": string.ascii_uppercase[options.index(draft.answer)], "type": "needle",
        "target_spans": [list(plan.segments[i].span) for i in draft.targets], "duration_s": plan.duration_s,
        "meta": meta,
    }


def make_questions(plan: VideoPlan, video_rel: str, rng: random.Random, families: Sequence[Family]) -> list[dict]:
    """All QA records of one video, family by family in the given order. Deterministic for an rng state."""
    records = []
    for family in families:
        for draft in family_drafts(family, plan, rng):
            options = draw_options(draft, rng)
            if options is not None:
                records.append(to_record(plan, video_rel, f"{plan.video_id}-q{len(records):02d}", draft, options))
    return records
