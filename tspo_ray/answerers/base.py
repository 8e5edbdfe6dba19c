"""The answerer protocol: a frozen (Video-)MLLM answers a multiple-choice question from selected frames.

Answerers see only what a model would see: the video (decoded from its path at the given frame indices),
the frames' timestamps, the question and the options. Never the answer, the spans, or record metadata.

A request's frames may come from several files (a needle-in-a-haystack clip built from chunks of other videos):
`frame_videos` then names each frame's own file, `frame_indices` are native indices in that file, and
`timestamps_s` are the frames' times on the clip the model watches (non-decreasing), not in their source files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

from tspo_ray.registry import Registry

#: answerer back ends by answerer.kind: each module registers its builder (called with its checked settings) and
#: its settings model where it defines them; they are imported when first named
ANSWERERS = Registry("answerer kind")
for _kind, _module in (("embedded", "embedded"), ("vllm", "vllm_answerer"), ("hf", "hf_answerer"),
                       ("simulated", "simulated")):
    ANSWERERS.register_lazy(_kind, f"tspo_ray.answerers.{_module}")


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
    #: the file of each frame, for frames from several files (None: every frame is a frame of `video`)
    frame_videos: tuple[str, ...] | None = None

    @classmethod
    def for_record(cls, record, video, frame_indices, timestamps_s, tag: str, frame_videos=None,
                   duration_s: float | None = None) -> "AnswerRequest":
        """The request for a QA record and a frame set: what a model would see (never the answer or the spans),
        keyed `<record id>#<tag>`, where the tag tells the record's frame sets apart (selector, group member...).
        `frame_videos` and `duration_s` describe a clip built from several files (default: the record's video)."""
        return cls(key=f"{record.id}#{tag}", video=str(video), frame_indices=tuple(int(i) for i in frame_indices),
                   timestamps_s=tuple(float(t) for t in timestamps_s), question=record.question,
                   options=tuple(record.options), duration_s=record.duration_s if duration_s is None else duration_s,
                   frame_videos=None if frame_videos is None else tuple(str(v) for v in frame_videos))

    def videos(self) -> tuple[str, ...]:
        """The file of each frame, in request order."""
        return self.frame_videos if self.frame_videos is not None else (self.video,) * len(self.frame_indices)


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
