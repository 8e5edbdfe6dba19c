"""The embedded answerer: answers the synthetic world's questions from the selected frames' pixels only.

Perception is the tiny CLIP: each decoded frame is labelled with the object name ("a red star") whose text feature
is closest. Reasoning per question form (recognised from the question wording of templates.py), using only the
labels and the frames' timestamps:
- attribute ("What colour is the star?"): the colour of the frames showing a star;
- relation ("right after / right before the red star"): the first different object after the last red-star frame
  (or before the first one), by timestamp;
- position ("beginning" / "end"): the object of the earliest / latest selected frame;
- counting: the number of runs of consecutive selected frames showing the object.
When the evidence is missing (no frame shows the object) it still answers: the option whose statement CLIP scores
highest over the frames. It never sees answers, target spans or record metadata.
"""
from __future__ import annotations

import re
import string
from typing import Sequence

import numpy as np
import torch

from tspo_ray.answerers.base import Answer, AnswerRequest
from tspo_ray.rewards import parse_option
from tspo_ray.synthetic.render import COLOURS, SHAPES
from tspo_ray.video import read_frames

OBJECT_NAMES = [f"a {c} {s}" for s in SHAPES for c in COLOURS]

_COLOUR_Q = re.compile(r"what colou?r is the (\w+)\?", re.I)
_SHAPE_Q = re.compile(r"what shape is the (\w+) object\?", re.I)
_RELATION_Q = re.compile(r"what appears right (after|before) the (\w+) (\w+)\?", re.I)
_POSITION_Q = re.compile(r"what is shown at the (beginning|end) of the video\?", re.I)
_COUNT_Q = re.compile(r"how many times does an? (\w+) (\w+) appear\?", re.I)


def count_runs(flags: Sequence[bool]) -> int:
    """Runs of consecutive True values: separate appearances among temporally ordered frames."""
    return sum(1 for i, f in enumerate(flags) if f and (i == 0 or not flags[i - 1]))


class EmbeddedAnswerer:
    """Answerer protocol over the tiny CLIP (or any FrameTextEncoder that knows the world's words)."""

    def __init__(self, encoder=None, frame_size: int = 64):
        if encoder is None:
            from tspo_ray.encoders import load_encoder

            encoder = load_encoder({"backend": "embedded"})
        self.encoder, self.frame_size = encoder, frame_size
        self.name = f"embedded:{encoder.name}"
        self.object_text = encoder.encode_text(OBJECT_NAMES)  # [36, D]

    def answer(self, requests: Sequence[AnswerRequest]) -> list[Answer]:
        frames = [read_frames(r.video, r.frame_indices, self.frame_size) for r in requests]
        sizes = [len(f) for f in frames]
        feats = self.encoder.encode_frames(np.concatenate(frames)) if frames else torch.zeros(0)
        out, start = [], 0
        for req, n in zip(requests, sizes):
            letter = self._answer_one(req, feats[start : start + n])
            start += n
            out.append(Answer(req.key, letter, parse_option(letter, len(req.options))))
        return out

    # --- reasoning ----------------------------------------------------------------------------------------------
    def _labels(self, feats: torch.Tensor) -> list[tuple[str, str]]:
        best = (feats @ self.object_text.T).argmax(-1).tolist()
        return [tuple(OBJECT_NAMES[i].split(" ")[1:]) for i in best]  # (colour, shape)

    def _fallback(self, req: AnswerRequest, feats: torch.Tensor, statement) -> str:
        """The option whose statement CLIP finds best supported by any selected frame."""
        text = self.encoder.encode_text([statement(o) for o in req.options])
        return string.ascii_uppercase[int((feats @ text.T).max(0).values.argmax())]

    def _pick(self, req: AnswerRequest, value: str | None, feats, statement) -> str:
        for i, option in enumerate(req.options):
            if value is not None and option.strip().lower() == value.lower():
                return string.ascii_uppercase[i]
        return self._fallback(req, feats, statement)

    def _answer_one(self, req: AnswerRequest, feats: torch.Tensor) -> str:
        labels = self._labels(feats)
        ts = list(req.timestamps_s)
        order = sorted(range(len(labels)), key=lambda i: ts[i])
        labels, feats = [labels[i] for i in order], feats[order]
        q = req.question.strip()
        if m := _COLOUR_Q.match(q):
            shape = m.group(1).lower()
            seen = [c for c, s in labels if s == shape]
            return self._pick(req, seen[0] if seen else None, feats, lambda o: f"a {o} {shape}")
        if m := _SHAPE_Q.match(q):
            colour = m.group(1).lower()
            seen = [s for c, s in labels if c == colour]
            return self._pick(req, seen[0] if seen else None, feats, lambda o: f"a {colour} {o}")
        if m := _RELATION_Q.match(q):
            direction, anchor = m.group(1).lower(), (m.group(2).lower(), m.group(3).lower())
            hits = [i for i, lab in enumerate(labels) if lab == anchor]
            found = None
            if hits:
                rng = range(hits[-1] + 1, len(labels)) if direction == "after" else range(hits[0] - 1, -1, -1)
                found = next((labels[i] for i in rng if labels[i] != anchor), None)
            return self._pick(req, f"a {found[0]} {found[1]}" if found else None, feats, lambda o: o)
        if m := _POSITION_Q.match(q):
            c, s = labels[0] if m.group(1).lower() == "beginning" else labels[-1]
            return self._pick(req, f"a {c} {s}", feats, lambda o: o)
        if m := _COUNT_Q.match(q):
            target = (m.group(1).lower(), m.group(2).lower())
            runs = count_runs([lab == target for lab in labels])
            numeric = [(i, int(o)) for i, o in enumerate(req.options) if o.strip().isdigit()]
            if numeric:
                i = min(numeric, key=lambda p: (abs(p[1] - max(runs, 1)), p[1]))[0]
                return string.ascii_uppercase[i]
        return self._fallback(req, feats, lambda o: o)
