"""Haystack timelines: a video is a sequence of event segments, two of them short needle events.

Each segment shows one object (shape x colour) on a background, drifting slowly. The objects the questions are
about are always alone in their segment, so a question never has two true answers.
- Haystack segments (seg_s seconds) show objects drawn from 4 of the 6 shapes and 5 of the 6 colours; an object
  recurs 1-4 times, never in adjacent segments, so every appearance is a separate event.
- Two needles (needle_s seconds) sit between haystack segments, never first or last and never adjacent:
  needle A has a shape that appears nowhere else (its colour is a haystack colour), needle B has the other unused
  shape and the one colour that appears nowhere else.
- Adjacent segments have different backgrounds.
Segment boundaries lie half-way between two frames (k + 0.5) / fps, so every frame belongs to exactly one
segment and a span [start_s, end_s] holds exactly the frames that show its segment (closed or open alike).
Pure: a plan is a function of the rng state and the settings; nothing here renders or writes.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import ClassVar

from pydantic import ConfigDict, Field, model_validator

from tspo_ray.settings import ConfigError, Settings
from tspo_ray.synthetic.render import BACKGROUNDS, COLOURS, SHAPES

COLOUR_NAMES = tuple(COLOURS)
HAY_SHAPES = 4  # the other SHAPES - HAY_SHAPES shapes are the needles'
MAX_RECURRENCE = 4  # counting answers are 1..MAX_RECURRENCE


class WorldSettings(Settings):
    """Everything that shapes a video besides its seed; stored in the manifest and in each video's fingerprint."""

    model_config = ConfigDict(frozen=True)
    label: ClassVar[str] = "world"
    fps: int = Field(2, ge=1)
    """Frames per second of the written videos."""
    size: int = Field(128, ge=16)
    """Frame side in pixels."""
    min_s: float = Field(120.0, gt=0)
    """Shortest video, seconds."""
    max_s: float = Field(480.0, gt=0)
    """Longest video, seconds."""
    seg_min_s: float = Field(8.0, gt=0)
    """Shortest haystack segment before scaling to the duration, seconds."""
    seg_max_s: float = Field(20.0, gt=0)
    """Longest haystack segment before scaling to the duration, seconds."""
    needle_min_s: float = Field(2.0, gt=0)
    """Shortest needle event, seconds."""
    needle_max_s: float = Field(6.0, gt=0)
    """Longest needle event, seconds."""

    @model_validator(mode="after")
    def _consistent(self) -> "WorldSettings":
        for lo, hi, name in ((self.min_s, self.max_s, "max_s"), (self.seg_min_s, self.seg_max_s, "seg_max_s"),
                             (self.needle_min_s, self.needle_max_s, "needle_max_s")):
            if not lo <= hi:
                raise ConfigError(f"{name}: bad range [{lo}, {hi}]")
        if self.needle_max_s >= self.seg_min_s:
            raise ConfigError("needle_max_s: needles must be shorter than haystack segments")
        if self.min_s < 7 * self.needle_max_s:  # two needles and five haystack segments at least as long
            raise ConfigError(f"min_s: {self.min_s} is too short for needles of up to {self.needle_max_s} s")
        return self


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float
    shape: str
    colour: str
    background: str
    x0: float  # the object's centre drifts from (x0, y0) to (x1, y1) over the segment (fractions of the side)
    y0: float
    x1: float
    y1: float
    scale: float  # radius as a fraction of the side
    needle: bool = False

    @property
    def name(self) -> str:
        """The object as options name it: 'a red star'."""
        return f"a {self.colour} {self.shape}"

    @property
    def span(self) -> tuple[float, float]:
        return (self.start_s, self.end_s)


@dataclass(frozen=True)
class VideoPlan:
    video_id: str
    duration_s: float
    num_frames: int
    fps: int
    segments: tuple[Segment, ...]

    def to_dict(self) -> dict:
        return {"video_id": self.video_id, "duration_s": self.duration_s, "num_frames": self.num_frames,
                "fps": self.fps, "segments": [asdict(s) for s in self.segments]}

    @classmethod
    def from_dict(cls, raw: dict) -> "VideoPlan":
        return cls(raw["video_id"], raw["duration_s"], raw["num_frames"], raw["fps"],
                   tuple(Segment(**s) for s in raw["segments"]))


def arrange_without_repeats(counts: dict[str, int], rng: random.Random) -> list[str]:
    """A random order of the multiset `counts` with no two equal neighbours (raises when none exists).

    Greedy, weighted by what is left; an item holding more than half of what is left must go now.
    """
    left = {k: v for k, v in counts.items() if v > 0}
    total = sum(left.values())
    if left and max(left.values()) * 2 > total + 1:
        raise ValueError(f"no order without adjacent repeats exists for counts {counts}")
    out: list[str] = []
    while total:
        allowed = [k for k in left if left[k] and (not out or k != out[-1])]
        urgent = [k for k in allowed if left[k] * 2 > total]
        pick = urgent[0] if urgent else rng.choices(allowed, weights=[left[k] for k in allowed])[0]
        out.append(pick)
        left[pick] -= 1
        total -= 1
    return out


