"""The answerer protocol: a frozen (Video-)MLLM answers a multiple-choice question from selected frames.

Answerers see only what a model would see: the video (decoded from its path at the given frame indices),
the frames' timestamps, the question and the options. Never the answer, the spans, or record metadata.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class AnswerRequest:
    #: a stable key for the request (question id + frame set); makes retries idempotent
    key: str
    video: str
    #: native frame indices of the selected frames, in temporal order
    frame_indices: tuple[int, ...]
    timestamps_s: tuple[float, ...]
    question: str
    options: tuple[str, ...]
    #: total video duration, for models that take it (position questions need it)
    duration_s: float | None = None

    @classmethod
    def for_record(cls, record, video, frame_indices, timestamps_s, tag: str) -> "AnswerRequest":
        """The request for a QA record and a frame set: what a model would see (never the answer or the spans),
        keyed `<record id>#<tag>`, where the tag tells the record's frame sets apart (selector, group member...)."""
        return cls(key=f"{record.id}#{tag}", video=str(video), frame_indices=tuple(int(i) for i in frame_indices),
                   timestamps_s=tuple(float(t) for t in timestamps_s), question=record.question,
                   options=tuple(record.options), duration_s=record.duration_s)


@dataclass(frozen=True)
class Answer:
    key: str
    #: the model's raw output text
    text: str
    #: the parsed option letter, or None when the output could not be parsed
    option: str | None
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Answerer(Protocol):
    #: identity for logs and result files, e.g. "embedded:tiny-clip" or "vllm:Qwen2.5-VL-7B-Instruct"
    name: str

    def answer(self, requests: Sequence[AnswerRequest]) -> list[Answer]:
        """Answer a batch (typically the G frame sets of one or more questions), one Answer per request, in order."""
        ...
