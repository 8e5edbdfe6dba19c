"""Who may call the service: an optional bearer token, required whenever the service listens beyond loopback.

The token comes from a file or an environment variable (ServeSettings.auth_token_file / auth_token_env), or as its
SHA-256 digest (auth_token_sha256: what jobs/serve.py passes, so the token itself never appears in the deployment's
config, which Ray's dashboard shows). Only the digest is kept in memory; requests are compared in constant time.
Pure functions; the ingress turns RequestError into the 401 JSON answer.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from pathlib import Path

from tspo_ray.serve.access import RequestError

#: the environment variable jobs/serve.py reads the token from when no --auth-token-file is given
TOKEN_ENV = "TSPO_SERVE_TOKEN"
MIN_TOKEN_CHARS = 16
NEW_TOKEN_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE; chmod 600 FILE"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost; anything else (0.0.0.0, a LAN address, a name) reaches beyond this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def checked_token(token: str, source: str) -> str:
    token = token.strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"{source}: the bearer token must have at least {MIN_TOKEN_CHARS} characters "
                         f"(got {len(token)}); make one with: {NEW_TOKEN_HINT}")
    return token


def check_private(path: Path) -> None:
    """ValueError unless the file is private to its owner: a token its group or others can read is no secret."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ValueError(f"auth token file {path}: readable by {'others' if mode & 0o007 else 'its group'} (mode "
                         f"{mode:04o}); make it private to its owner: chmod 600 {path}")


def read_token_file(path: str | Path) -> str:
    path = Path(path).expanduser()
    try:
        check_private(path)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"auth token file {path}: no such file; make one with: {NEW_TOKEN_HINT}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"auth token file {path}: cannot be read ({exc})") from None
    return checked_token(text, f"auth token file {path}")


def configured_digest(token_file: str | None, token_env: str | None, token_sha256: str | None) -> str | None:
    """The SHA-256 digest of the configured token, None when none is configured; ValueError naming a bad source."""
    if token_sha256:
        digest = token_sha256.strip().lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError("auth_token_sha256: expected 64 hexadecimal digits (the SHA-256 of the token)")
        return digest
    if token_file:
        return token_digest(read_token_file(token_file))
    if token_env:
        value = os.environ.get(token_env)
        if not value:
            raise ValueError(f"auth_token_env {token_env}: the environment variable is not set or empty")
        return token_digest(checked_token(value, f"environment variable {token_env}"))
    return None


def require_token_beyond_loopback(host: str, has_token: bool, insecure_no_auth: bool) -> None:
    """ValueError when the service would listen beyond loopback with no token (unless explicitly insecure)."""
    if has_token or insecure_no_auth or is_loopback(host):
        return
    raise ValueError(f"refusing to serve on {host}, which is reachable beyond this machine, without a bearer token: "
                     f"give one (a token file, or the {TOKEN_ENV} environment variable) or, on a network you "
                     "trust, --insecure-no-auth (serve config: insecure_no_auth: true)")


def authorize(authorization: str | None, digest: str | None) -> None:
    """RequestError 401 unless `Authorization: Bearer <token>` matches the configured token (no token: open)."""
    if digest is None:
        return
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise RequestError(401, "unauthorized", "this service requires an 'Authorization: Bearer <token>' header")
    if not hmac.compare_digest(token_digest(presented.strip()), digest):
        raise RequestError(401, "unauthorized", "the bearer token is not valid")
