"""Videos are opened as one plain file through an allowlist of demuxers: a playlist, a concat list or an image inside a
video root never makes a decoder read a file outside it, and a path checked by Serve is the file decoded."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tspo_ray.serve.access import RequestError, resolve_video
from tspo_ray.video import decode as video_decode
from tspo_ray.video import frames as video_io
from tspo_ray.video.info import VideoError

BACKENDS = ("pyav", "decord")


def _write_video(path: Path, value: int, n: int = 12) -> Path:
    import av

    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("mpeg4", rate=4)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        for _ in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), value, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.fixture
def layout(tmp_path):
    """root/ (the allowed video root) holding a video, and outside/secret.mp4 (bright: 200) beside it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    _write_video(root / "inside.mp4", 40)
    _write_video(outside / "secret.mp4", 200)
    return root, outside


def _playlist(target: Path) -> str:
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:3.0,\n{target}\n#EXT-X-ENDLIST\n"


def _refused(location, backend, needle):
    with pytest.raises(VideoError) as err:
        video_io.read_frames(location, [0, 1], backend=backend)
    assert str(err.value).startswith(str(location)) and needle in str(err.value)
    with pytest.raises(VideoError):
        video_io.probe(location, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_hls_playlist_in_a_root_does_not_reach_a_video_outside(layout, backend):
    root, outside = layout
    (root / "list.m3u8").write_text(_playlist(Path("..") / "outside" / "secret.mp4"))
    location = resolve_video("list.m3u8", [root])  # the path check passes: the playlist is inside the root
    _refused(location, backend, "HLS playlist")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_playlist_renamed_mp4_is_refused(layout, backend):
    root, outside = layout
    (root / "movie.mp4").write_text(_playlist(outside / "secret.mp4"))
    _refused(resolve_video("movie.mp4", [root]), backend, "HLS playlist")


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_ffconcat_list_is_refused(layout, backend):
    root, outside = layout
    (root / "escape").symlink_to(outside)  # a concat list's "safe" entries may still pass through a symlink
    (root / "list.ffconcat").write_text("ffconcat version 1.0\nfile 'escape/secret.mp4'\n")
    (root / "list2.mp4").write_text("ffconcat version 1.0\nfile 'escape/secret.mp4'\n")
    _refused(resolve_video("list.ffconcat", [root]), backend, "ffconcat")
    _refused(resolve_video("list2.mp4", [root]), backend, "ffconcat")


def test_an_image_is_refused_by_the_demuxer_allowlist(layout):
    from PIL import Image

    root, _ = layout
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "still.png")
    with pytest.raises(VideoError, match=r"still.png: cannot decode .*only these containers are read: mov"):
        video_decode.probe(root / "still.png")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_symlink_swapped_in_after_the_check_is_not_decoded(layout, backend):
    root, outside = layout
    (root / "sub").mkdir()
    _write_video(root / "sub" / "v.mp4", 40)
    checked = resolve_video("sub/v.mp4", [root])
    assert video_io.read_frames(checked, [0], backend=backend).mean() < 100  # before the swap: the inside video
    # a component of the checked path becomes a symlink out of the root
    os.rename(root / "sub", root / "old")
    (root / "sub").symlink_to(outside)
    os.rename(outside / "secret.mp4", outside / "v.mp4")
    with pytest.raises(VideoError, match=r"sub/v.mp4: refused: the path changed after it was checked"):
        video_io.read_frames(checked, [0], backend=backend)
    # the last component swapped for a symlink
    os.remove(root / "sub")
    os.rename(root / "old", root / "sub")
    checked = resolve_video("sub/v.mp4", [root])
    os.remove(root / "sub" / "v.mp4")
    (root / "sub" / "v.mp4").symlink_to(outside / "v.mp4")
    with pytest.raises(VideoError, match="refused"):
        video_io.read_frames(checked, [0], backend=backend)


def test_an_unchecked_path_may_still_be_a_symlink(layout):
    """Only Serve's checked paths must be symlink-free: a dataset folder of symlinks still decodes."""
    root, outside = layout
    (root / "link.mp4").symlink_to(outside / "secret.mp4")
    assert video_io.read_frames(str(root / "link.mp4"), [0]).mean() > 150


def test_serve_answers_a_playlist_with_a_4xx_naming_the_file(layout):
    from tspo_ray.serve.service import KeyframeService, ServeSettings

    root, outside = layout
    (root / "list.m3u8").write_text(_playlist(Path("..") / "outside" / "secret.mp4"))
    svc = KeyframeService(ServeSettings(video_roots=[str(root)]))
    location = resolve_video("list.m3u8", [root])
    with pytest.raises(RequestError) as err:
        svc.video_features(location, 1.0, 8)
    assert err.value.status == 422 and "list.m3u8: refused: an HLS playlist" in err.value.message
    with pytest.raises(RequestError) as err:
        svc.thumbnails(location, [0])
    assert err.value.status == 422 and "HLS playlist" in err.value.message
