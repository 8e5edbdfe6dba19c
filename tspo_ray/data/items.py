"""A question with its video's candidate features: what the agent, the answerers and the rewards work on."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tspo_ray.data.records import QARecord


@dataclass
class FeatureItem:
    """One question with its precomputed features: what the agent and the reward function need."""

    record: QARecord
    frame_features: torch.Tensor  # [T, D] CLIP features of the candidates
    text_feature: torch.Tensor  # [D] CLIP feature of the question stem
    frame_indices: np.ndarray  # [T] native frame index of each candidate
    timestamps_s: np.ndarray  # [T]
    video_path: str  # resolved path of the video file
    #: [T] the file of each candidate, for candidates drawn from several files (a needle-in-a-haystack item built
    #: by tspo_ray.data.haystack); frame_indices and timestamps_s are then native to each candidate's own file.
    #: None: every candidate is a frame of video_path.
    frame_videos: tuple[str, ...] | None = None
    #: [T] bool, True where a candidate is a frame of the question's own video (haystack items: R_T is the
    #: selection's masked fraction); None: not a haystack item
    target_mask: np.ndarray | None = None

    @property
    def key(self) -> str:
        return self.record.id
