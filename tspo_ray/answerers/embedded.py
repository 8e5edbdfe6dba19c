"""The embedded answerer: answers the synthetic world's questions from the selected frames' pixels only.

Perception: each selected frame is decoded (only the requested indices, each from its own file), encoded by
the tiny CLIP and labelled with the object name ("a red star") whose text feature is closest. Reasoning, per
question form recognised from the wording of templates.py, over the labels in timestamp order:
- attribute: "What colour is the star?" -> the colour most frames showing a star have (and the reverse for
  "What shape is the red object?");
- relation: "right after / right before the red star" -> the first object different from the anchor after its
  last frame (before its first frame), by timestamp;
- position: "beginning" / "end" -> the object of the earliest / latest frame, but only when that frame lies
  within `edge_s` seconds (or `edge_fraction` of duration_s) of the video's start / end: a frame from the middle
  says nothing about the beginning;
- counting: the number of events showing the object: a new event starts at a frame showing it when a frame of
  another colour lies between it and the last frame showing it, or when more than `event_gap_s` seconds have
  passed since that frame (longer than an event usually lasts). A same-colour frame of another shape in between
  does not split an event: colour is read almost perfectly, shape is not, so it is most likely the object misread.
Without evidence (the object asked about is in no frame, the anchor has no neighbour, the edge frame is missing)
it still answers: the option whose statement ("a blue star") CLIP finds best supported by any frame, or for
counting the smallest count. It sees pixels, timestamps, question, options and duration only -- never answers,
target spans or record metadata.
"""
from __future__ import annotations

import os
import re
import string
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tspo_ray.answerers.base import Answer, AnswerRequest
from tspo_ray.method.rewards import parse_option
from tspo_ray.synthetic.render import COLOURS, SHAPES
from tspo_ray.video.frames import read_frames
from tspo_ray.video.info import VideoError

Label = tuple[str, str]  # (colour, shape)
OBJECTS: list[Label] = [(c, s) for s in SHAPES for c in COLOURS]
OBJECT_NAMES = [f"a {c} {s}" for c, s in OBJECTS]

_FORMS = {
    "colour_of": re.compile(r"what colou?r is the (\w+)\?", re.I),
    "shape_of": re.compile(r"what shape is the (\w+) object\?", re.I),
    "relation": re.compile(r"what appears right (after|before) the (\w+) (\w+)\?", re.I),
    "position": re.compile(r"what is shown at the (beginning|end) of the video\?", re.I),
    "counting": re.compile(r"how many times does an? (\w+) (\w+) appear\?", re.I),
}


@dataclass(frozen=True)
class Question:
    form: str  # one of _FORMS, or "unknown"
    args: tuple[str, ...] = ()


def parse_question(text: str) -> Question:
    """Recognise the question form and its arguments (lower-cased) from the wording. Pure."""
    for form, pattern in _FORMS.items():
        if m := pattern.fullmatch(text.strip()):
            return Question(form, tuple(g.lower() for g in m.groups()))
    return Question("unknown")


# --- reasoning over labelled frames (pure) ----------------------------------------------------------------------

def majority(values: Sequence[str]) -> str | None:
    """The most frequent value (ties: the earliest seen), None when empty."""
    return Counter(values).most_common(1)[0][0] if values else None


def neighbour(labels: Sequence[Label], anchor: Label, direction: str) -> Label | None:
    """The first label different from the anchor after its last frame ("after") or before its first ("before")."""
    hits = [i for i, lab in enumerate(labels) if lab == anchor]
    if not hits:
        return None
    order = range(hits[-1] + 1, len(labels)) if direction == "after" else range(hits[0] - 1, -1, -1)
    return next((labels[i] for i in order if labels[i] != anchor), None)


def edge_label(labels: Sequence[Label], times: Sequence[float], which: str, duration_s: float | None,
               edge_s: float, edge_fraction: float) -> Label | None:
    """The earliest (latest) frame's label when that frame is near the video's start (end), else None.

    Without a duration the end cannot be judged, so the latest frame is trusted."""
    if not labels:
        return None
    margin = max(edge_s, edge_fraction * (duration_s or 0.0))
    if which == "beginning":
        return labels[0] if times[0] <= margin else None
    if duration_s is None or times[-1] >= duration_s - margin:
        return labels[-1]
    return None


def count_events(labels: Sequence[Label], obj: Label, times: Sequence[float], event_gap_s: float) -> int:
    """Events of obj among temporally ordered labelled frames: runs of frames showing it. A run ends at a frame of
    another colour in between, or where more than event_gap_s seconds pass between two frames showing it. A frame
    of the same colour but another shape does not end a run: the colour reading is near perfect and the shape
    reading is not, so such a frame inside an event is most likely the object misread."""
    events, last_t, broken = 0, None, True
    for (colour, shape), t in zip(labels, times):
        if (colour, shape) != obj:
            broken = broken or colour != obj[0]
            continue
        if broken or last_t is None or t - last_t > event_gap_s:
            events += 1
        last_t, broken = t, False
    return events


