"""The embedded answerer: answers the synthetic world's questions from the selected frames' pixels only.

It plays a Video-MLLM that understands language perfectly and perceives imperfectly. Language: the question's
program is recovered from its text through the world's question families (synthetic/families.py; exactly one
wording must match). Perception: each selected frame is decoded (only the requested indices, each from its own
file), encoded by the tiny CLIP and labelled with the object name ("a red star") whose text feature is closest.
Reasoning: the program runs on the timeline those labels show, in timestamp order (PerceivedTimeline):
- an event is a run of frames with the same label; two frames of the same object more than `event_gap_s` apart
  are two events with an unseen one between them (longer than an event usually lasts). A frame of another shape
  in the run's colour is taken as what it shows: next events often share a colour, and the tiny CLIP's rare
  misreads (0.8% of frames, all of shape) are confident, so no rule tells the two apart;
- the video's start (end) is in the frames only when the earliest (latest) frame lies within `edge_s` seconds (or
  `edge_fraction` of duration_s) of it, and so is a fraction of the video: a frame from the middle says nothing
  about the beginning;
- "the k-th event" counts runs from a frame at the start; "n steps after" counts runs, so a skipped event makes it
  wrong, as it would a model that did not see it.
Without evidence (nothing asked about is in the frames, the anchor has no neighbour, an edge is missing) it still
answers: the option whose statement ("a blue star") CLIP finds best supported by any frame, or for counting the
smallest count. It sees pixels, timestamps, question, options and duration only -- never answers, target spans or
record metadata.
"""
from __future__ import annotations

import os
import string
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from tspo_ray.answerers.base import ANSWERERS, Answer, AnswerRequest
from tspo_ray.synthetic.families import Event, FamilyGrammar, NoEvidence, Parsed, load_families, run_program
from tspo_ray.synthetic.render import COLOURS, SHAPES
from tspo_ray.video.frames import read_frames
from tspo_ray.settings import Settings
from tspo_ray.video.info import VideoError

Label = tuple[str, str]  # (colour, shape)
OBJECTS: list[Label] = [(c, s) for s in SHAPES for c in COLOURS]
OBJECT_NAMES = [f"a {c} {s}" for c, s in OBJECTS]


# --- the timeline the frames show (pure) ------------------------------------------------------------------------

@dataclass
class PerceivedTimeline:
    """The events seen in temporally ordered labelled frames (see the module docstring)."""

    events: list[Event]
    frame_event: list[int]  # the event of each frame
    times: list[float]
    duration_s: float | None
    margin_s: float

    def starts_at_video_start(self) -> bool:
        return bool(self.times) and self.times[0] <= self.margin_s

    def ends_at_video_end(self) -> bool:
        """Without a duration the end cannot be judged, so the latest frame is trusted."""
        return bool(self.times) and (self.duration_s is None or self.times[-1] >= self.duration_s - self.margin_s)

    def event_at(self, fraction: float) -> int | None:
        if self.duration_s is None or not self.times:
            return None
        t = fraction * self.duration_s
        k = min(range(len(self.times)), key=lambda j: abs(self.times[j] - t))
        return self.frame_event[k] if abs(self.times[k] - t) <= self.margin_s else None


def perceive(labels: Sequence[Label], times: Sequence[float], duration_s: float | None, edge_s: float,
             edge_fraction: float, event_gap_s: float) -> PerceivedTimeline:
    """Labelled frames in temporal order -> the events they show. Pure."""
    events: list[Event] = []
    frame_event: list[int] = []
    for k, (lab, t) in enumerate(zip(labels, times)):
        if k and lab == labels[k - 1] and t - times[k - 1] <= event_gap_s:
            last = events[-1]
            events[-1] = Event(last.colour, last.shape, weight=last.weight + 1)
        else:
            if k and lab == labels[k - 1]:
                events.append(Event(None, None))  # the same object twice, far apart: something came between
            events.append(Event(*lab))
        frame_event.append(len(events) - 1)
    margin = max(edge_s, edge_fraction * (duration_s or 0.0))
    return PerceivedTimeline(events, frame_event, list(times), duration_s, margin)


def option_index(options: Sequence[str], value: str | None) -> int | None:
    """The option equal to value (case and spacing ignored), None when there is none."""
    if value is None:
        return None
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    return next((i for i, o in enumerate(options) if norm(o) == norm(value)), None)


def nearest_count(options: Sequence[str], count: int) -> int | None:
    """The numeric option closest to count (ties: the smaller); None when no option is a number."""
    numeric = [(i, int(o)) for i, o in enumerate(options) if o.strip().isdigit()]
    return min(numeric, key=lambda p: (abs(p[1] - count), p[1]))[0] if numeric else None


@dataclass(frozen=True)
class Decision:
    """What the reasoning found: an option index, or None plus the statement form for CLIP's best guess."""

    index: int | None
    statement: Callable[[str], str] = lambda o: o
    evidence: bool = True
    why: str = field(default="", compare=False)


