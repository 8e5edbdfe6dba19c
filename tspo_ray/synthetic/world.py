"""Haystack videos: timelines of event segments with short needle events, and their QA records.

A video is a sequence of segments, each showing one object (shape x colour) on a background, optionally drifting.
Haystack objects recur 1-4 times (never in adjacent segments); two short needle events show shapes that appear
nowhere else, the second in a colour that appears nowhere else. Questions (templates.py) are answerable only from
the right frames, and their wrong options are things visible elsewhere in the same video.
All question families are typed "needle" with target spans (the frames needed to answer), so R_T is defined.
"""
from __future__ import annotations

import random
import string
from dataclasses import asdict, dataclass

from tspo_ray.synthetic import templates
from tspo_ray.synthetic.render import BACKGROUNDS, COLOURS, SHAPES

COLOUR_NAMES = list(COLOURS)


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float
    shape: str
    colour: str
    background: str
    x0: float  # horizontal drift from x0 to x1 over the segment
    x1: float
    needle: bool = False

    @property
    def name(self) -> str:
        return f"a {self.colour} {self.shape}"


@dataclass(frozen=True)
class VideoPlan:
    video_id: str
    duration_s: float
    segments: tuple[Segment, ...]

    def to_dict(self) -> dict:
        return {"video_id": self.video_id, "duration_s": self.duration_s, "segments": [asdict(s) for s in self.segments]}


def _no_adjacent_repeats(items: list, rng: random.Random, tries: int = 200) -> list:
    for _ in range(tries):
        rng.shuffle(items)
        if all(a != b for a, b in zip(items, items[1:])):
            return items
    raise RuntimeError("could not arrange segments without adjacent repeats")


