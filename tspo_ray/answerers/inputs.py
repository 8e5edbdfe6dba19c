"""From AnswerRequests to model inputs: frames decoded from the video at the requested indices, video metadata with
the frames' real times, and the rendered prompt. Shared by the vLLM and HF answerers.

Frames are never shipped as pixels: an answerer decodes them where it runs, from the path and native indices. The
G sets of a question share a video, so each video is opened once per batch and the union of its indices decoded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from tspo_ray.answerers import prompts
from tspo_ray.answerers.base import Answer, AnswerRequest
from tspo_ray.answerers.errors import RequestError
from tspo_ray.rewards import parse_option
from tspo_ray.video import VideoError, VideoInfo, probe, read_frames


@dataclass(frozen=True)
class PromptStyle:
    """How requests become prompts for one model: family template, frames as video or images, time instruction."""

    template: str
    input_mode: str = "video"
    time_instruction: bool = False
    #: pass video metadata with the frames (the family's processor derives the frames' times from it)
    video_metadata: bool = True


@dataclass
class Prepared:
    """One request ready for a model: prompt text, frames [N, H, W, 3] uint8, and video metadata."""

    key: str
    prompt: str
    frames: np.ndarray
    metadata: dict[str, Any]
    num_options: int
    extra: dict[str, Any] = field(default_factory=dict)
    #: the option texts, so an answer that names an option by its text counts
    options: tuple[str, ...] = ()


def video_metadata(frame_indices: Sequence[int], native_fps: float, total_frames: int, height: int,
                   width: int) -> dict[str, Any]:
    """transformers' VideoMetadata fields for frames picked at native indices (plus vLLM's do_sample_frames=False).

    Its `timestamps` are index / fps, the frames' real times; Qwen-VL processors derive the seconds per temporal
    grid from len(indices) / total_frames * fps, the mean rate of the selection.
    """
    return {"fps": float(native_fps), "total_num_frames": int(total_frames),
            "duration": float(total_frames) / float(native_fps), "frames_indices": [int(i) for i in frame_indices],
            "height": int(height), "width": int(width), "video_backend": "decord", "do_sample_frames": False}


def hf_metadata(metadata: dict[str, Any]):
    """The transformers VideoMetadata object of a metadata dict (without vLLM's sampling flag)."""
    from transformers.video_utils import VideoMetadata

    return VideoMetadata(**{k: v for k, v in metadata.items() if k != "do_sample_frames"})


def check_request(req: AnswerRequest, info: VideoInfo) -> None:
    """Indices in range, in temporal order, and timestamps that match index / native fps (half a frame slack)."""
    idx = np.asarray(req.frame_indices)
    if idx.size == 0:
        raise RequestError(f"{req.key}: no frame indices")
    if len(req.timestamps_s) != idx.size:
        raise RequestError(f"{req.key}: {idx.size} frame indices but {len(req.timestamps_s)} timestamps")
    if np.any(np.diff(idx) < 0):
        raise RequestError(f"{req.key}: frame indices are not in temporal order")
    if idx.min() < 0 or idx.max() >= info.num_frames:
        raise RequestError(f"{req.key}: frame indices outside 0..{info.num_frames - 1} of {info.path}")
    gap = np.abs(idx / info.native_fps - np.asarray(req.timestamps_s, dtype=np.float64))
    if gap.max() > 0.5 / info.native_fps + 1e-3:
        raise RequestError(f"{req.key}: timestamps_s disagree with frame_indices / {info.native_fps:g} fps "
                           f"by up to {gap.max():.3f} s")


def _prompt(req: AnswerRequest, style: PromptStyle, info: VideoInfo) -> str:
    times = None
    if style.time_instruction:
        times = req.timestamps_s
    duration = req.duration_s if req.duration_s is not None else info.duration_s
    text = prompts.user_text(req.question, req.options, duration, times)
    return prompts.render(prompts.messages(text, style.input_mode, len(req.frame_indices)), style.template)


def prepare(requests: Sequence[AnswerRequest], style: PromptStyle,
            frame_size: int | None = None) -> tuple[list[Prepared], dict[str, str]]:
    """Prepared inputs for the requests that can be answered, and {key: reason} for those that cannot."""
    by_video: dict[str, list[AnswerRequest]] = {}
    for req in requests:
        by_video.setdefault(req.video, []).append(req)
    ready: dict[str, Prepared] = {}
    failed: dict[str, str] = {}
    for path, reqs in by_video.items():
        try:
            info = probe(path)
        except VideoError as exc:
            failed.update({r.key: str(exc) for r in reqs})
            continue
        good = []
        for req in reqs:
            try:
                check_request(req, info)
                good.append(req)
            except RequestError as exc:
                failed[req.key] = str(exc)
        if not good:
            continue
        union = sorted({int(i) for r in good for i in r.frame_indices})
        try:
            frames = read_frames(path, union, frame_size)
        except VideoError as exc:
            failed.update({r.key: str(exc) for r in good})
            continue
        row = {i: n for n, i in enumerate(union)}
        for req in good:
            picked = frames[[row[int(i)] for i in req.frame_indices]]
            meta = video_metadata(req.frame_indices, info.native_fps, info.num_frames, picked.shape[1], picked.shape[2])
            ready[req.key] = Prepared(req.key, _prompt(req, style, info), picked, meta, len(req.options),
                                   options=tuple(req.options))
    return [ready[r.key] for r in requests if r.key in ready], failed


def to_answer(key: str, text: str, num_options: int, extra: dict[str, Any] | None = None,
              options: Sequence[str] = ()) -> Answer:
    """An Answer with the option parsed from the model's text (by letter, or by option text when given)."""
    return Answer(key=key, text=text, option=parse_option(text, num_options, options or None),
                  extra=dict(extra or {}))


def failed_answer(key: str, reason: str) -> Answer:
    """The answer to a quarantined request: no text, no option (scores R_A = 0), the reason in extra['error']."""
    return Answer(key=key, text="", option=None, extra={"error": reason})


def dedupe(requests: Sequence[AnswerRequest]) -> list[AnswerRequest]:
    """Requests with distinct keys, first occurrence kept (a key names one answer, however often it is asked)."""
    seen: dict[str, AnswerRequest] = {}
    for req in requests:
        seen.setdefault(req.key, req)
    return list(seen.values())