def option_index(options: Sequence[str], value: str | None) -> int | None:
    """The option equal to value (case and spacing ignored), None when there is none."""
    if value is None:
        return None
    norm = lambda s: " ".join(s.lower().split())
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


def decide(q: Question, labels: Sequence[Label], times: Sequence[float], options: Sequence[str],
           duration_s: float | None, edge_s: float, edge_fraction: float, event_gap_s: float) -> Decision:
    """Apply the reasoning rule of the question's form to labels in temporal order. Pure."""
    name = lambda lab: f"a {lab[0]} {lab[1]}" if lab else None
    if q.form == "colour_of":
        (shape,) = q.args
        value = majority([c for c, s in labels if s == shape])
        return Decision(option_index(options, value), lambda o: f"a {o} {shape}", value is not None)
    if q.form == "shape_of":
        (colour,) = q.args
        value = majority([s for c, s in labels if c == colour])
        return Decision(option_index(options, value), lambda o: f"a {colour} {o}", value is not None)
    if q.form == "relation":
        direction, colour, shape = q.args
        found = neighbour(labels, (colour, shape), direction)
        return Decision(option_index(options, name(found)), evidence=found is not None)
    if q.form == "position":
        found = edge_label(labels, times, q.args[0], duration_s, edge_s, edge_fraction)
        return Decision(option_index(options, name(found)), evidence=found is not None)
    if q.form == "counting":
        colour, shape = q.args
        events = count_events(labels, (colour, shape), times, event_gap_s)
        # unseen: the object shows up at least once somewhere, so the smallest count is the best guess
        return Decision(nearest_count(options, max(events, 1)), evidence=events > 0)
    return Decision(None, evidence=False)


# --- the answerer -----------------------------------------------------------------------------------------------

class EmbeddedAnswerer:
    """Answerer protocol over the tiny CLIP (or any FrameTextEncoder that knows the world's words)."""

    def __init__(self, encoder=None, frame_size: int = 64, edge_s: float = 6.0, edge_fraction: float = 0.05,
                 event_gap_s: float = 20.0, max_cached_frames: int = 200_000):
        if encoder is None:
            from tspo_ray.video.encoders import load_encoder

            encoder = load_encoder({"backend": "embedded"})
        self.encoder, self.frame_size = encoder, frame_size
        self.edge_s, self.edge_fraction, self.event_gap_s = edge_s, edge_fraction, event_gap_s
        self.name = f"embedded:{encoder.name}"
        self._text: dict[str, torch.Tensor] = {}
        # (video, (size, mtime), frame index) -> feature; 200k frames of a 64-d CLIP take about 50 MB
        self.max_cached_frames = max_cached_frames
        self._frames: dict[tuple, torch.Tensor] = {}
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

    def _frame_features(self, requests: Sequence[AnswerRequest]) -> list[torch.Tensor]:
        """Features of every request's frames. Frames not seen before are decoded (the union over a video's requests,
        once) and encoded in one pass; seen ones come from the cache: during training the same candidates recur
        across the G sets of a question, across the questions of a video and across epochs."""
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
        fresh = dict(zip(keys, F.normalize(self.encoder.encode_frames(np.concatenate(frames)), dim=-1))) if frames else {}
        feature = lambda key: fresh[key] if key in fresh else self._frames[key]
        out = [torch.stack([feature((v, version[v], int(i))) for v, i in zip(r.videos(), r.frame_indices)])
               for r in requests]
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
        return [self._answer_one(r, f) for r, f in zip(requests, self._frame_features(requests))]

    def _answer_one(self, req: AnswerRequest, feats: torch.Tensor) -> Answer:
        order = np.argsort(np.asarray(req.timestamps_s, dtype=np.float64), kind="stable")
        feats, times = feats[order], [float(req.timestamps_s[i]) for i in order]
        labels = [OBJECTS[i] for i in (feats @ self.object_text.T).argmax(-1).tolist()]
        q = parse_question(req.question)
        d = decide(q, labels, times, req.options, req.duration_s, self.edge_s, self.edge_fraction, self.event_gap_s)
        index, guessed = d.index, d.index is None
        if guessed:  # no usable evidence: CLIP's best guess over the options' statements
            support = (feats @ self._texts([d.statement(o) for o in req.options]).T).max(0).values
            index = int(support.argmax())
        letter = string.ascii_uppercase[index]
        extra = {"form": q.form, "evidence": d.evidence and not guessed, "labels": [f"{c} {s}" for c, s in labels]}
        return Answer(req.key, letter, parse_option(letter, len(req.options)), extra)
