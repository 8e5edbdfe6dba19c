"""tspo_ray.video.frames: candidate sampling math (hand-computed), decoding real files, clear errors for bad files."""
import json
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from tspo_ray.video import frames as video


def write_flat_video(path, values, fps=2, size=32, **container_options):
    """A real MPEG-4 file whose frame i is a flat grey of brightness values[i]."""
    with av.open(str(path), "w", options=container_options) as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.gop_size = 4
        for v in values:
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), v, np.uint8), format="rgb24")
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def test_candidate_indices_hand_computed():
    # a 10 s video at 2 fps sampled at 1 fps: every other frame
    idx, ts = video.candidate_indices(20, 2.0, 1.0, 128)
    assert idx.tolist() == list(range(0, 20, 2)) and ts.tolist() == list(range(10))
    # capped at 4: as upstream, floor(linspace(0, 19, 4)) over ALL native frames = 0, 6.33, 12.67, 19
    idx, ts = video.candidate_indices(20, 2.0, 1.0, 4)
    assert idx.tolist() == [0, 6, 12, 19] and ts.tolist() == [0.0, 3.0, 6.0, 9.5]
    # no cap (evaluation): the whole grid, whatever its length
    idx, _ = video.candidate_indices(16_384 * 30, 30.0)
    assert len(idx) == 16_384 and idx[-1] == 16_383 * 30
    # a one-frame video has one candidate at t=0
    idx, ts = video.candidate_indices(1, 30.0, 1.0, 128)
    assert idx.tolist() == [0] and ts.tolist() == [0.0]
    # 3 s at 25 fps sampled at 1 fps: frames 0, 25, 50
    idx, ts = video.candidate_indices(75, 25.0, 1.0, 128)
    assert idx.tolist() == [0, 25, 50] and ts.tolist() == [0.0, 1.0, 2.0]
    # asking for more than the native rate gives every frame once, not duplicates
    idx, _ = video.candidate_indices(4, 1.0, 2.0, 128)
    assert idx.tolist() == [0, 1, 2, 3]
    # 1.5 s at 2 fps (3 frames) at 1 fps: t = 0, 1 -> frames 0, 2
    assert video.candidate_indices(3, 2.0, 1.0, 128)[0].tolist() == [0, 2]


def test_candidate_grid_is_the_reference_round_native_fps_step():
    # 29.97 fps: every round(29.97) = 30th frame; timestamps are the true times index / 29.97
    idx, ts = video.candidate_indices(300, 29.97)
    assert idx.tolist() == list(range(0, 300, 30))
    np.testing.assert_allclose(ts, np.arange(0, 300, 30) / 29.97)
    # Python's round, half to even, as upstream: 2.5 fps -> every 2nd frame, 3.5 fps -> every 4th
    assert video.grid_step(2.5) == 2 and video.grid_step(3.5) == 4 and video.grid_step(23.976) == 24
    # below 1 fps upstream's step would be 0 (0.4 fps) or stays 1 (0.7 fps): here every frame, never a crash
    assert video.grid_step(0.4) == 1 and video.grid_step(0.7) == 1
    assert video.candidate_indices(5, 0.4)[0].tolist() == [0, 1, 2, 3, 4]
    # another rate: 2 fps from 30 fps is every 15th frame
    assert video.candidate_indices(61, 30.0, fps=2.0)[0].tolist() == [0, 15, 30, 45, 60]


def test_training_cap_resamples_long_and_short_grids_like_the_reference():
    # 20 s at 30 fps: a 20-frame grid, shorter than 50 -> 128 frames from linspace(0, 599, 128)
    idx, ts = video.candidate_indices(600, 30.0, 1.0, max_candidates=128, min_candidates=50)
    assert len(idx) == 128 and idx.tolist() == np.linspace(0, 599, 128).astype(int).tolist()
    assert idx[:3].tolist() == [0, 4, 9] and idx[-1] == 599
    # 100 s: 100 grid frames, between 50 and 128 -> kept as they are
    assert video.candidate_indices(3000, 30.0, 1.0, 128, 50)[0].tolist() == list(range(0, 3000, 30))
    # 300 s: longer than 128 -> re-sampled over the native frames
    idx, _ = video.candidate_indices(9000, 30.0, 1.0, 128, 50)
    assert len(idx) == 128 and idx[0] == 0 and idx[-1] == 8999


