"""The keyframe-selection core behind the HTTP app: encoder + agent, an LRU of per-video features, selection.

No Ray here: the Serve deployment (app.py) is a thin shell around KeyframeService, so the logic runs and is tested
in one process too. Selections go through tspo_ray.selector.select_many, the batched form of the feature-level path
jobs/evaluate.py selects through (one agent forward pass per batch, the same records as one at a time), so the
service and the evaluation job pick the same frames for the same checkpoint.
"""
from __future__ import annotations

import base64
import hashlib
import io
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from pydantic import Field, model_validator

from tspo_ray.method.selection_methods import SELECTORS
from tspo_ray.selector import SelectionJob, select_many
from tspo_ray.serve.access import RequestError, url_scheme
from tspo_ray.serve.cache import LRUCache
from tspo_ray.settings import Settings
from tspo_ray.video import frames as video_io
from tspo_ray.video.features import FeatureSpec, VideoFeatures

#: the settings' earlier flat keys of the feature spec, read into `features`
FLAT_FEATURE_KEYS = ("encoder", "fps", "max_candidates", "frame_size")


class ServeSettings(Settings):
    """Everything a replica needs; passed to the deployment as a plain dict (serve config `args`)."""

    label: ClassVar[str] = "serve"

    checkpoint: str | None = None
    """Agent weights: a jobs/train.py run folder or checkpoint file, or TSPO-0.4B weights; None = random agent."""
    video_roots: list[str] = Field(default_factory=list)
    """Folders videos may be read from (relative request paths are looked up under them, in order)."""
    url_schemes: list[str] = Field(default_factory=list)
    """URL schemes the service may open (e.g. ['https']); none by default."""
    features: dict[str, Any] = Field(default_factory=dict)
    """Feature-spec fields (tspo_ray.video.features.FeatureSpec: fps, max_candidates, min_candidates, frame_size,
    encoder). With a checkpoint the spec is the one it records and a field given here must agree with it (the
    encoder's device and batch size aside); without one, these fill FeatureSpec's defaults. fps and
    max_candidates are the defaults a request may override."""
    window: int = Field(12, ge=1)
    """Agent attention window when loading TSPO-0.4B weights."""
    heads: int = Field(8, ge=1)
    """Agent attention heads when loading TSPO-0.4B weights."""
    cache_size: int = Field(64, ge=1)
    """Videos whose candidate features are kept in memory."""
    max_body_bytes: int = Field(16384, gt=0)
    """Largest accepted request body, in bytes."""
    thumbnail_size: int = Field(128, ge=8)
    """Side of returned thumbnails (pixels)."""
    thumbnail_cache_size: int = Field(4096, ge=0)
    """Thumbnails (JPEGs of a few KB each) a replica keeps."""
    max_batch_size: int = Field(8, ge=1)
    """@serve.batch: the most requests scored in one agent call."""
    batch_wait_timeout_s: float = Field(0.005, ge=0)
    """@serve.batch: seconds a batch waits to fill."""
    seed: int = 0
    """Seed of the random agent used when no checkpoint is given."""
    workers: int | None = Field(None, ge=1)
    """Torch calls (CLIP, agent) running at once, each single-threaded; None = the replica's CPUs (1 in-process).
    Separate single-threaded calls use the cores without the barrier waits of one multi-threaded call, which on
    shared cores cost several times the work itself (benchmarks/serve_load.py)."""
    auth_token_file: str | None = None
    """The bearer token callers must send (tspo_ray.serve.auth): a file holding it; none of the three = no token,
    allowed only on a loopback host."""
    auth_token_env: str | None = None
    """... or the name of an environment variable holding it."""
    auth_token_sha256: str | None = None
    """... or its SHA-256 digest."""
    insecure_no_auth: bool = False
    """Serve beyond loopback without a token (a trusted network only)."""
    replica_retries: int = Field(2, ge=0)
    """How often a request whose replica died is sent again to another (selection is idempotent) before a 503."""
    @model_validator(mode="before")
    @classmethod
    def _flat_feature_keys(cls, raw: Any) -> Any:
        """Serve configs written before `features` held the spec's fields at the top level."""
        if isinstance(raw, dict) and any(k in raw for k in FLAT_FEATURE_KEYS):
            raw = dict(raw)
            moved = {k: raw.pop(k) for k in FLAT_FEATURE_KEYS if k in raw}
            raw["features"] = {**moved, **(raw.get("features") or {})}
        return raw

    request_timeout_s: float = Field(60.0, gt=0, allow_inf_nan=False)
    """Seconds a request may take, its body included (the ingress answers 408 / 504 past it, whatever the client
    asked of Serve's proxy); jobs/serve.py gives the proxy the same timeout."""


