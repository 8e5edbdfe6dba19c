"""tspo_ray.video.decode: the sequential PyAV decoder and the keyframe fast mode on a real 720p H.264 clip."""
import av
import numpy as np
import pytest

from tspo_ray.video import decode as video_decode
from tspo_ray.video import frames as video

FPS, GOP, FRAMES = 30, 30, 75


def brightness(i: int) -> int:
    return 20 + 3 * i  # frame i's level: tells which frame came back


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """2.5 s of 1280x720 H.264 at 30 fps (B-frames on), a keyframe every 30 frames and no scene-cut keyframes."""
    path = tmp_path_factory.mktemp("h264") / "clip.mp4"
    ramp = np.linspace(0, 40, 1280, dtype=np.float32)[None, :, None]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=FPS, options={"preset": "ultrafast", "x264-params": "scenecut=0:bframes=2"})
        s.width, s.height, s.pix_fmt, s.gop_size = 1280, 720, "yuv420p", GOP
        for i in range(FRAMES):
            img = np.broadcast_to(brightness(i) + ramp, (720, 1280, 3)).astype(np.uint8)
            for packet in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def all_frames(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_sequential_returns_the_requested_frames_in_request_order(clip):
    want = [74, 0, 29, 30, 31, 5, 5, 60]
    got = video_decode.decode_sequential(clip, want)
    reference = all_frames(clip)
    assert len(reference) == FRAMES
    np.testing.assert_array_equal(got.frames, reference[want])  # the same frames as decoding everything
    levels = got.frames[:, :, :8].mean(axis=(1, 2, 3))  # the left edge, where the ramp adds ~0
    np.testing.assert_allclose(levels, [brightness(i) for i in want], atol=2.5)
    np.testing.assert_allclose(got.timestamps_s, np.array(want) / FPS, atol=1e-9)
    assert got.max_time_error_s < 1e-9


def test_sequential_matches_decord(clip):
    import decord

    want = [0, 15, 30, 45, 60, 74]
    reader = decord.VideoReader(str(clip), num_threads=1)
    ours = video_decode.decode_sequential(clip, want).frames.astype(int)
    theirs = reader.get_batch(want).asnumpy().astype(int)
    assert ours.shape == theirs.shape == (6, 720, 1280, 3)
    assert np.abs(ours - theirs).max() <= 2


def test_resize_while_converting(clip):
    got = video_decode.decode_sequential(clip, [0, 40], size=224)
    assert got.frames.shape == (2, 224, 224, 3)
    np.testing.assert_allclose(got.frames[:, :, :4].mean(axis=(1, 2, 3)), [brightness(0), brightness(40)], atol=2.5)


def test_keyframe_mode_gives_the_nearest_keyframe_and_its_error(clip):
    # keyframes at frames 0, 30, 60 (t = 0, 1, 2 s)
    got = video_decode.decode_keyframes_nearest(clip, [0, 14, 16, 44, 74])
    np.testing.assert_allclose(got.timestamps_s, [0, 0, 1, 1, 2], atol=1e-9)
    np.testing.assert_allclose(got.frames[:, :, :8].mean(axis=(1, 2, 3)),
                               [brightness(i) for i in (0, 0, 30, 30, 60)], atol=2.5)
    assert got.max_time_error_s == pytest.approx(14 / 30)


def test_decode_candidates_modes_and_backends(clip):
    exact, cands = video.decode_candidates(clip, fps=1.0, size=32)
    assert cands.frame_indices.tolist() == [0, 30, 60] and exact.shape == (3, 32, 32, 3)
    by_decord, _ = video.decode_candidates(clip, fps=1.0, size=32, backend="decord")
    assert np.abs(exact.astype(int) - by_decord.astype(int)).mean() < 2
    fast, fast_cands = video.decode_candidates(clip, fps=2.0, size=32, mode="keyframes")
    assert fast_cands.timestamps_s.tolist() == [0, 0, 1, 1, 2] and fast.shape == (5, 32, 32, 3)
    with pytest.raises(ValueError, match="back end"):
        video.decode_candidates(clip, backend="opencv")
    with pytest.raises(ValueError, match="mode"):
        video.decode_candidates(clip, mode="fastest")


def test_truncated_and_corrupt_h264_files_name_the_file_and_reason(clip, tmp_path):
    data = clip.read_bytes()
    # moov at the end (PyAV's default): a cut file has no index at all
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(video.VideoError, match=r"cut\.mp4: cannot decode \(not a readable video container"):
        video.decode_candidates(cut)
    # the index first (faststart), the frames cut off after half the payload: 75 frames listed, fewer present
    faststart = tmp_path / "faststart.mp4"
    with av.open(str(clip)) as src, av.open(str(faststart), "w", options={"movflags": "faststart"}) as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    full = faststart.read_bytes()
    assert b"moov" in full[:200]
    cut_frames = tmp_path / "cut_frames.mp4"
    cut_frames.write_bytes(full[: len(full) // 2])
    with pytest.raises(video.VideoError, match=r"cut_frames\.mp4: truncated or corrupt: the stream ends after \d+ "):
        video_decode.decode_sequential(cut_frames, [0, 74])
    with pytest.raises(video.VideoError, match=r"clip\.mp4: frame indices out of range 0\.\.74: \[75\]"):
        video.read_frames(clip, [3, 75])
