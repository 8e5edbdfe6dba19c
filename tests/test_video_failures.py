"""Bad videos: a specific reason for every failure kind, known-bad files not decoded again, too-short videos named."""
import logging
import os
import shutil

import av
import numpy as np
import pytest
import torch

from tspo_ray.data.records import QARecord
from tspo_ray.splits import load_items
from tspo_ray.video import frames as video
from tspo_ray.video.encoders import load_encoder
from tspo_ray.video.features import FeatureStore, StoreSpec, extract_local


def write_clip(path, frames: int, fps: int = 4, size: int = 32, faststart: bool = False) -> str:
    """A real H.264 MP4 whose frame i has grey level 4*i."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 4 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return str(path)


def write_audio_only(path) -> str:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    return str(path)


@pytest.fixture(scope="module")
def good_clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clips") / "good.mp4", frames=40)


def _kinds(tmp_path, good_clip):
    data = open(good_clip, "rb").read()
    (tmp_path / "folder.mp4").mkdir()
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "garbage.mp4").write_bytes(os.urandom(4000))
    # the MP4 index (moov) is written last: a copy cut in half has none
    (tmp_path / "no_index.mp4").write_bytes(data[: len(data) // 2])
    faststart = open(write_clip(tmp_path / "fs.mp4", frames=40, faststart=True), "rb").read()
    (tmp_path / "cut_stream.mp4").write_bytes(faststart[: len(faststart) // 2])
    return {
        "missing": (str(tmp_path / "missing.mp4"), "no such file"),
        "a folder": (str(tmp_path / "folder.mp4"), "is a directory"),
        "empty": (str(tmp_path / "empty.mp4"), "empty file"),
        "not a container": (str(tmp_path / "garbage.mp4"), "not a readable video container"),
        "index missing": (str(tmp_path / "no_index.mp4"), "moov atom not found"),
        "stream cut short": (str(tmp_path / "cut_stream.mp4"), "partial file (the file ends early"),
        "no video stream": (write_audio_only(tmp_path / "audio.m4a"), "no video stream"),
    }


def test_every_failure_kind_has_a_specific_reason(tmp_path, good_clip):
    kinds = _kinds(tmp_path, good_clip)
    for kind, (path, expected) in kinds.items():
        with pytest.raises(video.VideoError) as err:
            video.decode_candidates(path, 1.0, None, 16)
        message = str(err.value)
        assert message.startswith(path), (kind, message)
        assert expected in message, (kind, message)
    # the one FFmpeg keeps to its log is explained, not only named
    with pytest.raises(video.VideoError, match="incomplete or was never finalised"):
        video.decode_candidates(kinds["index missing"][0], 1.0, None, 16)


class CountingEncoder:
    """The shipped tiny CLIP, counting how many frames it is asked to encode."""

    def __init__(self):
        self.inner = load_encoder({"backend": "embedded"})
        self.name, self.dim, self.frames = self.inner.name, self.inner.dim, 0

    def encode_frames(self, frames, batch_size=64):
        self.frames += len(frames)
        return self.inner.encode_frames(frames, batch_size)

    def encode_text(self, texts):
        return self.inner.encode_text(texts)


def test_known_bad_videos_are_not_decoded_again_unless_asked(tmp_path, good_clip, monkeypatch):
    bad = tmp_path / "bad.mp4"
    data = open(good_clip, "rb").read()
    bad.write_bytes(data[: len(data) // 2])  # no index
    encoder, store = CountingEncoder(), FeatureStore(tmp_path / "store")
    spec = StoreSpec(1.0, None, 16, encoder.name)
    first = extract_local([str(bad)], encoder, spec, store, progress=False)
    assert first["failed"] == 1 and "moov atom not found" in store.errors()[0]["reason"]

    decoded = []
    real = video.candidates  # the first step of decoding a video's candidates
    monkeypatch.setattr(video, "candidates", lambda *a, **k: decoded.append(a[0]) or real(*a, **k))
    again = extract_local([str(bad)], encoder, spec, store, progress=False)
    assert again["known_bad"] == 1 and again["failed"] == 0 and decoded == []
    retried = extract_local([str(bad)], encoder, spec, store, progress=False, retry_failed=True)
    assert retried["failed"] == 1 and decoded == [str(bad)]
    # a repaired file is a new file: tried again without being asked
    shutil.copy(good_clip, bad)
    os.utime(bad, ns=(1, 1))
    repaired = extract_local([str(bad)], encoder, spec, store, progress=False)
    assert repaired["encoded"] == 1 and encoder.frames == 10  # 40 frames at 4 fps: a 10-candidate grid


def test_short_videos_are_skipped_below_the_minimum_and_warned_below_t_s(tmp_path, caplog):
    one = write_clip(tmp_path / "one.mp4", frames=1)
    five = write_clip(tmp_path / "five.mp4", frames=20)  # 5 s at 4 fps: 5 candidates
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(os.urandom(3000))
    encoder, store = CountingEncoder(), FeatureStore(tmp_path / "store")
    spec = StoreSpec(1.0, None, 16, encoder.name)
    extract_local([one, five, str(broken)], encoder, spec, store, progress=False)
    records = [QARecord(id=name, video=f"{name}.mp4", question="What is shown?", options=["a", "b"], answer="A")
               for name in ("one", "five", "broken")]
    with caplog.at_level(logging.WARNING, logger="tspo_ray.video.features"):
        items, skipped = load_items(records, tmp_path, store, spec, encoder, min_candidates=2, num_frames=8)
    assert [it.key for it in items] == ["five"]
    reasons = {s["id"]: s["reason"] for s in skipped}
    assert reasons["one"] == "one.mp4: only 1 candidate frame(s), fewer than the minimum of 2 (data.min_video_candidates)"
    # the decoder's own reason reaches the skipped list, named by the record's path and not the server's
    assert reasons["broken"].startswith("broken.mp4: cannot decode") and str(tmp_path) not in reasons["broken"]
    assert "fewer candidate frames than T_s=8" in caplog.text and "five.mp4 (5)" in caplog.text


def test_features_encoded_chunk_by_chunk_equal_one_pass(tmp_path, good_clip):
    from tspo_ray.video.decode import decode_sequential, iter_sequential
    from tspo_ray.video.features import compute_video_features

    indices = list(range(0, 40, 3))
    chunks = list(iter_sequential(good_clip, indices, 16, chunk=4))
    whole = decode_sequential(good_clip, indices, 16)
    assert [len(c.frames) for c in chunks] == [4, 4, 4, 2]
    assert np.array_equal(np.concatenate([c.frames for c in chunks]), whole.frames)
    assert np.allclose(np.concatenate([c.timestamps_s for c in chunks]), whole.timestamps_s)
    with pytest.raises(ValueError, match="increasing order"):
        next(iter_sequential(good_clip, [5, 2], 16))
    encoder = CountingEncoder()
    spec = StoreSpec(4.0, None, 16, encoder.name)  # every frame of the 4-fps clip: 40 candidates
    small = compute_video_features(good_clip, encoder, spec, chunk=7)
    big = compute_video_features(good_clip, encoder, spec, chunk=256)
    assert small.frame_features.shape == (40, encoder.dim) and np.array_equal(small.frame_indices, np.arange(40))
    assert torch.allclose(small.frame_features, big.frame_features, atol=1e-5)