def haystack_objects(shapes: list[str], colours: list[str], rng: random.Random) -> list[str]:
    """Every shape x colour as "colour shape", in a random order whose first len(colours) objects differ in colour
    and cycle through the shapes, so that even a short video shows most colours and shapes (wrong options for the
    attribute questions must be visible in the video)."""
    colours, shapes = rng.sample(colours, len(colours)), rng.sample(shapes, len(shapes))
    lead = [f"{c} {shapes[k % len(shapes)]}" for k, c in enumerate(colours)]
    rest = [f"{c} {sh}" for sh in shapes for c in colours if f"{c} {sh}" not in lead]
    rng.shuffle(rest)
    return lead + rest


def recurrence_counts(objects: list[str], n_slots: int, rng: random.Random, min_objects: int = 5) -> dict[str, int]:
    """How often each haystack object appears, filling exactly n_slots: 1..MAX_RECURRENCE times, at most a third
    of the slots (so that an order without adjacent repeats always exists), and at least min_objects distinct
    objects (the first ones of `objects`) where the slots allow."""
    cap = max(1, min(MAX_RECURRENCE, n_slots // 3))
    need = min(min_objects, n_slots)
    counts: dict[str, int] = {}
    for k, obj in enumerate(objects):
        left = n_slots - sum(counts.values())
        if left == 0:
            break
        counts[obj] = min(rng.randint(1, cap), left - max(0, need - k - 1))  # leave a slot per object still due
    if sum(counts.values()) < n_slots:
        raise ValueError(f"{len(objects)} objects cannot fill {n_slots} slots")
    return counts


def snap_boundaries(lengths: list[float], num_frames: int, fps: int) -> list[float]:
    """Segment boundaries for segments of roughly these relative lengths: [0, b_1, ..., num_frames / fps].

    Each inner boundary lies half-way between two frames, (f - 0.5) / fps, where f is the first frame of the
    next segment; every segment keeps at least one frame.
    """
    m = len(lengths)
    if not 0 < m <= num_frames:
        raise ValueError(f"cannot fit {m} segments into {num_frames} frames")
    total, acc, firsts = float(sum(lengths)), 0.0, [0]
    for j, length in enumerate(lengths[:-1], 1):
        acc += length
        first = round(acc / total * num_frames)
        firsts.append(min(max(first, firsts[-1] + 1), num_frames - (m - j)))
    return [0.0] + [round((f - 0.5) / fps, 6) for f in firsts[1:]] + [num_frames / fps]


def _motion(rng: random.Random) -> dict[str, float]:
    """Where the object sits and whether it drifts (half of the segments hold still)."""
    x0, y0 = rng.uniform(0.3, 0.7), rng.uniform(0.35, 0.65)
    still = rng.random() < 0.5
    x1 = x0 if still else rng.uniform(0.3, 0.7)
    y1 = y0 if still else rng.uniform(0.35, 0.65)
    return {"x0": round(x0, 3), "y0": round(y0, 3), "x1": round(x1, 3), "y1": round(y1, 3),
            "scale": round(rng.uniform(0.22, 0.32), 3)}


def plan_video(video_id: str, rng: random.Random, settings: WorldSettings = WorldSettings()) -> VideoPlan:
    """A random timeline of haystack segments with two needle events (see the module docstring)."""
    s = settings
    num_frames = max(1, round(rng.uniform(s.min_s, s.max_s) * s.fps))
    duration = num_frames / s.fps
    shapes = list(SHAPES)
    rng.shuffle(shapes)
    hay_shapes, needle_shapes = shapes[:HAY_SHAPES], shapes[HAY_SHAPES:HAY_SHAPES + 2]
    unique_colour = rng.choice(COLOUR_NAMES)
    hay_colours = [c for c in COLOUR_NAMES if c != unique_colour]
    needle_lengths = [rng.uniform(s.needle_min_s, s.needle_max_s) for _ in range(2)]
    n_hay = max(5, round((duration - sum(needle_lengths)) / ((s.seg_min_s + s.seg_max_s) / 2)))
    combos = haystack_objects(hay_shapes, hay_colours, rng)
    order = arrange_without_repeats(recurrence_counts(combos, n_hay, rng), rng)
    # needles go into two different gaps between haystack segments: never first, last, or side by side
    gaps = sorted(rng.sample(range(1, n_hay), 2))
    # needle A wears a colour the haystack shows too, so its colour is no giveaway
    needles = [f"{rng.choice(sorted({o.split()[0] for o in order}))} {needle_shapes[0]}",
               f"{unique_colour} {needle_shapes[1]}"]
    timeline = [(obj, False) for obj in order]
    for offset, (gap, needle) in enumerate(zip(gaps, needles)):
        timeline.insert(gap + offset, (needle, True))
    # haystack segments stretch to fill the video; needles keep their short length
    raw_hay = [rng.uniform(s.seg_min_s, s.seg_max_s) for _ in order]
    hay_scale = (duration - sum(needle_lengths)) / sum(raw_hay)
    needle_iter, hay_iter = iter(needle_lengths), iter(raw_hay)
    lengths = [next(needle_iter) if is_needle else next(hay_iter) * hay_scale for _, is_needle in timeline]
    bounds = snap_boundaries(lengths, num_frames, s.fps)
    segments, background = [], None
    for (obj, is_needle), start, end in zip(timeline, bounds, bounds[1:]):
        colour, shape = obj.split(" ")
        background = rng.choice([b for b in BACKGROUNDS if b != background])
        segments.append(Segment(start, end, shape, colour, background, needle=is_needle, **_motion(rng)))
    return VideoPlan(video_id, duration, num_frames, s.fps, tuple(segments))
