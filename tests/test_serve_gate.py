"""The service under a flood and from a web page: the gate (token, Host, body size and content type from the headers,
before any body is read), bounded queues, timeouts a client cannot lift, no open schema pages, thumbnails inside the
decode limits and cached, candidate settings on a finite set of steps. In process first; then over HTTP with the
gate in Serve's proxy."""
from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from helpers.ports import free_port
from helpers.scripts import load_script

from tspo_ray.serve.access import RequestError
from tspo_ray.serve.auth import token_digest
from tspo_ray.serve.gate import GateMiddleware, GateSettings, check_head

ROOT = Path(__file__).resolve().parents[1]
TOKEN = secrets.token_urlsafe(32)
WITH_TOKEN = GateSettings(token_sha256=token_digest(TOKEN), max_body_bytes=16384, request_timeout_s=60)
LOOPBACK = GateSettings(max_body_bytes=16384, request_timeout_s=60)
JSON_POST = {"host": "127.0.0.1:8000", "content-type": "application/json", "content-length": "80"}


def status_of(method: str, headers: dict, gate: GateSettings) -> int:
    try:
        check_head(method, headers, gate)
    except RequestError as exc:
        return exc.status
    return 200


# --- the gate's checks, in process -----------------------------------------------------------------------------------

def test_loopback_mode_answers_only_requests_addressed_to_loopback():
    """No token: a page whose DNS name was rebound to 127.0.0.1 sends its own name as Host; refused."""
    for host in ("127.0.0.1:8000", "localhost:8000", "localhost", "[::1]:8000", "127.0.0.2"):
        assert status_of("POST", {**JSON_POST, "host": host}, LOOPBACK) == 200, host
    for host in ("evil.example:8000", "evil.example", "0.0.0.0:8000", "10.0.0.5", "", "localhost.evil.example"):
        assert status_of("POST", {**JSON_POST, "host": host}, LOOPBACK) == 403, host
    assert status_of("GET", {"host": "evil.example"}, LOOPBACK) == 403
    assert status_of("POST", {**JSON_POST, "origin": "http://evil.example"}, LOOPBACK) == 403
    assert status_of("POST", {**JSON_POST, "origin": "http://localhost:3000"}, LOOPBACK) == 200
    # with a token, or explicitly insecure, the service is meant to be reached by other names
    assert status_of("POST", {**JSON_POST, "host": "gpu-7:8000", "authorization": f"Bearer {TOKEN}"}, WITH_TOKEN) == 200
    insecure = GateSettings(insecure_no_auth=True)
    assert status_of("POST", {**JSON_POST, "host": "gpu-7:8000"}, insecure) == 200


def test_only_json_bodies_are_accepted():
    """A web page can POST text/plain (or a form) to localhost without a CORS preflight; JSON needs one."""
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""):
        assert status_of("POST", {**JSON_POST, "content-type": kind}, LOOPBACK) == 415, kind
    assert status_of("POST", {**JSON_POST, "content-type": "application/json; charset=utf-8"}, LOOPBACK) == 200
    assert status_of("POST", {k: v for k, v in JSON_POST.items() if k != "content-type"}, LOOPBACK) == 415


def test_token_is_checked_first_on_every_route_and_the_body_size_from_the_header():
    big = {**JSON_POST, "content-length": str(10**9)}
    assert status_of("POST", big, WITH_TOKEN) == 401  # an unauthenticated caller learns not even the limit
    assert status_of("GET", {"host": "h"}, WITH_TOKEN) == 401
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert status_of("POST", {**big, **auth}, WITH_TOKEN) == 413
    assert status_of("POST", {**JSON_POST, **auth, "content-length": "9" * 5000}, WITH_TOKEN) == 413
    assert status_of("POST", {**JSON_POST, **auth, "content-length": "16384"}, WITH_TOKEN) == 200
    assert status_of("POST", {**JSON_POST, **auth, "content-length": "-1"}, WITH_TOKEN) == 400
    chunked = {k: v for k, v in JSON_POST.items() if k != "content-length"}
    assert status_of("POST", {**chunked, **auth, "transfer-encoding": "chunked"}, WITH_TOKEN) == 411