@pytest.mark.parametrize("args", [(0, 2.0, 1.0, 4), (10, 0.0, 1.0, 4), (10, float("nan"), 1.0, 4),
                                  (10, 2.0, 0.0, 4), (10, 2.0, 1.0, 0)])
def test_candidate_indices_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        video.candidate_indices(*args)


def test_probe_reports_the_written_frame_count_and_rate(tiny_world):
    plans = [json.loads(line) for line in (tiny_world / "plans" / "train.jsonl").read_text().splitlines()]
    for plan in plans:
        info = video.probe(tiny_world / "videos" / f"{plan['video_id']}.mp4")
        assert info.num_frames == plan["num_frames"] and info.native_fps == 2.0
        assert info.duration_s == plan["duration_s"]


def test_decode_candidates_shapes_and_timestamps(tiny_world):
    path = tiny_world / "videos" / "train-0000.mp4"
    n = video.probe(path).num_frames
    frames, cands = video.decode_candidates(path, fps=1.0, max_candidates=16, size=32)
    assert frames.shape == (16, 32, 32, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(cands.timestamps_s, cands.frame_indices / 2.0)
    expected_idx, _ = video.candidate_indices(n, 2.0, 1.0, 16)
    np.testing.assert_array_equal(cands.frame_indices, expected_idx)
    # below the cap every second of the video is a candidate: t = 0, 1, 2, ...
    frames, cands = video.decode_candidates(path, fps=1.0, max_candidates=1000)
    assert frames.shape == (len(range(0, n, 2)), 128, 128, 3)
    assert cands.timestamps_s.tolist() == [float(t) for t in range(len(frames))]


def test_read_frames_returns_the_requested_frames_in_order(tmp_path):
    path = write_flat_video(tmp_path / "ramp.mp4", [10 * i for i in range(12)])
    frames = video.read_frames(path, [7, 0, 11, 3])
    np.testing.assert_allclose(frames.reshape(4, -1).mean(1), [70, 0, 110, 30], atol=4)
    for size in (8, 16, 20, 48, 64):  # decord's own resizing fails for 8, 16 and 48 px
        small = video.read_frames(path, [5, 2], size=size)
        assert small.shape == (2, size, size, 3)
        np.testing.assert_allclose(small.reshape(2, -1).mean(1), [50, 20], atol=4)


def test_one_frame_video(tmp_path):
    path = write_flat_video(tmp_path / "one.mp4", [128])
    frames, cands = video.decode_candidates(path)
    assert cands.info.num_frames == 1 and cands.frame_indices.tolist() == [0] and frames.shape == (1, 32, 32, 3)


def test_clear_errors_for_bad_files(tmp_path, tiny_world):
    good = tiny_world / "videos" / "train-0000.mp4"
    with pytest.raises(video.VideoError, match="missing.mp4: no such file"):
        video.candidates(tmp_path / "missing.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(video.VideoError, match="empty.mp4: empty file"):
        video.candidates(empty)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(video.VideoError, match="corrupt.mp4: cannot decode"):
        video.candidates(corrupt)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 100)
    with pytest.raises(video.VideoError, match="notes.mp4: cannot decode"):
        video.candidates(text)
    truncated = tmp_path / "truncated.mp4"  # index (moov) at the end: cut off
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(video.VideoError, match="truncated.mp4"):
        video.decode_candidates(truncated)
    with pytest.raises(video.VideoError, match="is a directory"):
        video.candidates(tmp_path)
    with pytest.raises(video.VideoError, match=r"out of range 0\.\.\d+: \[1000000\]"):
        video.read_frames(good, [0, 10**6])
    with pytest.raises(video.VideoError, match="no frame indices"):
        video.read_frames(good, [])


def test_truncated_faststart_file_is_an_error_not_garbage(tmp_path):
    # index at the front, frames cut off: the container opens but the frames are gone
    full = write_flat_video(tmp_path / "full.mp4", list(range(0, 200)), movflags="faststart")
    data = full.read_bytes()
    assert data[4:8] == b"ftyp" and b"moov" in data[:64]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(video.VideoError, match="cut.mp4"):
        video.decode_candidates(cut)


def candidates_as_another_user(path) -> str:
    """video.candidates(path) in a forked child that has become an unprivileged user (root reads any file whatever
    its mode, so a mode of 000 means something only to another user): what it found, as text."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, try the file, report, and leave without running pytest's exit handlers
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                video.candidates(path)
                found = "read"
            except video.VideoError as err:
                found = f"VideoError: {err}"
            os.write(write_end, found.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        found = fh.read().decode()
    os.waitpid(pid, 0)
    return found


def test_unreadable_file(tmp_path, tiny_world):
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="unreadable-"))  # outside tmp_path: pytest keeps that one private to root
    try:
        folder.chmod(0o755)
        p = folder / "locked.mp4"
        p.write_bytes((tiny_world / "videos" / "train-0000.mp4").read_bytes())
        p.chmod(0)
        if os.geteuid() == 0:
            assert candidates_as_another_user(p).startswith(f"VideoError: {p}: not readable")
            p.chmod(0o644)  # the same file, readable: the check above failed for the mode and nothing else
            assert candidates_as_another_user(p) == "read"
        else:
            with pytest.raises(video.VideoError, match="locked.mp4: not readable"):
                video.candidates(p)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_selection_clip_holds_exactly_the_selected_frames_at_their_times(tmp_path):
    from helpers.tiny_models import write_ramp_video
    from tspo_ray.video.clips import write_selection_clip

    source = write_ramp_video(tmp_path / "ramp.mp4", num_frames=20)
    indices, times = [15, 1, 9, 4], [7.5, 0.5, 4.5, 2.0]  # any order: the clip is in time order
    clip = write_selection_clip(source, indices, times, tmp_path / "clips" / "c.mp4")
    got = video.read_frames(clip, range(4))
    want = video.read_frames(source, sorted(indices))
    assert got.shape == want.shape and np.abs(got.astype(int) - want.astype(int)).mean() < 4
    assert video.probe(clip).num_frames == 4

    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        pts = [float(f.pts * stream.time_base) for f in container.decode(stream)]
    assert np.allclose(np.diff(pts), np.diff(sorted(times)), atol=1e-3)  # the gaps between the frames' own times
    assert not list((tmp_path / "clips").glob(".*"))  # written under a temporary name, renamed into place
    with pytest.raises(ValueError, match="increase"):
        write_selection_clip(source, [1, 2], [1.0, 1.0], tmp_path / "bad.mp4")


def test_a_forged_huge_frame_count_never_allocates_the_whole_grid():
    """The capped grid is computed arithmetically, and an uncapped grid past MAX_GRID is refused: a header claiming
    10^13 frames would otherwise ask numpy for 2.7 TB of indices (a 30-frame step) before the cap."""
    import tracemalloc

    from tspo_ray.video.info import VideoError

    forged = 10**13
    tracemalloc.start()
    idx, ts = video.candidate_indices(forged, 30.0, 1.0, max_candidates=128, min_candidates=50)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(idx) == 128 and idx[0] == 0 and idx[-1] == forged - 1 and peak < 1 << 20
    with pytest.raises(VideoError, match="longer than"):
        video.candidate_indices(forged, 30.0)