def statement_form(parsed: Parsed) -> Callable[[str], str]:
    """How an option reads as something a frame could show: "a {option} {shape}" for a colour asked about a shape."""
    answer, slots = parsed.variant.answer, parsed.slots
    if answer == "colour" and "shape" in slots:
        return lambda o: f"a {o} {slots['shape']}"
    if answer == "shape" and "colour" in slots:
        return lambda o: f"a {slots['colour']} {o}"
    return lambda o: o


def decide(parsed: Parsed | None, timeline: PerceivedTimeline, options: Sequence[str]) -> Decision:
    """Run the question's program on the perceived timeline and map its value to an option. Pure."""
    if parsed is None:
        return Decision(None, evidence=False, why="no family wording matches the question")
    counting = parsed.variant.answer == "count"
    try:
        value = run_program(parsed.variant.program, timeline, parsed.slots).value
    except NoEvidence as exc:
        if counting:  # unseen: the object shows up at least once somewhere, so the smallest count is the best guess
            return Decision(nearest_count(options, 1), evidence=False, why=str(exc))
        return Decision(None, statement_form(parsed), evidence=False, why=str(exc))
    if counting:
        return Decision(nearest_count(options, max(int(value), 1)), evidence=int(value) > 0)
    return Decision(option_index(options, value), statement_form(parsed))


# --- the answerer -----------------------------------------------------------------------------------------------

class EmbeddedAnswerer:
    """Answerer protocol over the tiny CLIP (or any FrameTextEncoder that knows the world's words)."""

    def __init__(self, encoder=None, frame_size: int = 64, edge_s: float = 6.0, edge_fraction: float = 0.05,
                 event_gap_s: float = 20.0, max_cached_frames: int = 200_000, families=None):
        if encoder is None:
            from tspo_ray.video.encoders import load_encoder

            encoder = load_encoder({"backend": "embedded"})
        # the world's question families (synthetic/families.py): how a question's text maps to its program
        self.grammar = FamilyGrammar(load_families() if families is None else families)
        self.encoder, self.frame_size = encoder, frame_size
        self.edge_s, self.edge_fraction, self.event_gap_s = edge_s, edge_fraction, event_gap_s
        self.name = f"embedded:{encoder.name}"
        self._text: dict[str, torch.Tensor] = {}
        # (video, (size, mtime), frame index) -> (feature, object label index); 200k frames of a 64-d CLIP take
        # about 50 MB. The label is the frame's nearest object name, found once when the frame is encoded.
        self.max_cached_frames = max_cached_frames
        self._frames: dict[tuple, tuple[torch.Tensor, int]] = {}
        # question text -> its parse: a question is asked for each of its G sets, and again every epoch
        self._parsed: dict[str, Parsed | None] = {}
        self.object_text = self._texts(OBJECT_NAMES)  # [36, D]

    @property
    def stats(self) -> dict[str, int]:
        """What the frame cache holds (the answerer actor pool reports it per actor)."""
        return {"cached_frames": len(self._frames), "cached_videos": len({key[0] for key in self._frames})}

    def _texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Text features, cached: option statements repeat across the G sets of a question."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text]
        if missing:
            # encoders return raw CLIP features: unit-normalise so that dot products are cosines
            self._text.update(zip(missing, F.normalize(self.encoder.encode_text(missing), dim=-1)))
        return torch.stack([self._text[t] for t in texts])

    def _frame_features(self, requests: Sequence[AnswerRequest]) -> list[tuple[torch.Tensor, list[int]]]:
        """(features, object label indices) of every request's frames. Frames not seen before are decoded (the union
        over a video's requests, once), encoded and labelled in one pass; seen ones come from the cache: during
        training the same candidates recur across the G sets of a question, across the questions of a video and
        across epochs."""
        wanted: dict[str, set[int]] = defaultdict(set)
        for r in requests:
            if not r.frame_indices or len(r.frame_indices) != len(r.timestamps_s):
                raise ValueError(f"request {r.key}: needs as many timestamps as frame indices (and at least one), "
                                 f"got {len(r.frame_indices)} indices and {len(r.timestamps_s)} timestamps")
            if r.frame_videos is not None and len(r.frame_videos) != len(r.frame_indices):
                raise ValueError(f"request {r.key}: needs one file per frame, got {len(r.frame_videos)} files for "
                                 f"{len(r.frame_indices)} frame indices")
            for video, i in zip(r.videos(), r.frame_indices):  # each frame from its own file
                wanted[video].add(int(i))
        version = {video: self._file_version(video, requests) for video in wanted}
        frames, keys = [], []
        for video, idx in wanted.items():
            idx = sorted(i for i in idx if (video, version[video], i) not in self._frames)
            if not idx:
                continue
            try:
                frames.append(read_frames(video, idx, self.frame_size))
            except VideoError as exc:
                raise VideoError(f"{exc} ({self._naming(video, requests)})") from None
            keys += [(video, version[video], i) for i in idx]
        fresh = {}
        if frames:
            feats = F.normalize(self.encoder.encode_frames(np.concatenate(frames)), dim=-1)
            fresh = dict(zip(keys, zip(feats, (feats @ self.object_text.T).argmax(-1).tolist())))
        seen = lambda key: fresh[key] if key in fresh else self._frames[key]  # noqa: E731
        out = []
        for r in requests:
            feats, labels = zip(*(seen((v, version[v], int(i))) for v, i in zip(r.videos(), r.frame_indices)))
            out.append((torch.stack(feats), list(labels)))
        self._frames.update(fresh)
        while len(self._frames) > self.max_cached_frames:  # oldest first
            self._frames.pop(next(iter(self._frames)))
        return out

    @staticmethod
    def _naming(video: str, requests: Sequence[AnswerRequest]) -> str:
        keys = [r.key for r in requests if video in r.videos()]
        return f"requests {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"

    def _file_version(self, video: str, requests: Sequence[AnswerRequest]) -> tuple[int, int]:
        """(size, mtime) of the file: a video rewritten in place is not answered from stale features."""
        try:
            st = os.stat(video)
        except OSError as exc:
            raise VideoError(f"{video}: cannot read the file ({exc.strerror}) ({self._naming(video, requests)})") \
                from None
        return st.st_size, st.st_mtime_ns

    def answer(self, requests: Sequence[AnswerRequest]) -> list[Answer]:
        """One Answer per request, in order; the CLIP forward pass covers every request's frames at once."""
        if not requests:
            return []
        return [self._answer_one(r, *seen) for r, seen in zip(requests, self._frame_features(requests))]

    def _parse(self, question: str) -> Parsed | None:
        if question not in self._parsed:
            if len(self._parsed) >= 100_000:  # questions are few; this bounds a long-lived server's memory
                self._parsed.clear()
            self._parsed[question] = self.grammar.parse(question)
        return self._parsed[question]

    def _answer_one(self, req: AnswerRequest, feats: torch.Tensor, label_index: list[int]) -> Answer:
        order = np.argsort(np.asarray(req.timestamps_s, dtype=np.float64), kind="stable").tolist()
        times, labels = [float(req.timestamps_s[i]) for i in order], [OBJECTS[label_index[i]] for i in order]
        parsed = self._parse(req.question)
        timeline = perceive(labels, times, req.duration_s, self.edge_s, self.edge_fraction, self.event_gap_s)
        d = decide(parsed, timeline, req.options)
        index, guessed = d.index, d.index is None
        if guessed:  # no usable evidence: CLIP's best guess over the options' statements
            support = (feats @ self._texts([d.statement(o) for o in req.options]).T).max(0).values
            index = int(support.argmax())
        form = "unknown" if parsed is None else f"{parsed.family.name}:{parsed.variant.form}"
        extra = {"form": form, "evidence": d.evidence and not guessed, "labels": [f"{c} {s}" for c, s in labels]}
        letter = string.ascii_uppercase[index]
        return Answer(req.key, letter, letter, extra)  # the option's letter, as parsed from a model's text


