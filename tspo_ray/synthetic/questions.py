"""QA records of a haystack video (world.py): four question families, each answerable only from its target frames.

Every family is typed "needle" with target_spans = the segments needed to answer, so R_T is defined for all:
- needle_attribute: "What colour is the {shape}?" about either needle (its shape is unique to it), and "What shape
  is the {colour} object?" about needle B (its colour is unique to it). Target: the needle.
- relation: "What appears right after / before the {colour} {shape}?" about an object that appears once.
  Target: the anchor segment and the neighbouring segment that holds the answer.
- position: "What is shown at the beginning / end of the video?". Target: the first / last segment.
- counting: "How many times does a {colour} {shape} appear?" about a haystack object (1..4 separate appearances);
  options are always "1".."4". Target: every appearance.
Wrong options are things the same video shows elsewhere, neighbours first, so frames from the wrong place lead to
a wrong answer; meta["distractor_segments"] names a segment that shows each one. The option order is shuffled.
meta holds the generator's ground truth for tests and analysis; answerers never read it.
"""
from __future__ import annotations

import random
import string
from dataclasses import dataclass, field

from tspo_ray.synthetic import templates
from tspo_ray.synthetic.world import MAX_RECURRENCE, Segment, VideoPlan

COUNT_OPTIONS = tuple(str(k) for k in range(1, MAX_RECURRENCE + 1))


@dataclass
class Draft:
    """A question before its options are drawn and shuffled."""

    family: str
    form: str  # colour | shape | after | before | beginning | end | count
    question: str
    answer: str
    targets: list[int]  # indices of the segments needed to answer
    witnesses: dict[str, int] = field(default_factory=dict)  # candidate wrong option -> a segment showing it
    preferred: list[str] = field(default_factory=list)  # hard wrong options, used first when available
    truth: dict = field(default_factory=dict)


def _witnesses(segs: tuple[Segment, ...], attr: str, exclude: set[int], answer: str) -> dict[str, int]:
    """Each value of `attr` shown outside `exclude` (and other than the answer) -> the first segment showing it."""
    out: dict[str, int] = {}
    for i, s in enumerate(segs):
        value = getattr(s, attr)
        if i not in exclude and value != answer:
            out.setdefault(value, i)
    return out


def needle_attribute_drafts(plan: VideoPlan) -> list[Draft]:
    segs = plan.segments
    needles = [i for i, s in enumerate(segs) if s.needle]
    drafts = []
    for i in needles:
        n = segs[i]
        near = [segs[j].colour for j in (i - 1, i + 1)]
        drafts.append(Draft("needle_attribute", "colour", templates.NEEDLE_COLOUR.format(shape=n.shape), n.colour,
                            [i], _witnesses(segs, "colour", {i}, n.colour), near, {"subject": n.shape}))
    colours = [s.colour for s in segs]
    for i in needles:
        n = segs[i]
        if colours.count(n.colour) == 1:  # only a colour unique to the needle names it
            near = [segs[j].shape for j in (i - 1, i + 1)]
            drafts.append(Draft("needle_attribute", "shape", templates.NEEDLE_SHAPE.format(colour=n.colour), n.shape,
                                [i], _witnesses(segs, "shape", {i}, n.shape), near, {"subject": n.colour}))
    return drafts


def relation_drafts(plan: VideoPlan, rng: random.Random, limit: int) -> list[Draft]:
    """Questions about what is next to an object that appears once (the anchor): one random direction per anchor,
    and the other direction too for some anchors when there are fewer anchors than `limit`."""
    segs = plan.segments
    names = [s.name for s in segs]
    anchors = [i for i in range(1, len(segs) - 1) if names.count(names[i]) == 1]
    rng.shuffle(anchors)
    asks = [(i, rng.random() < 0.5) for i in anchors]
    asks += [(i, not after) for i, after in asks[: max(0, limit - len(asks))]]
    drafts = []
    for i, after in asks[:limit]:
        a = segs[i]
        j, other_side, further = (i + 1, i - 1, i + 2) if after else (i - 1, i + 1, i - 2)
        tmpl = templates.RELATION_AFTER if after else templates.RELATION_BEFORE
        preferred = [names[k] for k in (other_side, further) if 0 <= k < len(segs)]
        drafts.append(Draft("relation", "after" if after else "before",
                            tmpl.format(colour=a.colour, shape=a.shape), names[j], sorted([i, j]),
                            _witnesses(segs, "name", {i}, names[j]), preferred,
                            {"subject": a.name, "anchor_segment": i, "answer_segment": j}))
    return drafts


def position_drafts(plan: VideoPlan) -> list[Draft]:
    segs = plan.segments
    first, last = 0, len(segs) - 1
    return [
        Draft("position", "beginning", templates.POSITION_BEGINNING, segs[first].name, [first],
              _witnesses(segs, "name", {first}, segs[first].name), [segs[1].name, segs[last].name]),
        Draft("position", "end", templates.POSITION_END, segs[last].name, [last],
              _witnesses(segs, "name", {last}, segs[last].name), [segs[last - 1].name, segs[first].name]),
    ]


def counting_drafts(plan: VideoPlan, rng: random.Random, limit: int) -> list[Draft]:
    """Counting questions about haystack objects, spread over as many different answers as the video allows."""
    segs = plan.segments
    by_name: dict[str, list[int]] = {}
    for i, s in enumerate(segs):
        if not s.needle:
            by_name.setdefault(s.name, []).append(i)
    by_count: dict[int, list[str]] = {}
    for name, occ in by_name.items():
        by_count.setdefault(len(occ), []).append(name)
    for names in by_count.values():
        rng.shuffle(names)
    order = sorted(by_count)
    rng.shuffle(order)
    picked = []
    while len(picked) < limit and any(by_count.values()):  # round-robin over the counts
        for c in order:
            if by_count[c] and len(picked) < limit:
                picked.append(by_count[c].pop())
    drafts = []
    for name in picked:
        occ = by_name[name]
        s = segs[occ[0]]
        drafts.append(Draft("counting", "count", templates.COUNTING.format(colour=s.colour, shape=s.shape),
                            str(len(occ)), occ, truth={"subject": name, "count": len(occ)}))
    return drafts


def draw_options(draft: Draft, rng: random.Random, n: int = 4) -> list[str] | None:
    """The answer and n-1 wrong options (hard ones first, then at random), shuffled; None if too few exist."""
    if draft.form == "count":
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
    if draft.form != "count":
        meta["distractor_segments"] = {o: draft.witnesses[o] for o in options if o != draft.answer}
    return {
        "id": qid, "video": video_rel, "question": draft.question, "options": options,
        "answer": string.ascii_uppercase[options.index(draft.answer)], "type": "needle",
        "target_spans": [list(plan.segments[i].span) for i in draft.targets], "duration_s": plan.duration_s,
        "meta": meta,
    }


def make_questions(plan: VideoPlan, video_rel: str, rng: random.Random, max_relation: int = 4,
                   max_counting: int = 3) -> list[dict]:
    """All QA records of one video: 2-3 needle_attribute, up to max_relation relation, 2 position and up to
    max_counting counting questions. Deterministic for an rng state."""
    drafts = (needle_attribute_drafts(plan) + relation_drafts(plan, rng, max_relation) + position_drafts(plan)
              + counting_drafts(plan, rng, max_counting))
    records = []
    for draft in drafts:
        options = draw_options(draft, rng)
        if options is not None:
            records.append(to_record(plan, video_rel, f"{plan.video_id}-q{len(records):02d}", draft, options))
    return records