#: frames decoded then encoded at a time, and CLIP's batch: compute_video_features' defaults, so the features are
#: those of the feature store bit for bit
FEATURE_CHUNK = 256
ENCODE_BATCH = 64


def _file_digest(path: Path) -> str:
    h = hashlib.sha1()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        h.update(p.read_bytes())
    return h.hexdigest()[:10]


def serving_feature_spec(settings: ServeSettings) -> FeatureSpec:
    """The spec the service selects with: its checkpoint's (the same every path uses), with the settings' fields
    checked against it; without a checkpoint, the settings' fields over FeatureSpec's defaults."""
    from tspo_ray.selector import selector_feature_spec

    given = FeatureSpec.load(settings.features, "serve.features")
    recorded = selector_feature_spec(settings.checkpoint) if settings.checkpoint else None
    return given if recorded is None else recorded.adopt(given, "serve.features", settings.checkpoint)


def load_serving_agent(settings: ServeSettings, dim: int) -> tuple[torch.nn.Module, str, str, str]:
    """(agent in eval mode, its inference mode, model_version, a sentence saying what was loaded)."""
    from tspo_ray.checkpoint import recommended_checkpoint
    from tspo_ray.method.agent import TemporalAgent
    from tspo_ray.selector import load_selector_agent

    if not settings.checkpoint:
        torch.manual_seed(settings.seed)
        agent = TemporalAgent(dim, window=settings.window, heads=settings.heads)
        return (agent.eval(), "top-k", f"random-init(seed={settings.seed})",
                "a freshly initialised agent (no checkpoint given)")
    path = Path(settings.checkpoint)
    agent, mode = load_selector_agent(path, window=settings.window, heads=settings.heads)
    if agent.dim != dim:
        raise ValueError(f"{path}: agent feature dim {agent.dim} does not match the encoder's {dim}")
    weights = (recommended_checkpoint(path) or path) if path.is_dir() else path  # the file load_selector_agent read
    # named without its folder: GET / must not show where the server keeps its files
    return agent, mode, f"{weights.name}@{_file_digest(weights)}", f"agent weights from {weights.name}"


def canonical_fps(fps: float) -> float:
    """A candidate rate rounded to 6 significant digits: 1.0 and 1.000001 are one rate (one grid, one cache entry)."""
    return float(f"{float(fps):.6g}")


#: the candidate rates and caps a request may choose among (others are rounded onto them, as are the service's
#: defaults never): one video has at most len(FPS_STEPS) x len(CAP_STEPS) + 1 feature entries, so varying the two
#: cannot make decode+encode work and evict other videos without end
FPS_STEPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 10.0, 15.0, 30.0)
CAP_STEPS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


def candidate_settings(fps: float | None, max_candidates: int | None, default_fps: float,
                       default_cap: int | None) -> tuple[float, int | None]:
    """(rate, cap) a request's candidate settings select: an omitted one, or the service's default, as configured;
    a rate otherwise the nearest of FPS_STEPS (in ratio), a cap the largest of CAP_STEPS not above it."""
    if fps is None or canonical_fps(fps) == canonical_fps(default_fps):
        rate = canonical_fps(default_fps)
    else:
        rate = min(FPS_STEPS, key=lambda step: abs(np.log(step / float(fps))))
    if max_candidates is None or max_candidates == default_cap:
        cap = default_cap
    else:
        cap = max([step for step in CAP_STEPS if step <= max_candidates] or [CAP_STEPS[0]])
    return rate, cap


