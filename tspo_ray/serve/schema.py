"""Request and response models of the keyframe-selection API (unknown fields are rejected)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Every numeric field is finite and bounded: a value the schema admits is one the service can compute with (a rate of
# 5e-324 fps once overflowed to an infinite frame step and a 500).
MAX_FRAMES = 256
MIN_CANDIDATE_FPS = 0.001  # one candidate per 1,000 s
MAX_CANDIDATE_FPS = 30.0
MAX_CANDIDATES = 1024


class SelectRequest(BaseModel):
    """POST /select: pick num_frames keyframes of a video for a question."""

    model_config = ConfigDict(extra="forbid")

    #: a path relative to (or inside) one of the service's video roots, or a URL of an allowed scheme
    video: str = Field(min_length=1, max_length=4096)
    #: the question stem (options are not needed for selection)
    question: str = Field(max_length=4096)
    #: T_s, the number of keyframes to return (fewer when the video has fewer candidates)
    num_frames: int = Field(ge=1, le=MAX_FRAMES)
    #: the selector, SCORER:METHOD (clip|agent x top-k|bin-max|aks|top-k+edges|events) or uniform, clip-top-k, bin-max;
    #: "agent" is the TSPO temporal agent with its recorded inference method
    method: str = Field(default="agent", max_length=64)
    #: candidate sampling rate (frames per second); the service default when omitted; rounded to the nearest of the
    #: service's steps (0.001, 0.002, 0.005, ... 1, 2, 4, 5, 10, 15, 30)
    candidate_fps: float | None = Field(default=None, ge=MIN_CANDIDATE_FPS, le=MAX_CANDIDATE_FPS, allow_inf_nan=False)
    #: T_c, the cap on candidate frames; the service default when omitted; rounded down to the service's steps
    #: (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, ... 1024)
    max_candidates: int | None = Field(default=None, ge=1, le=MAX_CANDIDATES)
    #: also return the selected frames as base64 JPEG thumbnails
    return_frames: bool = False

    @field_validator("method")
    @classmethod
    def _known_selector(cls, v: str) -> str:
        from tspo_ray.method.selection_methods import parse_selector

        parse_selector(v)  # ValueError names the valid selectors
        return v

    @field_validator("question")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("question must not be empty")
        return v


class SelectResponse(BaseModel):
    """The selection: native frame indices and timestamps in temporal order, with the selector's scores."""

    frame_indices: list[int]
    timestamps_s: list[float]
    #: the ranking scores of the selected frames (None for uniform, which does not score)
    scores: list[float] | None
    method: str
    #: which agent weights (or "random-init") and encoder produced it
    model_version: str
    #: decode_encode_ms, text_ms, select_ms, total_ms, cache_hit (1.0 / 0.0)
    timings_ms: dict[str, float]
    num_candidates: int
    #: the candidate rate and cap used: the request's, rounded onto the service's steps (service.candidate_settings)
    candidate_fps: float | None = None
    max_candidates: int | None = None
    #: base64 JPEG thumbnails of the selected frames (only with return_frames)
    frames_jpeg_b64: list[str] | None = None
