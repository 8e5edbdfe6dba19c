"""Which videos the service may read: files inside configured roots (after resolving symlinks), or URLs of
configured schemes. Pure functions; the app turns RequestError into a 4xx answer."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from tspo_ray.video.info import CheckedPath

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class RequestError(ValueError):
    """Bad client input: carries the HTTP status and an error kind for the JSON answer."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def relative_to_roots(text: str, roots: Sequence[str | Path]) -> str:
    """`text` with every path under a root written relative to that root (and a root itself by its name), so
    messages never show where the server keeps its files."""
    names = {}
    for r in roots:
        for form in {str(r), str(Path(r).resolve())}:
            names[form] = Path(form).name
    for form in sorted(names, key=len, reverse=True):  # the longest (innermost) root first
        text = text.replace(form + "/", "").replace(form, names[form])
    return text


def url_scheme(video: str) -> str | None:
    m = _SCHEME.match(video)
    return m.group(1).lower() if m else None


def resolve_video(video: str, roots: Sequence[str | Path], url_schemes: Sequence[str] = ()) -> str:
    """The readable location of `video`, or RequestError (403 outside the roots / scheme not allowed, 404 missing).

    Relative paths are tried under each root in order; absolute paths must lie inside a root. The check is made on
    the fully resolved path, so neither `../` nor a symlink pointing out of a root escapes it; the path comes back as
    a CheckedPath, which the decoders open only if it still is that file (no symlink swapped in since), and only
    through the allowed container formats (no playlist reaching out of the root).
    """
    scheme = url_scheme(video)
    if scheme is not None:
        if scheme not in {s.lower() for s in url_schemes}:
            allowed = ", ".join(url_schemes) or "none"
            raise RequestError(403, "forbidden", f"{video}: URL scheme {scheme!r} is not allowed (allowed: {allowed})")
        return video
    if "\x00" in video:
        raise RequestError(400, "bad_request", "video path contains a NUL byte")
    if not roots:
        raise RequestError(403, "forbidden", f"{video}: the service has no video roots configured")
    resolved_roots = [Path(r).resolve() for r in roots]
    given = Path(video)
    candidates = [given] if given.is_absolute() else [root / given for root in resolved_roots]
    escaped = False
    for cand in candidates:
        try:
            real = cand.resolve()
            if not any(real == r or r in real.parents for r in resolved_roots):
                escaped = True  # via ../ or a symlink: refused even if another root lacks the name
                continue
            found, regular = real.exists(), real.is_file()
        except RuntimeError:  # Path.resolve's symlink loop (its message names the absolute path)
            raise RequestError(400, "bad_request", f"{video}: cannot be resolved (a symlink loop)") from None
        except OSError as exc:  # ENAMETOOLONG, ELOOP, EACCES...: the reason without the server's path
            raise RequestError(400, "bad_request", f"{video}: cannot be resolved ({exc.strerror or 'OS error'})") from None
        if found:
            if not regular:
                raise RequestError(400, "bad_video", f"{video}: not a regular file")
            return CheckedPath(real)  # decoding opens this very file or refuses (tspo_ray.video.source)
    if escaped:
        raise RequestError(403, "forbidden", f"{video}: outside the allowed video roots")
    raise RequestError(404, "not_found", f"{video}: no such video under the video roots")