class Recorder:
    """An inner ASGI app that reads the whole body and answers 200; records what reached it."""

    def __init__(self):
        self.scopes, self.body = [], b""

    async def __call__(self, scope, receive, send):
        self.scopes.append(scope)
        while True:
            msg = await receive()
            self.body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def call(app, method: str, headers: dict, body: bytes = b"", chunk: int = 65536):
    """(status, response headers, body, how many times the app called receive) of one request."""
    pending = [body[i:i + chunk] for i in range(0, len(body), chunk)] or [b""]
    reads, sent = [0], []

    async def receive():
        reads[0] += 1
        part = pending.pop(0) if pending else b""
        return {"type": "http.request", "body": part, "more_body": bool(pending)}

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "method": method, "path": "/select", "query_string": b"",
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body_out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body_out, reads[0]


def test_the_gate_refuses_from_the_headers_without_reading_the_body():
    """What Serve's proxy did: read a 10 MB body into memory, then let the ingress find the token missing."""
    inner = Recorder()
    gate = GateMiddleware(inner, WITH_TOKEN)
    body = b"x" * 10_000_000
    status, headers, answer, reads = call(gate, "POST", {**JSON_POST, "content-length": str(len(body))}, body)
    assert (status, reads, inner.scopes) == (401, 0, [])
    assert headers["connection"] == "close" and headers["www-authenticate"] == "Bearer"
    assert json.loads(answer)["error"] == "unauthorized"
    auth = {"authorization": f"Bearer {TOKEN}"}
    status, headers, answer, reads = call(gate, "POST", {**JSON_POST, **auth, "content-length": str(len(body))}, body)
    assert (status, reads, inner.scopes) == (413, 0, []) and headers["connection"] == "close"
    status, _, answer, reads = call(gate, "POST", {**JSON_POST, **auth, "content-length": "2"}, b"{}")
    assert (status, answer, inner.body) == (200, b"ok", b"{}")


def test_a_client_cannot_lift_the_request_timeout():
    """Serve reads x-request-timeout-seconds: 0 as 'no timeout' and x-request-disconnect-disabled as 'keep running
    after the client left'; the gate keeps only a timeout shorter than the service's."""
    inner = Recorder()
    gate = GateMiddleware(inner, LOOPBACK)
    for value, kept in (("0", False), ("-1", False), ("1e9", False), ("nan", False), ("abc", False), ("5", True)):
        call(gate, "GET", {"host": "localhost", "x-request-timeout-seconds": value,
                           "x-request-disconnect-disabled": "?1"})
        names = dict(inner.scopes[-1]["headers"])
        assert (b"x-request-timeout-seconds" in names) == kept, value
        assert b"x-request-disconnect-disabled" not in names
    from tspo_ray.ray_internals import serve_request_timeout

    assert serve_request_timeout({b"x-request-timeout-seconds": b"0"}, 60.0) is None  # what the gate prevents


def test_the_serve_job_sets_the_request_timeout_and_the_gate(tmp_path):
    serve_job = load_script("jobs/serve.py")
    gate_options, http_options = serve_job.gate_options, serve_job.http_options
    parse_args, settings_from_args = serve_job.parse_args, serve_job.settings_from_args

    args = parse_args(["--video-root", str(tmp_path), "--request-timeout", "30"])
    assert http_options(args) == {"host": "127.0.0.1", "port": 8000, "request_timeout_s": 30.0}
    settings = settings_from_args(args)
    assert settings["request_timeout_s"] == 30.0
    env = gate_options({**settings, "auth_token_sha256": token_digest(TOKEN)})["runtime_env"]["env_vars"]
    assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == "tspo_ray.serve.gate:proxy_middlewares"
    assert json.loads(env["TSPO_SERVE_GATE"]) == {"token_sha256": token_digest(TOKEN), "insecure_no_auth": False,
                                                  "max_body_bytes": 16384, "request_timeout_s": 30.0}
    assert TOKEN not in json.dumps(env)
    assert parse_args(["--video-root", "x"]).request_timeout == 60.0
    with pytest.raises(SystemExit, match="--request-timeout"):
        settings_from_args(parse_args(["--video-root", str(tmp_path), "--request-timeout", "0"]))


