"""From AnswerRequests to model inputs: frames decoded from the video at the requested indices, video metadata with
the frames' real times, and the rendered prompt. Shared by the vLLM and HF answerers.

Frames are never shipped as pixels: an answerer decodes them where it runs, from the path and native indices. The
G sets of a question share a video, so each video is opened once per batch and the union of its indices decoded.
A request whose frames come from several files (AnswerRequest.frame_videos, a needle-in-a-haystack clip) decodes
each frame from its own file and is described to the model as one clip on its own times (COMPOSITE_FPS).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from tspo_ray.answerers import prompts
from tspo_ray.answerers.base import Answer, AnswerRequest
from tspo_ray.answerers.errors import RequestError
from tspo_ray.method.rewards import parse_option
from tspo_ray.video.frames import probe, read_frames
from tspo_ray.video.info import VideoError, VideoInfo

#: a clip built from several files is described to the model as a video of this rate on the clip's own times
COMPOSITE_FPS = 1.0


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


def check_composite(req: AnswerRequest, infos: dict[str, VideoInfo]) -> None:
    """A request whose frames come from several files: one file per frame, every index inside its own file, and
    clip times (the timestamps_s of the clip the model watches) non-negative and in order."""
    idx = np.asarray(req.frame_indices)
    if idx.size == 0:
        raise RequestError(f"{req.key}: no frame indices")
    for name, n in (("files", len(req.frame_videos or ())), ("timestamps", len(req.timestamps_s))):
        if n != idx.size:
            raise RequestError(f"{req.key}: {idx.size} frame indices but {n} {name}")
    for video, i in zip(req.frame_videos, req.frame_indices):
        if not 0 <= i < infos[video].num_frames:
            raise RequestError(f"{req.key}: frame index {i} outside 0..{infos[video].num_frames - 1} of {video}")
    ts = np.asarray(req.timestamps_s, dtype=np.float64)
    if not np.all(np.isfinite(ts)) or ts.min() < 0 or np.any(np.diff(ts) < 0):
        raise RequestError(f"{req.key}: the clip's timestamps_s must be finite, non-negative and in order")


def composite_metadata(req: AnswerRequest, height: int, width: int) -> dict[str, Any]:
    """Video metadata of a clip built from several files: COMPOSITE_FPS frames a second on the clip's own times."""
    idx = [int(round(t * COMPOSITE_FPS)) for t in req.timestamps_s]
    duration = req.duration_s if req.duration_s is not None else (idx[-1] + 1) / COMPOSITE_FPS
    total = max(int(np.ceil(duration * COMPOSITE_FPS)), idx[-1] + 1)
    return video_metadata(idx, COMPOSITE_FPS, total, height, width)


def _prompt(req: AnswerRequest, style: PromptStyle, duration_s: float) -> str:
    times = req.timestamps_s if style.time_instruction else None
    duration = req.duration_s if req.duration_s is not None else duration_s
    text = prompts.user_text(req.question, req.options, duration, times)
    return prompts.render(prompts.messages(text, style.input_mode, len(req.frame_indices)), style.template)


def _checked(requests: Sequence[AnswerRequest], failed: dict[str, str]) -> tuple[list[AnswerRequest], dict]:
    """The requests whose files open and whose frames are valid, and the files' VideoInfo; the rest go to failed."""
    infos: dict[str, VideoInfo] = {}
    broken: dict[str, str] = {}
    for path in dict.fromkeys(v for r in requests for v in r.videos()):
        try:
            infos[path] = probe(path)
        except VideoError as exc:
            broken[path] = str(exc)
    good = []
    for req in requests:
        reason = next((broken[v] for v in req.videos() if v in broken), None)
        if reason is not None:
            failed[req.key] = reason
            continue
        try:
            check_composite(req, infos) if req.frame_videos is not None else check_request(req, infos[req.video])
            good.append(req)
        except RequestError as exc:
            failed[req.key] = str(exc)
    return good, infos


def _decoded(requests: Sequence[AnswerRequest], frame_size: int | None,
             failed: dict[str, str]) -> dict[str, dict[int, np.ndarray]]:
    """{file: {native index: frame}}: each file opened once, the union of its requested indices decoded. The
    requests that need a file that fails to decode go to failed."""
    wanted: dict[str, set[int]] = {}
    for req in requests:
        for video, i in zip(req.videos(), req.frame_indices):
            wanted.setdefault(video, set()).add(int(i))
    table: dict[str, dict[int, np.ndarray]] = {}
    for path, idx in wanted.items():
        union = sorted(idx)
        try:
            table[path] = dict(zip(union, read_frames(path, union, frame_size)))
        except VideoError as exc:
            failed.update({r.key: str(exc) for r in requests if path in r.videos() and r.key not in failed})
    return table


def _same_size(frames: list[np.ndarray]) -> np.ndarray:
    """Frames stacked at the first frame's size (frames from other files are resized to it, as the reference does
    for the clips of a haystack)."""
    h, w = frames[0].shape[:2]
    if all(f.shape[:2] == (h, w) for f in frames):
        return np.stack(frames)
    from PIL import Image

    return np.stack([f if f.shape[:2] == (h, w) else np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR))
                     for f in frames])


def prepare(requests: Sequence[AnswerRequest], style: PromptStyle,
            frame_size: int | None = None) -> tuple[list[Prepared], dict[str, str]]:
    """Prepared inputs for the requests that can be answered, and {key: reason} for those that cannot."""
    failed: dict[str, str] = {}
    good, infos = _checked(requests, failed)
    table = _decoded(good, frame_size, failed)
    ready: dict[str, Prepared] = {}
    for req in good:
        if req.key in failed:
            continue
        picked = _same_size([table[v][int(i)] for v, i in zip(req.videos(), req.frame_indices)])
        if req.frame_videos is None:
            info = infos[req.video]
            meta = video_metadata(req.frame_indices, info.native_fps, info.num_frames, picked.shape[1],
                                  picked.shape[2])
            duration = info.duration_s
        else:
            meta = composite_metadata(req, picked.shape[1], picked.shape[2])
            duration = meta["duration"]
        ready[req.key] = Prepared(req.key, _prompt(req, style, duration), picked, meta, len(req.options),
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
