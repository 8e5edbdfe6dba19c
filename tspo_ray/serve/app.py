"""The Ray Serve app: a light HTTP ingress (SelectIngress) in front of the selector replicas (KeyframeSelector:
CLIP encoder + temporal agent + feature cache).

    serve run configs/serve.yaml                      # or: uv run python jobs/serve.py --video-root DIR
    POST /select   {video, question, num_frames, method?, candidate_fps?, max_candidates?, return_frames?}
    GET  /healthz  liveness
    GET  /         what is loaded (agent weights or random init, encoder, defaults, cache)

Bad input never becomes a 500: every client error is a 4xx JSON {error, message}. With a token configured every
route needs `Authorization: Bearer <token>` (401 otherwise); there are no schema pages. The ingress holds no model:
it runs the gate's header checks (gate.py: Host, token, body size, content type; the same checks run earlier in
Serve's proxy when it was started with the gate), reads and validates the body, and hands the request to a selector
replica within the request timeout. Both deployments have bounded queues: past them the answer is 503 with
Retry-After. Ray Serve's proxy answers 500 for a request whose replica died; the ingress instead sends it again to
a live replica (a selection is a pure function of the request), and answers 503 with Retry-After only when none is
left. Agent scoring of concurrent requests is grouped with @serve.batch in the selector.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import Any, Sequence

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.config import BackpressureConfig
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

from tspo_ray.selector import SelectionJob
from tspo_ray.serve.access import RequestError, relative_to_roots, resolve_video
from tspo_ray.serve.auth import configured_digest, require_token_beyond_loopback
from tspo_ray.serve.gate import GateSettings, check_head
from tspo_ray.serve.schema import SelectRequest, SelectResponse
from tspo_ray.serve.service import KeyframeService, ServeSettings

log = logging.getLogger("tspo_ray.serve")
# no /docs, /redoc or /openapi.json: every route is one of the three below (README "Serving")
api = FastAPI(title="tspo-ray keyframe selection", docs_url=None, redoc_url=None, openapi_url=None)


def validation_message(exc: ValidationError) -> str:
    """One line per problem: 'field: reason' (pydantic's wording, e.g. 'Extra inputs are not permitted')."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_select(body: bytes) -> SelectRequest:
    """Bytes of a POST /select body -> SelectRequest, or RequestError (400 not JSON, 422 invalid fields)."""
    try:
        raw = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, "bad_json", f"request body is not valid JSON ({exc})") from None
    except RecursionError:
        raise RequestError(400, "bad_json", "request body is not valid JSON (nested too deeply)") from None
    except ValueError:  # Python refuses integers of more than 4,300 digits
        raise RequestError(400, "bad_json", "request body has a number with too many digits") from None
    if not isinstance(raw, dict):
        raise RequestError(400, "bad_json", f"request body must be a JSON object, got {type(raw).__name__}")
    try:
        return SelectRequest.model_validate(raw)
    except ValidationError as exc:
        raise RequestError(422, "invalid_request", validation_message(exc)) from None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past `limit` bytes (checked on the header and while streaming)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise RequestError(413, "too_large", f"request body of {declared} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, "too_large", f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def error_body(exc: RequestError, roots: Sequence[str] = ()) -> dict:
    """The 4xx answer's body; paths under the video roots are named relative to their root."""
    return {"error": exc.kind, "message": relative_to_roots(exc.message, roots)}


def error_response(exc: RequestError, roots: Sequence[str] = ()) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(status_code=exc.status, content=error_body(exc, roots), headers=headers)


def unavailable(message: str) -> JSONResponse:
    return JSONResponse(status_code=503, headers={"Retry-After": "1"},
                        content={"error": "unavailable", "message": message})


def replica_cpus() -> int:
    """The CPUs Ray gave this replica (ray_actor_options.num_cpus), at least 1."""
    import ray

    return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))


#: the selector's queue bounds: requests a replica runs at once (above max_batch_size so batches can fill), and
#: requests an ingress holds for the selectors beyond those; past them the ingress answers 503 with Retry-After
SELECTOR_MAX_ONGOING = 32
SELECTOR_MAX_QUEUED = 64
#: the ingress's: requests one ingress replica reads and forwards at once, and requests the proxy holds for the
#: ingress beyond those (Serve's proxy answers 503 with Retry-After past them)
INGRESS_MAX_ONGOING = 256
INGRESS_MAX_QUEUED = 256