def test_serve_settings_refuse_a_timeout_or_body_cap_that_is_not_positive():
    from tspo_ray.serve.service import ServeSettings

    assert ServeSettings.load({"request_timeout_s": 5}).request_timeout_s == 5
    for bad in ({"request_timeout_s": 0}, {"request_timeout_s": -1}, {"request_timeout_s": float("inf")},
                {"max_body_bytes": 0}, {"max_body_bytes": "16k"}):
        with pytest.raises(ValueError, match=r"^(request_timeout_s|max_body_bytes): (must be > 0|must be a finite "
                                             r"number|expected an integer)"):
            ServeSettings.load(bad)


def test_proxy_callback_builds_the_gate_from_the_environment(tmp_path, monkeypatch):
    from tspo_ray.serve import gate

    monkeypatch.delenv(gate.GATE_ENV, raising=False)
    with pytest.raises(ValueError, match="TSPO_SERVE_GATE is not set"):
        gate.proxy_middlewares()
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "token").chmod(0o600)
    monkeypatch.setenv(gate.GATE_ENV, json.dumps({"auth_token_file": str(tmp_path / "token"), "max_body_bytes": 99}))
    [mw] = gate.proxy_middlewares()
    assert mw.kwargs["settings"] == GateSettings(token_digest(TOKEN), False, 99, 60.0)
    monkeypatch.setenv(gate.GATE_ENV, json.dumps({"auth_token_file": str(tmp_path / "missing")}))
    with pytest.raises(ValueError, match="no such file"):  # the proxy, and so Serve, does not start
        gate.proxy_middlewares()


def test_serve_config_puts_the_gate_in_the_proxy_with_the_apps_settings():
    raw = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
    env = raw["controller_options"]["runtime_env"]["env_vars"]
    assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == "tspo_ray.serve.gate:proxy_middlewares"
    gate, args = json.loads(env["TSPO_SERVE_GATE"]), raw["applications"][0]["args"]
    for key in ("auth_token_file", "insecure_no_auth", "max_body_bytes", "request_timeout_s"):
        assert gate[key] == args[key], key
    assert gate["request_timeout_s"] == raw["http_options"]["request_timeout_s"]
    deps = {d["name"]: d for d in raw["applications"][0]["deployments"]}
    assert all(0 < d["max_queued_requests"] <= 1024 for d in deps.values())
    assert deps["SelectIngress"]["backpressure_config"]["retry_after_s"] == 1


def test_queues_are_bounded_and_the_schema_pages_are_gone():
    """Serve's default max_queued_requests is -1 (no bound): its 503 path never fired."""
    from tspo_ray.serve.app import SelectIngress, SelectorReplica, api

    for dep in (SelectorReplica, SelectIngress):
        assert 0 < dep._deployment_config.max_queued_requests <= 1024, dep.name
        assert 0 < dep._deployment_config.max_ongoing_requests <= 512, dep.name
    # past the ingress's queue Serve's proxy answers; by default its 503 says nothing of when to come back
    assert SelectIngress._deployment_config.backpressure_config.retry_after_s == 1
    assert sorted(r.path for r in api.routes) == ["/", "/healthz", "/select"]


def ingress(monkeypatch, selector, **settings):
    """The ingress deployment's own class, made in process (as on a loopback Serve), with `selector` behind it."""
    from tspo_ray.serve import app

    monkeypatch.setattr(app, "http_host", lambda: "127.0.0.1")
    cls = app.SelectIngress.func_or_class.__mro__[1]  # the class under serve.ingress's wrapper
    obj = object.__new__(cls)
    cls.__init__(obj, selector, settings)
    return obj


def starlette_request(headers: dict, body: bytes = b""):
    from starlette.requests import Request

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/select", "query_string": b"",
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    return Request(scope, receive)


class FakeSelector:
    """Stands for the selector deployment's handle: answers 200 after `delay` seconds."""

    def __init__(self, delay: float = 0.0):
        self.delay, self.calls = delay, 0
        self.select = self

    def remote(self, *args):
        self.calls += 1

        async def answer():
            await asyncio.sleep(self.delay)
            return {"status": 200, "body": {"ok": True}}
        return answer()


GOOD_BODY = json.dumps({"video": "clip.mp4", "question": "When does the red star appear?", "num_frames": 4}).encode()


