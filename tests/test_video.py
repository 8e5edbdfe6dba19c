import os

import numpy as np
import pytest

from tspo_ray import video


def test_candidate_indices_hand_computed():
    # a 10 s video at 2 fps sampled at 1 fps: every other frame
    idx, ts = video.candidate_indices(20, 2.0, 1.0, 128)
    assert idx.tolist() == list(range(0, 20, 2)) and ts.tolist() == list(range(10))
    # thinned to 4 candidates: centres of 4 equal bins over the 10 one-per-second frames
    idx, ts = video.candidate_indices(20, 2.0, 1.0, 4)
    assert idx.tolist() == [2, 6, 12, 16] and ts.tolist() == [1.0, 3.0, 6.0, 8.0]
    idx, ts = video.candidate_indices(1, 30.0, 1.0, 128)
    assert idx.tolist() == [0] and ts.tolist() == [0.0]
    with pytest.raises(ValueError):
        video.candidate_indices(0, 2.0, 1.0, 4)


def test_decode_candidates(tiny_world):
    path = tiny_world / "videos" / "train-0000.mp4"
    frames, cands = video.decode_candidates(path, fps=1.0, max_candidates=16, size=32)
    assert frames.shape == (16, 32, 32, 3) and frames.dtype == np.uint8
    assert cands.info.native_fps == 2.0 and 60 <= cands.info.duration_s <= 81
    np.testing.assert_allclose(cands.timestamps_s, cands.frame_indices / 2.0)
    assert np.all(np.diff(cands.frame_indices) > 0)


def test_clear_errors_for_bad_files(tmp_path, tiny_world):
    with pytest.raises(video.VideoError, match="no such file"):
        video.candidates(tmp_path / "missing.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(video.VideoError, match="empty file"):
        video.candidates(empty)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(4096))
    with pytest.raises(video.VideoError, match="corrupt.mp4: cannot decode"):
        video.candidates(corrupt)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes((tiny_world / "videos" / "train-0000.mp4").read_bytes()[:2000])
    with pytest.raises(video.VideoError, match="truncated.mp4"):
        video.decode_candidates(truncated)
    with pytest.raises(video.VideoError, match="is a directory"):
        video.candidates(tmp_path)
    with pytest.raises(video.VideoError, match="out of range"):
        video.read_frames(tiny_world / "videos" / "train-0000.mp4", [0, 10**6])


def test_unreadable_file(tmp_path, tiny_world):
    if os.geteuid() == 0:
        pytest.skip("running as root: file permissions are not enforced")
    p = tmp_path / "locked.mp4"
    p.write_bytes((tiny_world / "videos" / "train-0000.mp4").read_bytes())
    p.chmod(0)
    with pytest.raises(video.VideoError, match="not readable"):
        video.candidates(p)