@serve.deployment(name="KeyframeSelector", max_ongoing_requests=SELECTOR_MAX_ONGOING,
                  max_queued_requests=SELECTOR_MAX_QUEUED, ray_actor_options={"num_cpus": 1}, health_check_period_s=2)
class KeyframeSelector:
    """One selector replica: loads the encoder and agent once; answers the ingress with {status, body}."""

    def __init__(self, settings: dict[str, Any] | None = None):
        self.settings = ServeSettings.from_dict(settings)
        torch.set_num_threads(1)  # every torch call single-threaded; `workers` of them run at once
        self.service = KeyframeService(self.settings, self.settings.workers or replica_cpus())
        self._select_batch.set_max_batch_size(self.settings.max_batch_size)
        self._select_batch.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # recent batches only
        self.num_batches = 0

    async def healthz(self) -> dict:
        return {"status": 200, "body": {"status": "ok", "model_version": self.service.model_version}}

    async def info(self) -> dict:
        recent = list(self.batch_sizes)
        return {"status": 200, "body": {
            **self.service.describe(), "workers": self.service.workers,
            "batching": {"max_batch_size": self.settings.max_batch_size, "batches": self.num_batches,
                         "mean_batch_size": sum(recent) / len(recent) if recent else None}}}

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _select_batch(self, jobs: list[SelectionJob]) -> list[dict]:
        """Selections of concurrent requests: one agent forward pass for the whole batch (select_many)."""
        self.batch_sizes.append(len(jobs))
        self.num_batches += 1
        return await asyncio.to_thread(self.service.select_many, jobs)

    async def select(self, req: SelectRequest) -> dict:
        try:
            return {"status": 200, "body": (await self._select(req)).model_dump(exclude_none=False)}
        except RequestError as exc:
            return {"status": exc.status, "body": error_body(exc, self.settings.video_roots)}
        except Exception:  # a bug, not bad input: log it, answer 500, keep serving
            log.exception("select failed")
            return {"status": 500, "body": {"error": "internal", "message": "internal server error"}}

    async def _select(self, req: SelectRequest) -> SelectResponse:
        t0 = time.perf_counter()
        s, svc = self.settings, self.service
        location = resolve_video(req.video, s.video_roots, s.url_schemes)
        fps, cap = svc.candidate_settings(req.candidate_fps, req.max_candidates)
        feats, hit, feat_ms = await asyncio.to_thread(svc.video_features, location, fps, cap)
        t1 = time.perf_counter()
        text = await asyncio.to_thread(svc.text_feature, req.question)
        t2 = time.perf_counter()
        sel = await self._select_batch(svc.make_job(location, feats, text, req.method, req.num_frames))
        t3 = time.perf_counter()
        frames = await asyncio.to_thread(svc.thumbnails, location, sel["frame_indices"]) if req.return_frames else None
        timings = {"decode_encode_ms": feat_ms, "cache_hit": float(hit), "text_ms": (t2 - t1) * 1000,
                   "select_ms": (t3 - t2) * 1000, "total_ms": (time.perf_counter() - t0) * 1000}
        return SelectResponse(frame_indices=sel["frame_indices"], timestamps_s=sel["timestamps_s"],
                              scores=sel["scores"], method=req.method, model_version=svc.model_version,
                              timings_ms={k: round(v, 3) for k, v in timings.items()},
                              num_candidates=len(feats.frame_indices), candidate_fps=fps, max_candidates=cap,
                              frames_jpeg_b64=frames)


def http_host() -> str | None:
    """The host Serve's HTTP proxies bind (serve.start / the config's http_options), None if it cannot be read."""
    try:
        from ray.serve.context import _get_global_client

        return _get_global_client().http_config.host
    except Exception:  # not inside a Serve instance (e.g. an in-process test)
        return None


def access_digest(s: ServeSettings) -> str | None:
    """The configured token's digest; ValueError (the deployment does not start) when the proxies listen beyond
    loopback without one and insecure_no_auth is not set. A host that cannot be read counts as beyond loopback."""
    digest = configured_digest(s.auth_token_file, s.auth_token_env, s.auth_token_sha256)
    require_token_beyond_loopback(http_host() or "an unknown host", digest is not None, s.insecure_no_auth)
    return digest