def test_the_ingress_runs_the_gate_checks_itself(monkeypatch):
    """A Serve instance whose proxy lacks the gate (started by hand) still refuses a text/plain POST from a web page
    and a rebound Host, in the ingress."""
    selector = FakeSelector()
    obj = ingress(monkeypatch, selector)
    good = {"host": "127.0.0.1:8000", "content-type": "application/json", "content-length": str(len(GOOD_BODY))}
    chunked = {k: v for k, v in good.items() if k != "content-length"} | {"transfer-encoding": "chunked"}
    for headers, status in (({**good, "content-type": "text/plain"}, 415), ({**good, "host": "evil.example"}, 403),
                            (chunked, 411), (good, 200)):
        resp = asyncio.run(obj.select(starlette_request(headers, GOOD_BODY)))
        assert resp.status_code == status, (headers, resp.body)
    assert selector.calls == 1


def test_the_ingress_keeps_its_own_request_timeout(monkeypatch):
    """Whatever a client asked of the proxy, an answer that takes longer than request_timeout_s is a 504."""
    obj = ingress(monkeypatch, FakeSelector(delay=5.0), request_timeout_s=0.3)
    t0 = time.perf_counter()
    resp = asyncio.run(obj._ask("select", None))
    assert resp.status_code == 504 and json.loads(resp.body)["error"] == "timeout"
    assert time.perf_counter() - t0 < 3


# --- the selector's work per request, in process ----------------------------------------------------------------------

def test_candidate_settings_fall_on_a_finite_set_of_steps():
    """Each (rate, cap) is a feature-cache entry and a decode+encode: a client varying them evicted every other
    video."""
    from tspo_ray.serve.schema import MAX_CANDIDATE_FPS, MAX_CANDIDATES, MIN_CANDIDATE_FPS
    from tspo_ray.serve.service import CAP_STEPS, FPS_STEPS, candidate_settings

    rng = np.random.default_rng(0)
    seen = {candidate_settings(float(fps), int(cap), 1.0, 128)
            for fps, cap in zip(np.exp(rng.uniform(np.log(MIN_CANDIDATE_FPS), np.log(MAX_CANDIDATE_FPS), 20000)),
                                rng.integers(1, MAX_CANDIDATES + 1, 20000))}
    assert len(seen) <= len(FPS_STEPS) * len(CAP_STEPS) + 1
    assert candidate_settings(None, None, 0.7, 100) == (0.7, 100)  # the defaults, as configured
    assert candidate_settings(0.7, 100, 0.7, 100) == (0.7, 100)
    assert candidate_settings(1.000001, 40, 1.0, 128) == (1.0, 32)
    assert candidate_settings(0.9999996, 1024, 1.0, 128) == (1.0, 1024)
    assert candidate_settings(2.2, 7, 1.0, 128) == (2.0, 4)
    assert all(a <= b for a, b in zip(CAP_STEPS, CAP_STEPS[1:])) and CAP_STEPS[-1] == MAX_CANDIDATES