def plan_video(video_id: str, rng: random.Random, min_s: float = 120, max_s: float = 480,
               seg_s: tuple[float, float] = (10, 28), needle_s: tuple[float, float] = (3, 5)) -> VideoPlan:
    """A random timeline: haystack segments of seg_s seconds and two needles of needle_s seconds."""
    duration = rng.uniform(min_s, max_s)
    hay_shapes = rng.sample(SHAPES, 4)
    needle_shapes = [s for s in SHAPES if s not in hay_shapes]
    rng.shuffle(needle_shapes)
    unique_colour = rng.choice(COLOUR_NAMES)
    hay_colours = [c for c in COLOUR_NAMES if c != unique_colour]
    n_needle_time = sum(rng.uniform(*needle_s) for _ in range(2))
    n_hay = max(5, round((duration - n_needle_time) / (sum(seg_s) / 2)))
    # haystack objects and how often each recurs (1..4)
    combos = [(s, c) for s in hay_shapes for c in hay_colours]
    rng.shuffle(combos)
    slots: list[tuple[str, str]] = []
    for combo in combos:
        if len(slots) >= n_hay:
            break
        # at most a third of the segments per object, so that no object must fill adjacent segments
        slots.extend([combo] * min(rng.randint(1, min(4, max(1, n_hay // 3))), n_hay - len(slots)))
    order = _no_adjacent_repeats(slots, rng)
    needle_colour = rng.choice(hay_colours)
    needles = [(needle_shapes[0], needle_colour), (needle_shapes[1], unique_colour)]
    # needles go between haystack segments, away from the first and last segment
    positions = sorted(rng.sample(range(1, len(order)), 2))
    timeline: list[tuple[tuple[str, str], bool]] = [(o, False) for o in order]
    for offset, (pos, needle) in enumerate(zip(positions, needles)):
        timeline.insert(pos + offset, (needle, True))
    # durations: needles short, haystack segments scaled to fill the video
    needle_lengths = [rng.uniform(*needle_s) for _ in range(2)]
    hay_raw = [rng.uniform(*seg_s) for _ in order]
    scale = (duration - sum(needle_lengths)) / sum(hay_raw)
    segments, t, ni, hi = [], 0.0, 0, 0
    for (shape, colour), is_needle in timeline:
        if is_needle:
            length, ni = needle_lengths[ni], ni + 1
        else:
            length, hi = hay_raw[hi] * scale, hi + 1
        x0 = rng.uniform(0.3, 0.7)
        x1 = x0 if rng.random() < 0.5 else rng.uniform(0.3, 0.7)
        segments.append(Segment(round(t, 3), round(t + length, 3), shape, colour, rng.choice(list(BACKGROUNDS)),
                                round(x0, 3), round(x1, 3), is_needle))
        t += length
    return VideoPlan(video_id, round(t, 3), tuple(segments))


# --- questions ------------------------------------------------------------------------------------------------------

def _record(plan: VideoPlan, video_rel: str, qid: str, family: str, question: str, answer: str,
            distractors: list[str], spans: list[tuple[float, float]], rng: random.Random, truth: dict) -> dict:
    options = [answer] + distractors[:3]
    rng.shuffle(options)
    return {
        "id": qid, "video": video_rel, "question": question, "options": options,
        "answer": string.ascii_uppercase[options.index(answer)], "type": "needle",
        "target_spans": [[s, e] for s, e in spans], "duration_s": plan.duration_s,
        "meta": {"family": family, **truth},
    }


def make_questions(plan: VideoPlan, video_rel: str, rng: random.Random) -> list[dict]:
    segs = plan.segments
    names = sorted({s.name for s in segs})
    span = lambda s: (s.start_s, s.end_s)
    out: list[dict] = []
    qn = iter(range(100))

    def add(family, question, answer, pool, spans, **truth):
        distractors = [x for x in dict.fromkeys(pool) if x != answer]
        if len(distractors) < 3:
            return
        rng.shuffle(distractors)
        out.append(_record(plan, video_rel, f"{plan.video_id}-q{next(qn):02d}", family, question, answer,
                           distractors, spans, rng, {**truth, "distractors_visible": distractors[:3]}))

    needles = [s for s in segs if s.needle]
    colours_seen = [s.colour for s in segs]
    shapes_seen = [s.shape for s in segs]
    # needle attribute
    n1, n2 = needles
    add("needle_attribute", templates.NEEDLE_COLOUR.format(shape=n1.shape), n1.colour, colours_seen, [span(n1)])
    add("needle_attribute", templates.NEEDLE_SHAPE.format(colour=n2.colour), n2.shape, shapes_seen, [span(n2)])
    # temporal relation around events that occur once (the needles, and one haystack object seen once)
    once = [i for i, s in enumerate(segs) if [x.name for x in segs].count(s.name) == 1 and 0 < i < len(segs) - 1]
    rng.shuffle(once)
    for i in once[:3]:
        anchor = segs[i]
        after = rng.random() < 0.5
        other = segs[i + 1] if after else segs[i - 1]
        tmpl = templates.RELATION_AFTER if after else templates.RELATION_BEFORE
        add("relation", tmpl.format(colour=anchor.colour, shape=anchor.shape), other.name,
            [n for n in names if n != anchor.name], sorted([span(anchor), span(other)]))
    # position
    add("position", templates.POSITION_BEGINNING, segs[0].name, names, [span(segs[0])])
    add("position", templates.POSITION_END, segs[-1].name, names, [span(segs[-1])])
    # counting: haystack objects by how often they occur
    counts: dict[str, list[Segment]] = {}
    for s in segs:
        counts.setdefault(s.name, []).append(s)
    candidates = [n for n, occ in counts.items() if not occ[0].needle]
    rng.shuffle(candidates)
    for name in candidates[:2]:
        occ = counts[name]
        c = len(occ)
        colour, shape = name[2:].split(" ")
        add("counting", templates.COUNTING.format(colour=colour, shape=shape), str(c),
            [str(k) for k in range(1, 6)], [span(s) for s in occ], count=c)
    return out