def file_key(location: str) -> tuple:
    """(resolved path, size, mtime): an edited file gets a new key. URLs have no stat."""
    if url_scheme(location) is not None:
        return (location, None, None)
    st = Path(location).stat()
    return (location, st.st_size, st.st_mtime_ns)


def feature_cache_key(location: str, fps: float, max_candidates: int | None, frame_size: int | None, encoder: str) -> tuple:
    """(resolved path, size, mtime, fps, cap, frame size, encoder)."""
    return (*file_key(location), fps, max_candidates, frame_size, encoder)


def jpeg_b64(frame: np.ndarray) -> str:
    """A base64 JPEG of an RGB frame."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=85)
    return base64.b64encode(buf.getvalue()).decode("ascii")


class KeyframeService:
    """Holds the encoder, the agent and the feature cache; every method is safe to call from worker threads."""

    def __init__(self, settings: ServeSettings, workers: int | None = None):
        from tspo_ray.video.encoders import load_encoder

        self.settings = settings
        self.feature_spec = serving_feature_spec(settings)
        self.encoder = load_encoder(self.feature_spec.encoder)
        self.agent, self.inference_mode, self.model_version, self.agent_source = load_serving_agent(
            settings, self.encoder.dim)
        self.features = LRUCache(settings.cache_size)
        self.text = LRUCache(1024)
        self.thumbs = LRUCache(settings.thumbnail_cache_size)  # ((path, size, mtime, side), frame) -> JPEG
        # at most `workers` torch calls at once (more would only oversubscribe the replica's cores); decoding runs
        # outside them (PyAV releases the GIL), so one video decodes while another encodes
        self.workers = max(1, int(workers or settings.workers or 1))
        self._torch_slots = threading.BoundedSemaphore(self.workers)
        # one more video decoding than encoding keeps the torch slots fed; it also bounds the pixels held
        self._decode_slots = threading.BoundedSemaphore(self.workers + 1)
        self._inflight: dict[tuple, threading.Lock] = {}
        self._inflight_guard = threading.Lock()

    def describe(self) -> dict:
        s, spec = self.settings, self.feature_spec
        return {
            "service": "tspo-ray keyframe selection", "model_version": self.model_version,
            "agent": self.agent_source, "agent_config": self.agent.config(), "encoder": self.encoder.name,
            "methods": list(SELECTORS), "inference_mode": self.inference_mode,
            "defaults": {"candidate_fps": spec.fps, "max_candidates": spec.max_candidates,
                         "frame_size": spec.frame_size},
            "video_roots": [Path(r).name for r in s.video_roots], "url_schemes": s.url_schemes,
            "cache": {"size": len(self.features), "capacity": s.cache_size, "hits": self.features.hits,
                      "misses": self.features.misses},
        }

    def video_features(self, location: str, fps: float, max_candidates: int | None) -> tuple[VideoFeatures, bool, float]:
        """(features, cache hit, decode+encode ms). Unusable videos raise RequestError 422 naming the file."""
        t0 = time.perf_counter()
        fps = canonical_fps(fps)  # the rate decoded with is the rate in the key
        try:
            key = feature_cache_key(location, fps, max_candidates, self.feature_spec.frame_size, self.encoder.name)
        except OSError as exc:
            raise RequestError(404, "not_found", f"{location}: {exc.strerror or exc}") from None
        cached = self.features.get(key)
        if cached is not None:
            return cached, True, (time.perf_counter() - t0) * 1000
        # concurrent first requests for one video wait for a single decode+encode instead of repeating it
        with self._inflight_guard:
            key_lock = self._inflight.setdefault(key, threading.Lock())
        try:
            with key_lock:
                done = self.features.peek(key)
                if done is not None:
                    return done, True, (time.perf_counter() - t0) * 1000
                feats = self._compute(location, fps, max_candidates)
                self.features.put(key, feats)
        finally:
            with self._inflight_guard:
                self._inflight.pop(key, None)
        return feats, False, (time.perf_counter() - t0) * 1000

    def _compute(self, location: str, fps: float, max_candidates: int | None) -> VideoFeatures:
        """compute_video_features' result (same frames, same encoder batches, so the same features as the feature
        store), with the file probed once and decoded outside the torch slots, one codec thread per video."""
        from tspo_ray.video import decode as video_decode

        try:
            info = video_decode.probe(location)
            indices, times = video_io.candidate_indices(info.num_frames, info.native_fps, fps, max_candidates,
                                                        self.feature_spec.min_candidates)
            chunks = video_decode.iter_sequential(location, indices, self.feature_spec.frame_size, threads=1,
                                                  chunk=FEATURE_CHUNK)
            feats = []
            with self._decode_slots:
                for decoded in chunks:
                    with self._torch_slots:
                        feats.append(self.encoder.encode_frames(decoded.frames, batch_size=ENCODE_BATCH))
        except (video_io.VideoError, ValueError) as exc:
            raise RequestError(422, "bad_video", str(exc)) from None
        # stored in float16 like the feature store, so selections match jobs/evaluate.py bit for bit
        return VideoFeatures(torch.cat(feats).half(), indices.astype(np.int64), times.astype(np.float64),
                             info.duration_s, location)

    def text_feature(self, question: str) -> torch.Tensor:
        cached = self.text.get(question)
        if cached is None:
            with self._torch_slots:
                cached = self.encoder.encode_text([question]).float()[0].clone()
            self.text.put(question, cached)
        return cached

    def make_job(self, location: str, feats: VideoFeatures, text: torch.Tensor, method: str, k: int) -> SelectionJob:
        """What selection reads of a request: the fields evaluation.select_frames takes from a FeatureItem."""
        return SelectionJob(feats.frame_features.float(), text, np.asarray(feats.frame_indices),
                            np.asarray(feats.timestamps_s), k, method, key=location)

    def select_many(self, jobs: list[SelectionJob]) -> list[dict]:
        """Selections of a batch of requests, all agent scoring in one forward pass (in a torch slot)."""
        with self._torch_slots:
            return select_many(jobs, self.agent, self.inference_mode)

    def thumbnails(self, location: str, frame_indices: list[int]) -> list[str]:
        """Base64 JPEGs of the given native frames at thumbnail_size: from the thumbnail LRU, the frames it lacks
        decoded in one single-threaded pass inside a decode slot (like the candidates' decoding)."""
        from tspo_ray.video import decode as video_decode

        size = self.settings.thumbnail_size
        try:
            key = (*file_key(location), size)
        except OSError as exc:
            raise RequestError(404, "not_found", f"{location}: {exc.strerror or exc}") from None
        found = {i: self.thumbs.get((key, i)) for i in dict.fromkeys(int(i) for i in frame_indices)}
        missing = sorted(i for i, jpeg in found.items() if jpeg is None)
        if missing:
            try:
                with self._decode_slots:
                    decoded = video_decode.decode_sequential(location, missing, size, threads=1)
                    for i, frame in zip(missing, decoded.frames):
                        found[i] = jpeg_b64(frame)
                        self.thumbs.put((key, i), found[i])
            except (video_io.VideoError, ValueError) as exc:
                raise RequestError(422, "bad_video", str(exc)) from None
        return [found[int(i)] for i in frame_indices]

    def candidate_settings(self, fps: float | None, max_candidates: int | None) -> tuple[float, int | None]:
        return candidate_settings(fps, max_candidates, self.feature_spec.fps, self.feature_spec.max_candidates)
