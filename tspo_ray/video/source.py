"""How every decoder opens a video: one plain file, through an allowlist of container formats.

FFmpeg picks a demuxer by what a file looks like, and some demuxers open other files: an HLS playlist (.m3u8) or an
ffconcat list names files or URLs anywhere, an image-sequence pattern names many files. A path check on the playlist
would then say nothing about what gets decoded. So a video is opened here, once, as a plain regular file:

- the path is resolved, then opened with O_NOFOLLOW, and the descriptor's own path (/proc/self/fd) must be the path
  resolved: a component swapped for a symlink between the two is refused. A CheckedPath (a path a caller has checked,
  e.g. Serve's video roots) must be the very file opened;
- FFmpeg (PyAV, and decord after PyAV has accepted the same file) reads /proc/self/fd/N: the file descriptor's own
  file, whatever happens to the name afterwards, with the `file` protocol only;
- only the demuxers of ALLOWED_FORMATS may read it (FFmpeg's format_whitelist, checked before the demuxer reads its
  header), and a file that starts like a playlist or a concat list is refused before FFmpeg sees it (decord bundles
  an older FFmpeg, which takes a playlist for HLS whatever its name).

A URL (only where a caller allows its scheme, as Serve's url_schemes) is opened with that scheme's protocols and the
same demuxer allowlist.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from pathlib import Path
from typing import Iterator

from tspo_ray.video.info import CheckedPath, VideoError

#: the containers of real benchmark videos (LongVideoBench, MLVU, Video-MME, LVBench, TSPO-10K: MP4; others MKV,
#: WebM, AVI, MPEG-TS), by FFmpeg demuxer name ("mov,mp4,m4a,3gp,3g2,mj2" is one demuxer, "matroska,webm" another)
ALLOWED_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "mpegts")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_URL_PROTOCOLS = {"http": "http,tcp", "https": "https,tls,tcp"}
# what a refused demuxer would have done, for the message
_REFUSED = {
    "hls": "an HLS playlist, whose entries FFmpeg would open",
    "concat": "an ffconcat list, whose entries FFmpeg would open",
    "image2": "an image or an image sequence",
    "_pipe": "an image",
}
# file heads of lists that name other files (leading whitespace and a UTF-8 BOM skipped)
_LIST_HEADS = ((b"#EXTM3U", "an HLS playlist (#EXTM3U), whose entries FFmpeg would open"),
               (b"ffconcat", "an ffconcat list, whose entries FFmpeg would open"))


def url_scheme(location: str) -> str | None:
    m = _SCHEME.match(location)
    return m.group(1).lower() if m else None


def ffmpeg_options(location: str) -> dict[str, str]:
    """FFmpeg's own allowlists for opening `location` (a /proc/self/fd path or a URL)."""
    scheme = url_scheme(location)
    protocols = "file" if scheme is None else _URL_PROTOCOLS.get(scheme, scheme)
    return {"format_whitelist": ",".join(ALLOWED_FORMATS), "protocol_whitelist": protocols}


def refusal(path: str, ffmpeg_lines) -> str | None:
    """The reason for a refusal FFmpeg logged ("Format hls not on whitelist ...", or without the name), or None."""
    for line in ffmpeg_lines:
        m = re.search(r"Format (?:(\S+) )?not on whitelist", line)
        if m:
            fmt = m.group(1)
            what = (_REFUSED.get(fmt) or next((v for k, v in _REFUSED.items() if k in fmt), None)) if fmt else None
            allowed = f"only these containers are read: {', '.join(ALLOWED_FORMATS)}"
            if what:
                return f"{path}: refused: {what}; {allowed}"
            return (f"{path}: cannot decode (not a readable video container: FFmpeg reads it as "
                    f"{fmt or 'a format outside the allowlist'}; {allowed})")
    return None


def _open_fd(path) -> int:
    """A read-only descriptor of `path`'s regular file, its path checked against the descriptor's own."""
    name = str(path)
    real = os.path.realpath(name)
    if isinstance(path, CheckedPath) and real != name:
        raise VideoError(f"{name}: refused: the path changed after it was checked (a symlink now stands in it)")
    try:  # O_NONBLOCK: a FIFO answers at once (and is refused below) instead of waiting for a writer
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise VideoError(f"{name}: cannot be opened ({exc.strerror or exc}; the file may have been swapped for a "
                         f"symlink while it was opened)" if exc.errno == errno.ELOOP else
                         f"{name}: cannot be opened ({exc.strerror or exc})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise VideoError(f"{name}: refused: not a regular file")
        own = _fd_path(fd)
        if own is not None and own != real:
            raise VideoError(f"{name}: refused: the file opened is not the one checked (the path changed while "
                             f"it was opened)")
        head = os.pread(fd, 64, 0).lstrip(b"\xef\xbb\xbf").lstrip()
        for magic, what in _LIST_HEADS:
            if head.startswith(magic):
                raise VideoError(f"{name}: refused: {what}; only these containers are read: "
                                 f"{', '.join(ALLOWED_FORMATS)}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fd_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc (not Linux): the O_NOFOLLOW open and the realpath are the check
        return None


@contextlib.contextmanager
def video_location(path: str | Path) -> Iterator[str]:
    """The location FFmpeg is to open for `path`: /proc/self/fd/N of the checked plain file, held open while the
    block runs (or the URL itself). Raises VideoError naming the file and the reason."""
    name = str(path)
    if url_scheme(name) is not None:
        yield name
        return
    fd = _open_fd(path)
    try:
        yield f"/proc/self/fd/{fd}" if _fd_path(fd) is not None else os.path.realpath(name)
    finally:
        os.close(fd)
