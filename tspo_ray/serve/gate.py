"""What a request must show before any of its body is read: the service's gate.

One set of checks on the request line and headers only (`check_head`), run in two places:
  * in Ray Serve's HTTP proxy, as an ASGI middleware (GateMiddleware), the first code that sees a request. The proxy
    otherwise reads a request's body into memory as fast as the client sends it, before any deployment runs; the
    gate answers from the headers alone and closes the connection, so a refused body is never read.
  * in the ingress deployment (app.py), for a Serve instance whose proxy was started without the gate.

The checks, in order:
  1. No token and not `insecure_no_auth` (the loopback mode): the Host header must name loopback (localhost,
     127.0.0.0/8, [::1]), and an Origin header, when sent, too: a page on another site that rebinds its DNS name to
     127.0.0.1 sends its own name as Host (403).
  2. A token is configured: `Authorization: Bearer <token>` on every route, the service's own and Serve's (401).
  3. A body must declare its size: Transfer-Encoding (chunked) is refused (411), a Content-Length over
     max_body_bytes is refused (413). The HTTP parser delivers no more than Content-Length bytes, so what the
     proxy holds of an admitted body is bounded by the cap.
  4. POST bodies must be `application/json` (415): a browser sends a cross-site JSON POST only after a CORS
     preflight that this service never grants, so a web page cannot reach /select even without a token.
Besides, `x-request-timeout-seconds` (with which Serve lets a caller lift the proxy's request timeout) is kept only
when it shortens the timeout, and `x-request-disconnect-disabled` is dropped.

The proxy reads the gate's settings from the TSPO_SERVE_GATE environment variable, set on the Serve controller
(`controller_options`, which its proxies inherit) by jobs/serve.py and configs/serve.yaml; RAY_SERVE_HTTP_PROXY_
CALLBACK_IMPORT_PATH names `proxy_middlewares` below.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

from tspo_ray.serve.access import RequestError
from tspo_ray.serve.auth import authorize, configured_digest, is_loopback

#: the environment variable holding the gate's settings (JSON) in the proxy
GATE_ENV = "TSPO_SERVE_GATE"
#: Serve's hook: an import path called in each proxy that returns its ASGI middlewares
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "tspo_ray.serve.gate:proxy_middlewares"
TIMEOUT_HEADER = "x-request-timeout-seconds"
DISCONNECT_HEADER = "x-request-disconnect-disabled"
JSON_TYPES = ("application/json",)


@dataclass(frozen=True)
class GateSettings:
    """What the gate checks: the token's SHA-256 (None: no token), whether the loopback-only checks are off
    (insecure_no_auth), the largest body and the longest request a client may ask for."""

    token_sha256: str | None = None
    insecure_no_auth: bool = False
    max_body_bytes: int = 16384
    request_timeout_s: float = 60.0

    @property
    def loopback_mode(self) -> bool:
        """No token and not explicitly insecure: the service answers only pages and programs on this machine."""
        return self.token_sha256 is None and not self.insecure_no_auth

    @classmethod
    def from_serve_settings(cls, raw: Mapping[str, Any]) -> "GateSettings":
        """From ServeSettings fields (a dict: the app's args), reading the token's file or variable here."""
        digest = configured_digest(raw.get("auth_token_file"), raw.get("auth_token_env"), raw.get("auth_token_sha256"))
        return cls(digest, bool(raw.get("insecure_no_auth", False)), int(raw.get("max_body_bytes", 16384)),
                   float(raw.get("request_timeout_s", 60.0)))


def host_name(host: str) -> str:
    """The name of a Host header value, without its port: 'localhost:8000' -> 'localhost', '[::1]:80' -> '::1'."""
    host = host.strip()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def origin_host(origin: str) -> str:
    """'http://localhost:8000' -> 'localhost'; 'null' (a sandboxed page or a file) -> 'null'."""
    rest = origin.strip().split("://", 1)[-1]
    return host_name(rest.split("/", 1)[0])


def check_head(method: str, headers: Mapping[str, str], gate: GateSettings) -> None:
    """RequestError (403, 401, 411, 413 or 415) when the request line and headers alone refuse the request.
    `headers`: lower-case names."""
    if gate.loopback_mode:
        host = headers.get("host", "")
        if not is_loopback(host_name(host)):
            raise RequestError(403, "bad_host", f"Host {host[:100]!r} is not a loopback name: without a token this "
                                                "service answers only requests addressed to localhost")
        origin = headers.get("origin")
        if origin is not None and not is_loopback(origin_host(origin)):
            raise RequestError(403, "bad_origin", f"Origin {origin[:100]!r} is not on this machine")
    authorize(headers.get("authorization"), gate.token_sha256)
    if "transfer-encoding" in headers:
        raise RequestError(411, "length_required", "send the body with a Content-Length (chunked bodies are refused)")
    declared = headers.get("content-length")
    if declared is not None:
        declared = declared.strip()
        if not declared.isdigit():
            raise RequestError(400, "bad_length", f"Content-Length {declared[:30]!r} is not a number")
        if len(declared) > 18 or int(declared) > gate.max_body_bytes:
            raise RequestError(413, "too_large", f"request body of {declared[:30]} bytes exceeds the limit of "
                                                 f"{gate.max_body_bytes}")
    if method.upper() == "POST":
        kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind not in JSON_TYPES:
            raise RequestError(415, "unsupported_media_type",
                               f"request body must be application/json, got {kind or 'no content type'!r}")


def timeout_header_allowed(value: str, gate: GateSettings) -> bool:
    """Serve reads x-request-timeout-seconds as the request's timeout, 0 or less as none: keep only a shorter one."""
    try:
        asked = float(value)
    except ValueError:
        return False
    return 0 < asked <= gate.request_timeout_s


def _decoded(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in raw:  # a repeated header keeps its first value (Starlette's Headers.get does the same)
        out.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return out


class GateMiddleware:
    """ASGI middleware: refuses a request from its headers (a JSON error, then the connection closed, so nothing more
    of its body is read) or passes it on with the timeout headers a client may not set removed."""

    def __init__(self, app, settings: Mapping[str, Any] | GateSettings | None = None):
        self.app = app
        self.gate = settings if isinstance(settings, GateSettings) else GateSettings(**dict(settings or {}))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # lifespan; websockets have no route in this service
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        headers = _decoded(scope.get("headers", []))
        try:
            check_head(scope.get("method", "GET"), headers, self.gate)
        except RequestError as exc:
            await refuse(send, exc)
            return
        kept = [(n, v) for n, v in scope.get("headers", [])
                if not (n.lower() == DISCONNECT_HEADER.encode()
                        or (n.lower() == TIMEOUT_HEADER.encode()
                            and not timeout_header_allowed(v.decode("latin-1"), self.gate)))]
        await self.app({**scope, "headers": kept}, receive, send)


async def refuse(send, exc: RequestError) -> None:
    body = json.dumps({"error": exc.kind, "message": exc.message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    if exc.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def controller_options(gate: GateSettings) -> dict:
    """serve.start(controller_options=...): the environment that puts the gate in every Serve proxy."""
    return {"runtime_env": {"env_vars": {PROXY_CALLBACK_ENV: PROXY_CALLBACK, GATE_ENV: json.dumps(asdict(gate))}}}


def proxy_middlewares() -> list:
    """Serve's proxy callback: the gate, with the settings of TSPO_SERVE_GATE. A proxy started without them
    refuses to start (a gate with no settings would be a loopback gate the operator did not ask for)."""
    from starlette.middleware import Middleware

    raw = os.environ.get(GATE_ENV)
    if not raw:
        raise ValueError(f"{PROXY_CALLBACK_ENV} names the tspo-ray gate but {GATE_ENV} is not set")
    fields = json.loads(raw)
    if any(k in fields for k in ("auth_token_file", "auth_token_env")):  # a serve config names the token's source
        gate = GateSettings.from_serve_settings(fields)
    else:
        gate = GateSettings(**fields)
    return [Middleware(GateMiddleware, settings=gate)]