@serve.deployment(name="SelectIngress", max_ongoing_requests=INGRESS_MAX_ONGOING,
                  max_queued_requests=INGRESS_MAX_QUEUED,
                  backpressure_config=BackpressureConfig(status_code=503, retry_after_s=1),
                  ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class SelectIngress:
    """The HTTP front: gate, body limit and schema here; selection on a KeyframeSelector replica."""

    def __init__(self, selector, settings: dict[str, Any] | None = None):
        self.settings = ServeSettings.from_dict(settings)
        self.token_digest = access_digest(self.settings)
        s = self.settings
        self.gate = GateSettings(self.token_digest, s.insecure_no_auth, s.max_body_bytes, s.request_timeout_s)
        self.selector = selector

    async def _ask(self, method: str, *args) -> JSONResponse:
        """_ask_replicas within the request timeout, whatever the proxy's (a client can lift that one): 504 past it."""
        try:
            return await asyncio.wait_for(self._ask_replicas(method, *args), self.settings.request_timeout_s)
        except asyncio.TimeoutError:
            return JSONResponse(status_code=504, content={
                "error": "timeout", "message": f"no answer within {self.settings.request_timeout_s:g} s"})

    async def _ask_replicas(self, method: str, *args) -> JSONResponse:
        """The selector's answer to `method`; a request whose replica died is sent again to a live one."""
        for attempt in range(self.settings.replica_retries + 1):
            try:
                answer = await getattr(self.selector, method).remote(*args)
                return JSONResponse(status_code=answer["status"], content=answer["body"])
            except (RayActorError, ReplicaUnavailableError) as exc:  # the router now avoids that replica
                log.warning("a selector replica failed under %s (attempt %d): %s", method, attempt + 1,
                            type(exc).__name__)
                await asyncio.sleep(0.05 * (attempt + 1))
            except BackPressureError:  # every replica busy and the queue for them full
                return unavailable("every selector replica is busy and the queue is full; retry")
            except DeploymentUnavailableError:  # none yet
                break
            except Exception:  # a bug: log it, answer 500, keep serving
                log.exception("%s failed", method)
                return JSONResponse(status_code=500, content={"error": "internal", "message": "internal server error"})
        return unavailable("no selector replica could answer now (one is being replaced); retry")

    def _check_head(self, request: Request) -> None:
        check_head(request.method, request.headers, self.gate)

    async def _ask_authorized(self, request: Request, method: str) -> JSONResponse:
        """The selector's answer to a route without a body, once the headers pass the gate."""
        try:
            self._check_head(request)
        except RequestError as exc:
            return error_response(exc)
        return await self._ask(method)

    @api.get("/healthz")
    async def healthz(self, request: Request):
        return await self._ask_authorized(request, "healthz")

    @api.get("/")
    async def info(self, request: Request):
        return await self._ask_authorized(request, "info")

    @api.post("/select")
    async def select(self, request: Request):
        try:
            self._check_head(request)
            body = await asyncio.wait_for(read_body(request, self.settings.max_body_bytes),
                                          self.settings.request_timeout_s)
            req = parse_select(body)
        except asyncio.TimeoutError:
            return error_response(RequestError(408, "timeout", "the request body did not arrive in time"))
        except RequestError as exc:
            return error_response(exc, self.settings.video_roots)
        return await self._ask("select", req)


def build_app(args: dict[str, Any] | None = None, replicas: int | None = None, replica_cpus: float | None = None,
              selector_options: dict[str, Any] | None = None):
    """Application builder for `serve run tspo_ray.serve.app:build_app` and serve configs (args = ServeSettings);
    replicas / replica_cpus override the selector's num_replicas and num_cpus, selector_options any other of its
    deployment options (e.g. max_ongoing_requests, max_queued_requests)."""
    settings = ServeSettings.from_dict(args).to_dict()
    options: dict[str, Any] = dict(selector_options or {})
    if replicas is not None:
        options["num_replicas"] = replicas
    if replica_cpus is not None:
        options["ray_actor_options"] = {"num_cpus": replica_cpus}
    selector = KeyframeSelector.options(**options) if options else KeyframeSelector
    return SelectIngress.bind(selector.bind(settings), settings)
