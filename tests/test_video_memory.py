"""Decoding holds memory bounded by the chunk and the frame size: full-size frames (the lmms-eval plug-in's features
and clips) come in chunks of at most CHUNK_BYTES, a clip is encoded as it is decoded, and a frame size past
MAX_FRAME_PIXELS is refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tspo_ray.video import clips
from tspo_ray.video import decode as video_decode
from tspo_ray.video import frames as video_io
from tspo_ray.video.info import VideoError

SIDE = 64
FRAME_BYTES = SIDE * SIDE * 3


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    import av

    path = tmp_path_factory.mktemp("mem") / "v.mp4"
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("mpeg4", rate=4)
        s.width = s.height = SIDE
        s.pix_fmt = "yuv420p"
        for i in range(24):
            frame = np.full((SIDE, SIDE, 3), i * 10, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_a_chunk_of_full_size_frames_ends_at_the_byte_budget(video):
    chunks = list(video_decode.iter_sequential(video, range(0, 24, 2), max_chunk_bytes=3 * FRAME_BYTES))
    assert [len(c.frames) for c in chunks] == [3, 3, 3, 3]
    whole = video_decode.decode_sequential(video, range(0, 24, 2)).frames
    assert np.array_equal(np.concatenate([c.frames for c in chunks]), whole)


class _CountingEncoder:
    name = "counting"

    def __init__(self):
        self.batches = []

    def encode_frames(self, frames, batch_size=64):
        self.batches.append(len(frames))
        return torch.zeros(len(frames), 4)


def test_the_plug_ins_features_decode_full_size_frames_a_bounded_chunk_at_a_time(video, monkeypatch):
    from tspo_ray.video.features import StoreSpec, compute_video_features

    monkeypatch.setattr(video_decode, "CHUNK_BYTES", 5 * FRAME_BYTES)
    encoder = _CountingEncoder()
    feats = compute_video_features(video, encoder, StoreSpec(4.0, None, None, "counting"))  # as tspo_select's
    assert len(feats.frame_indices) == 24 and max(encoder.batches) <= 5 and sum(encoder.batches) == 24


def test_a_clip_is_encoded_as_it_is_decoded(video, tmp_path, monkeypatch):
    monkeypatch.setattr(video_decode, "CHUNK_BYTES", 2 * FRAME_BYTES)

    def whole(*a, **kw):
        raise AssertionError("the clip's frames were decoded all at once")

    monkeypatch.setattr(video_io, "read_frames", whole)
    out = clips.write_selection_clip(video, [3, 9, 15, 21], [0.75, 2.25, 3.75, 5.25], tmp_path / "clip.mp4")
    import av

    with av.open(str(out)) as c:
        got = [f.to_ndarray(format="rgb24").mean() for f in c.decode(video=0)]
    assert len(got) == 4 and np.allclose(got, [30, 90, 150, 210], atol=6)


def test_a_frame_size_past_the_limit_is_refused(video, monkeypatch):
    monkeypatch.setattr(video_decode, "MAX_FRAME_PIXELS", SIDE * SIDE - 1)
    with pytest.raises(VideoError, match=rf"v.mp4: frames of {SIDE}x{SIDE} are larger than"):
        video_io.read_frames(video, [0])


def test_decord_chunks_of_full_size_frames_end_at_the_byte_budget_too(video, monkeypatch):
    monkeypatch.setattr(video_decode, "CHUNK_BYTES", 4 * FRAME_BYTES)
    chunks = list(video_io.iter_frames(video, range(0, 24, 2), backend="decord"))
    assert [len(c) for c in chunks] == [4, 4, 4]