@pytest.fixture(scope="module")
def clip_root(tiny_world, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gate_videos")
    shutil.copy(sorted(tiny_world.rglob("*.mp4"))[0], root / "clip.mp4")
    return root


def test_thumbnails_are_decoded_once_single_threaded_inside_a_decode_slot(clip_root, monkeypatch):
    """return_frames decoded the whole video again on every request, with every core, outside the decode slots."""
    from tspo_ray.serve.service import KeyframeService, ServeSettings
    from tspo_ray.video import decode as video_decode
    from tspo_ray.video import frames as video_io

    svc = KeyframeService(ServeSettings(video_roots=[str(clip_root)], workers=1))
    calls = []

    def counted(fn, name):
        def wrapper(path, indices, *args, **kw):
            calls.append((name, list(indices), kw.get("threads"), svc._decode_slots._value))
            return fn(path, indices, *args, **kw)
        return wrapper

    monkeypatch.setattr(video_decode, "decode_sequential", counted(video_decode.decode_sequential, "sequential"))
    monkeypatch.setattr(video_io, "read_frames", counted(video_io.read_frames, "read_frames"))
    path = str(clip_root / "clip.mp4")
    free = svc._decode_slots._value
    first = svc.thumbnails(path, [10, 40, 70])
    again = svc.thumbnails(path, [10, 40, 70])
    more = svc.thumbnails(path, [40, 100])
    assert first == again and more[0] == first[1] and len(set(first)) == 3
    assert [(c[0], c[1], c[2]) for c in calls] == [("sequential", [10, 40, 70], 1), ("sequential", [100], 1)]
    assert all(c[3] == free - 1 for c in calls)  # each decode held one of the replica's decode slots
    from PIL import Image
    import base64
    import io

    assert Image.open(io.BytesIO(base64.b64decode(first[0]))).size == (128, 128)


# --- over HTTP, with the gate in Serve's proxy ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def gated(ray_local, clip_root, tmp_path_factory):
    """The service with a token and the gate in the proxy; the selector's queue made tiny, so that a burst fills it."""
    from ray import serve

    from tspo_ray.serve.app import build_app
    from tspo_ray.serve.gate import controller_options

    token_file = tmp_path_factory.mktemp("gate_token") / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    settings = {"video_roots": [str(clip_root)], "auth_token_file": str(token_file), "request_timeout_s": 60}
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": 60},
                controller_options=controller_options(GateSettings.from_serve_settings(settings)))
    serve.run(build_app(settings, selector_options={"max_ongoing_requests": 1, "max_queued_requests": 1}),
              name="tspo-select", route_prefix="/")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
        yield http
    serve.shutdown()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_every_route_needs_the_token(gated):
    for path in ("/docs", "/openapi.json", "/redoc", "/-/routes", "/-/healthz", "/nothing", "/", "/healthz"):
        resp = gated.get(path)
        assert resp.status_code == 401 and resp.json()["error"] == "unauthorized", path
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert gated.get(path, headers=AUTH).status_code == 404, path
    assert gated.get("/healthz", headers=AUTH).json()["status"] == "ok"


def raw_request(port: int, head: bytes, body_bytes: int, timeout: float = 60) -> tuple[bytes, int]:
    """Send `head`, then `body_bytes` of body as fast as the server takes them, whatever it answers meanwhile (what a
    flood does), then read the reply: (the reply, bytes of body the server took before it closed the connection)."""
    sent, piece = 0, b"x" * 65536
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        try:
            while sent < body_bytes:
                sent += s.send(piece[:body_bytes - sent])
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = b""
        try:
            while chunk := s.recv(65536):
                reply += chunk
                if b"\r\n\r\n" in reply and sent >= body_bytes:
                    break
        except (ConnectionResetError, TimeoutError):
            pass
        return reply, sent


def test_an_unauthenticated_body_is_refused_before_it_is_read(gated):
    """A 256 MiB upload without the token: the answer comes from the headers and the connection closes, so the
    client cannot push the body (before: the proxy read what came until the ingress said 401, then the server went on
    taking the rest on a connection it kept open)."""
    port = gated.base_url.port
    size = 256 * 2**20
    head = (b"POST /select HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(size).encode() + b"\r\n\r\n")
    reply, sent = raw_request(port, head, size)
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    assert sent < 32 * 2**20, sent  # what the sockets' buffers took before the close
    chunked = (b"POST /select HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAuthorization: Bearer "
               + TOKEN.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    reply, _ = raw_request(port, chunked, 0)
    assert reply.startswith(b"HTTP/1.1 411"), reply[:200]


def test_a_burst_past_the_queue_gets_503_with_retry_after(gated):
    """One selector replica running 1 request with 1 queued: of a burst of uncached requests, the rest are
    refused at once with 503 and Retry-After instead of waiting in an unbounded queue."""
    from concurrent.futures import ThreadPoolExecutor

    from tspo_ray.serve.service import CAP_STEPS

    bodies = [{"video": "clip.mp4", "question": "When does the red star appear?", "num_frames": 1,
               "max_candidates": cap} for cap in CAP_STEPS[4:16]]  # 12 settings, 12 decodes
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda b: gated.post("/select", json=b, headers=AUTH), bodies))
    codes = sorted(a.status_code for a in answers)
    assert set(codes) <= {200, 503} and codes.count(503) >= 6 and codes.count(200) >= 1, codes
    assert all(a.headers["retry-after"] == "1" for a in answers if a.status_code == 503)
    assert gated.post("/select", json=bodies[0], headers=AUTH).status_code == 200