class EmbeddedSettings(Settings):
    """answerer.settings of the embedded kind."""

    section: ClassVar[str] = "answerer.settings"

    label: ClassVar[str] = "embedded answerer"
    encoder: dict[str, Any] = Field(default_factory=lambda: {"backend": "embedded"})
    """The CLIP that labels the frames (tspo_ray.video.encoders.load_encoder spec)."""
    families: list[str] | None = None
    """Question family files to read questions with (None: the world's, else the shipped ones)."""
    world: str | None = None
    """A world folder whose manifest names its families (jobs set it to data.root)."""
    frame_size: int = Field(64, ge=8)
    """Frames are labelled at frame_size x frame_size px."""
    edge_s: float = Field(6.0, ge=0)
    """A frame within this many seconds of the start (end) shows the video's start (end)."""
    edge_fraction: float = Field(0.05, ge=0, le=1)
    """... or within this fraction of the duration."""
    event_gap_s: float = Field(20.0, gt=0)
    """Two frames of one object further apart than this are two events."""
    max_cached_frames: int = Field(200_000, ge=0)
    """Frame features kept in memory."""


def build_embedded(settings: EmbeddedSettings) -> EmbeddedAnswerer:
    from tspo_ray.synthetic.dataset import world_families
    from tspo_ray.video.encoders import load_encoder

    s = EmbeddedSettings.load(settings, "answerer.settings")
    families = load_families(s.families) if s.families else (world_families(s.world) if s.world else None)
    return EmbeddedAnswerer(load_encoder(s.encoder), frame_size=s.frame_size, edge_s=s.edge_s,
                            edge_fraction=s.edge_fraction, event_gap_s=s.event_gap_s,
                            max_cached_frames=s.max_cached_frames, families=families)


ANSWERERS.register("embedded", build_embedded, settings=EmbeddedSettings)
