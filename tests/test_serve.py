"""The Ray Serve keyframe-selection service over real HTTP: routes, validation, path rules, cache, and equality
with the evaluation job's selections. One app on a local Ray serves the whole module."""
from __future__ import annotations

import base64
import io
import os
import shutil
import socket
from pathlib import Path

import httpx
import pytest
from helpers.ports import free_port
from helpers.scripts import load_script

from tspo_ray.serve.access import RequestError, resolve_video
from tspo_ray.serve.cache import LRUCache

# --- pure pieces -----------------------------------------------------------------------------------------------------

def test_lru_cache_evicts_least_recently_used():
    c = LRUCache(2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1  # a is now the most recent
    c.put("c", 3)
    assert "b" not in c and c.get("a") == 1 and c.get("c") == 3
    assert c.get("b") is None and (c.hits, c.misses) == (3, 1)


def test_resolve_video_rules(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (root / "v.mp4").write_bytes(b"x")
    (outside / "secret.mp4").write_bytes(b"x")
    (root / "link.mp4").symlink_to(outside / "secret.mp4")
    assert resolve_video("v.mp4", [root]) == str((root / "v.mp4").resolve())
    assert resolve_video(str(root / "v.mp4"), [root]) == str((root / "v.mp4").resolve())
    for bad, status in [("../outside/secret.mp4", 403), ("link.mp4", 403), (str(outside / "secret.mp4"), 403),
                        ("nope.mp4", 404), ("https://example.com/v.mp4", 403)]:
        with pytest.raises(RequestError) as err:
            resolve_video(bad, [root])
        assert err.value.status == status, bad
    with pytest.raises(RequestError, match="outside the allowed"):  # a second root does not launder an escape
        resolve_video("link.mp4", [root, tmp_path / "other"])
    assert resolve_video("https://example.com/v.mp4", [root], ["https"]) == "https://example.com/v.mp4"


# --- the running service ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A jobs/train.py-style checkpoint of a seeded random agent on the shipped tiny CLIP's dimension."""
    import torch

    from tspo_ray.checkpoint import save_checkpoint
    from tspo_ray.method.agent import TemporalAgent
    from tspo_ray.video.encoders import load_encoder

    torch.manual_seed(3)
    agent = TemporalAgent(load_encoder({"backend": "embedded"}).dim)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt"), 5, {"agent": agent.state_dict(),
                                                                 "agent_config": agent.config()})


@pytest.fixture(scope="module")
def roots(tiny_world, tmp_path_factory) -> dict:
    """A private root with a copied video, a corrupt file, a text file, and a symlink escaping to an outside video."""
    base = tmp_path_factory.mktemp("serve")
    root, outside = base / "videos", base / "outside"
    root.mkdir(), outside.mkdir()
    video = sorted(tiny_world.rglob("*.mp4"))[0]
    shutil.copy(video, root / "clip.mp4")
    shutil.copy(video, outside / "secret.mp4")
    (root / "corrupt.mp4").write_bytes(os.urandom(4096))
    (root / "notes.txt").write_text("not a video\n")
    (root / "escape.mp4").symlink_to(outside / "secret.mp4")
    (root / "loop.mp4").symlink_to(root / "loop.mp4")  # ELOOP
    (root / "a").symlink_to(root / "b")  # a loop through two links
    (root / "b").symlink_to(root / "a")
    return {"root": root, "outside": outside, "world": tiny_world}


@pytest.fixture(scope="module")
def service(ray_local, roots, checkpoint):
    from ray import serve

    from tspo_ray.serve.app import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = {"checkpoint": str(checkpoint), "video_roots": [str(roots["root"]), str(roots["world"])],
                "max_body_bytes": 16384}
    serve.run(build_app(settings), name="tspo-select", route_prefix="/")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
        yield http
    serve.shutdown()


def test_health_and_info(service, checkpoint):
    assert service.get("/healthz").json()["status"] == "ok"
    info = service.get("/").json()
    assert info["agent"] == f"agent weights from {checkpoint.name}"
    assert info["model_version"].startswith(checkpoint.name + "@")
    assert info["encoder"].startswith("hf:tiny-clip@")
    assert info["defaults"] == {"candidate_fps": 1.0, "max_candidates": 128, "frame_size": 64}


def test_second_question_on_a_video_hits_the_cache(service):
    first = service.post("/select", json={"video": "clip.mp4", "question": "When does the red star appear?",
                                          "num_frames": 8, "max_candidates": 40})
    assert first.status_code == 200, first.text
    second = service.post("/select", json={"video": "clip.mp4", "question": "What colour is the square?",
                                           "num_frames": 4, "method": "bin-max", "max_candidates": 40})
    a, b = first.json(), second.json()
    assert a["timings_ms"]["cache_hit"] == 0.0 and b["timings_ms"]["cache_hit"] == 1.0
    assert b["timings_ms"]["decode_encode_ms"] < a["timings_ms"]["decode_encode_ms"]
    assert len(a["frame_indices"]) == 8 and a["frame_indices"] == sorted(a["frame_indices"])
    # a cap of 40 is rounded down onto the service's steps (service.CAP_STEPS), and the answer says so
    assert a["num_candidates"] == 32 == a["max_candidates"] and a["candidate_fps"] == 1.0
    assert b["method"] == "bin-max" and len(b["scores"]) == 4
    # a rate that differs by float noise is the same rate: the cached features serve it
    third = service.post("/select", json={"video": "clip.mp4", "question": "What colour is the square?",
                                          "num_frames": 4, "max_candidates": 40, "candidate_fps": 1.000001})
    assert third.status_code == 200, third.text
    assert third.json()["timings_ms"]["cache_hit"] == 1.0


def test_candidate_rates_are_canonical():
    from tspo_ray.serve.service import canonical_fps

    assert canonical_fps(1.000001) == canonical_fps(0.9999996) == 1.0
    assert canonical_fps(29.97) == 29.97 and canonical_fps(0.5) != canonical_fps(0.5001)


def test_selection_equals_the_evaluation_job(service, tiny_world, checkpoint, tmp_path):
    """Same features path (feature store), same checkpoint: the service returns exactly evaluate.py's frames."""
    from tspo_ray.checkpoint import load_agent
    from tspo_ray.config import load_config
    from tspo_ray.evaluation.accuracy import select_frames
    from tspo_ray.splits import prepare_split
    from tspo_ray.video.encoders import load_encoder

    cfg = load_config(overrides=[f"data.root={tiny_world}", f"features.store={tmp_path}/fs"])
    items, _, _ = prepare_split(cfg, "test", load_encoder(cfg.features.encoder), progress=False)
    agent = load_agent(checkpoint).eval()
    by_video = {}
    for it in items:  # one question per video keeps this quick
        by_video.setdefault(it.video_path, it)
    assert len(by_video) == 2
    for it in by_video.values():
        for method in ("agent", "clip-top-k", "bin-max", "uniform"):
            want = select_frames(it, method, 8, agent)
            got = service.post("/select", json={"video": it.video_path, "question": it.record.question,
                                                "num_frames": 8, "method": method}).json()
            assert got["frame_indices"] == want["frame_indices"], method
            assert got["timestamps_s"] == want["timestamps_s"]
            if want["scores"] is None:
                assert got["scores"] is None
            else:
                assert got["scores"] == pytest.approx(want["scores"], abs=2e-5)


def test_concurrent_requests_of_mixed_lengths_select_as_one_at_a_time(service, roots, checkpoint):
    """Requests sent at once (batched by @serve.batch into packed agent passes) get the frames and scores that
    one-at-a-time selection gives on the same features."""
    from concurrent.futures import ThreadPoolExecutor

    from tspo_ray.selector import select_from_features
    from tspo_ray.serve.service import KeyframeService, ServeSettings

    videos = ["clip.mp4", *sorted(str(p.relative_to(roots["world"])) for p in roots["world"].rglob("*.mp4"))[:2]]
    methods = ["agent", "agent:bin-max", "agent:top-k+edges", "clip-top-k"]
    bodies = [{"video": videos[i % 3], "question": ["When does the red star appear?", "Where is the blue circle?"][i % 2],
               "num_frames": 4 + i % 3, "method": methods[i % 4], "max_candidates": cap}
              for i, cap in enumerate([40, 17, 64, 33, 128, 25, 50, 90])]
    for body in bodies:  # features in the replica's cache, so the concurrent requests meet in the batcher
        assert service.post("/select", json=body).status_code == 200
    with ThreadPoolExecutor(len(bodies)) as pool:
        served = list(pool.map(lambda b: service.post("/select", json=b), bodies))
    local = KeyframeService(ServeSettings(checkpoint=str(checkpoint), video_roots=[str(roots["root"]),
                                                                                  str(roots["world"])]))
    for body, resp in zip(bodies, served):
        assert resp.status_code == 200, resp.text
        path = resolve_video(body["video"], [roots["root"], roots["world"]])
        feats, _, _ = local.video_features(path, *local.candidate_settings(None, body["max_candidates"]))
        want = select_from_features(feats.frame_features.float(), local.text_feature(body["question"]),
                                    feats.frame_indices, feats.timestamps_s, body["num_frames"], body["method"],
                                    local.agent, local.inference_mode)
        got = resp.json()
        assert got["num_candidates"] == len(feats.frame_indices) <= body["max_candidates"]
        assert got["frame_indices"] == want["frame_indices"] and got["timestamps_s"] == want["timestamps_s"], body
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-5)


def test_return_frames_gives_jpeg_thumbnails(service):
    from PIL import Image

    resp = service.post("/select", json={"video": "clip.mp4", "question": "Where is the blue circle?",
                                         "num_frames": 3, "method": "uniform", "return_frames": True,
                                         "max_candidates": 40}).json()
    assert len(resp["frames_jpeg_b64"]) == 3 and resp["scores"] is None
    img = Image.open(io.BytesIO(base64.b64decode(resp["frames_jpeg_b64"][0])))
    assert img.format == "JPEG" and img.size == (128, 128)


GOOD = {"video": "clip.mp4", "question": "When does the red star appear?", "num_frames": 4}

BAD_REQUESTS = [
    ({**GOOD, "video": "missing.mp4"}, 404, "missing.mp4"),
    ({**GOOD, "video": "corrupt.mp4"}, 422, "corrupt.mp4"),
    ({**GOOD, "video": "notes.txt"}, 422, "notes.txt"),
    ({**GOOD, "question": "   "}, 422, "question must not be empty"),
    ({**GOOD, "num_frames": 0}, 422, "num_frames"),
    ({**GOOD, "num_frames": 257}, 422, "num_frames"),
    ({**GOOD, "method": "best"}, 422, "method"),
    ({**GOOD, "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
    ({**GOOD, "video": "../outside/secret.mp4"}, 403, "outside the allowed video roots"),
    ({**GOOD, "video": "escape.mp4"}, 403, "outside the allowed video roots"),
    ({**GOOD, "video": "/etc/passwd"}, 403, "outside the allowed video roots"),
    ({**GOOD, "video": "http://127.0.0.1/v.mp4"}, 403, "URL scheme 'http' is not allowed"),
    ({"question": "q", "num_frames": 4}, 422, "video: Field required"),
]


@pytest.mark.parametrize("body,status,needle", BAD_REQUESTS, ids=[f"{s}-{n[:20]}" for _, s, n in BAD_REQUESTS])
def test_bad_requests_get_clear_4xx(service, body, status, needle):
    resp = service.post("/select", json=body)
    assert resp.status_code == status, resp.text
    assert needle in resp.json()["message"] and resp.json()["error"]


def test_malformed_and_oversized_bodies(service):
    resp = service.post("/select", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 400 and "not valid JSON" in resp.json()["message"]
    resp = service.post("/select", json=[1, 2])
    assert resp.status_code == 400 and "JSON object" in resp.json()["message"]
    resp = service.post("/select", json={**GOOD, "question": "x" * 17000})
    assert resp.status_code == 413 and "exceeds the limit of 16384" in resp.json()["message"]


def _raw(text: str) -> bytes:
    return text.encode()


GOOD_JSON = '"video": "clip.mp4", "question": "When does the red star appear?"'
# (a request body that once made the service answer 500, the expected status, a phrase of the message)
FUZZ = [
    ("name over 255", {**GOOD, "video": "a" * 300 + ".mp4"}, 400, "cannot be resolved (File name too long)"),
    ("component over 255", {**GOOD, "video": "sub/" + "b" * 256 + "/clip.mp4"}, 404, "no such video"),
    ("absolute over 255", {**GOOD, "video": "/" + "c" * 300}, 403, "outside the allowed video roots"),
    ("existing folder, name over 255", {**GOOD, "video": "." * 1 + "/" + "d" * 256}, 400, "File name too long"),
    ("symlink loop", {**GOOD, "video": "loop.mp4"}, 400, "loop.mp4: cannot be resolved (a symlink loop)"),
    ("two-link loop", {**GOOD, "video": "a/clip.mp4"}, 400, "a/clip.mp4: cannot be resolved (a symlink loop)"),
    ("5000-digit int", _raw("{" + GOOD_JSON + ', "num_frames": ' + "9" * 5000 + "}"), 400, "too many digits"),
    ("5000-digit max_candidates", _raw("{" + GOOD_JSON + ', "num_frames": 4, "max_candidates": ' + "1" * 5000 + "}"),
     400, "too many digits"),
    ("5000-digit float", _raw("{" + GOOD_JSON + ', "num_frames": 4, "candidate_fps": 1' + "0" * 5000 + ".5}"),
     422, "candidate_fps"),
    ("8000 nested [", _raw("[" * 8000), 400, "nested too deeply"),
    ("8000 nested { in a field", _raw("{" + GOOD_JSON + ', "num_frames": ' + '{"a":' * 2000 + "1" + "}" * 2000 + "}"),
     400, "nested too deeply"),
    ("lone surrogate question", _raw("{" + GOOD_JSON[:-1] + '\\ud800", "num_frames": 4}'), 422, "question"),
    ("NUL in video", {**GOOD, "video": "clip.mp4\u0000x"}, 400, "NUL byte"),
]


@pytest.mark.parametrize("name,body,status,needle", FUZZ, ids=[f[0] for f in FUZZ])
def test_fuzz_classes_get_4xx_not_500(service, name, body, status, needle):
    if isinstance(body, bytes):
        resp = service.post("/select", content=body, headers={"content-type": "application/json"})
    else:
        resp = service.post("/select", json=body)
    assert resp.status_code == status, resp.text
    assert needle in resp.json()["message"] and resp.json()["error"]


def test_huge_content_length_header_is_4xx_not_500(service):
    """A 5,000-digit Content-Length (httpx refuses to send one, so a raw socket does)."""
    host, port = service.base_url.host, service.base_url.port
    with socket.create_connection((host, port), timeout=60) as s:
        s.sendall(b"POST /select HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                  + b"9" * 5000 + b"\r\nConnection: close\r\n\r\n{}")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    assert 400 <= status < 500, reply[:200]


def test_messages_and_info_name_paths_relative_to_a_root(service, roots, checkpoint):
    """No absolute server path in GET / or in any error: videos relative to their root, the checkpoint by name."""
    info = service.get("/").text
    assert str(checkpoint.parent) not in info and str(roots["root"]) not in info and str(roots["world"]) not in info
    for body in ({**GOOD, "video": "corrupt.mp4"}, {**GOOD, "video": "notes.txt"},
                 {**GOOD, "video": str(roots["root"] / "corrupt.mp4")}, {**GOOD, "video": "loop.mp4"}):
        resp = service.post("/select", json=body)
        assert 400 <= resp.status_code < 500 and str(roots["root"].parent) not in resp.text, resp.text
        assert "corrupt.mp4" in resp.text or "notes.txt" in resp.text or "loop.mp4" in resp.text


def test_keeps_serving_after_bad_requests(service):
    for body, _, _ in BAD_REQUESTS:
        service.post("/select", json=body)
    for _, body, _, _ in FUZZ:
        service.post("/select", **({"content": body} if isinstance(body, bytes) else {"json": body}))
    assert service.get("/healthz").status_code == 200
    resp = service.post("/select", json={**GOOD, "max_candidates": 40})
    assert resp.status_code == 200 and len(resp.json()["frame_indices"]) == 4


def test_client(service):
    from tspo_ray.serve.client import SelectClient, ServiceError

    with SelectClient(str(service.base_url)) as client:
        assert client.healthy()
        sel = client.select("clip.mp4", "Where is the blue circle?", 5, method="clip-top-k", max_candidates=40)
        assert len(sel["frame_indices"]) == 5 and sel["method"] == "clip-top-k"
        with pytest.raises(ServiceError) as err:
            client.select("../outside/secret.mp4", "q", 5)
        assert err.value.status == 403 and err.value.kind == "forbidden"


def test_serve_config_and_job_settings(tmp_path):
    """configs/serve.yaml passes Ray's own schema and its args are valid ServeSettings; jobs/serve.py checks roots."""
    import yaml
    from ray.serve.schema import ServeDeploySchema
    parse_args, settings_from_args = load_script("jobs/serve.py").parse_args, load_script("jobs/serve.py").settings_from_args

    from tspo_ray.serve.service import ServeSettings

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "serve.yaml").read_text())
    app = ServeDeploySchema.model_validate(raw).applications[0]
    assert app.import_path == "tspo_ray.serve.app:build_app"
    dep = {d.name: d for d in app.deployments}["SelectorReplica"]
    assert dep.max_ongoing_requests > raw["applications"][0]["args"]["max_batch_size"]
    assert dep.autoscaling_config["max_replicas"] >= dep.autoscaling_config["min_replicas"]
    assert ServeSettings.load(raw["applications"][0]["args"]).url_schemes == []
    with pytest.raises(ValueError, match="^video_root: unknown serve option"):
        ServeSettings.load({"video_root": "x"})
    s = settings_from_args(parse_args(["--video-root", str(tmp_path), "--encoder", "{backend: embedded}"]))
    assert s["video_roots"] == [str(tmp_path.resolve())] and s["features"] == {"encoder": {"backend": "embedded"}}
    assert settings_from_args(parse_args(["--video-root", str(tmp_path)]))["features"] == {}  # the checkpoint's
    s = settings_from_args(parse_args(["--video-root", str(tmp_path), "--max-candidates", "all", "--frame-size",
                                       "native", "--fps", "2"]))
    assert s["features"] == {"max_candidates": None, "frame_size": None, "fps": 2.0}
    with pytest.raises(SystemExit, match="--frame-size 'big': a whole number or 'native'"):
        settings_from_args(parse_args(["--video-root", str(tmp_path), "--frame-size", "big"]))
    with pytest.raises(SystemExit, match="not a folder"):
        settings_from_args(parse_args(["--video-root", str(tmp_path / "nope")]))
    with pytest.raises(SystemExit, match="at least one --video-root"):
        settings_from_args(parse_args([]))


def test_serve_job_makes_relative_paths_absolute_before_deployment(tmp_path, monkeypatch):
    """Replicas run in Ray's copy of the working directory: a relative --checkpoint or model must not reach them."""
    parse_args, settings_from_args = load_script("jobs/serve.py").parse_args, load_script("jobs/serve.py").settings_from_args

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "clip").mkdir()
    (tmp_path / "videos").mkdir()
    monkeypatch.chdir(tmp_path)
    s = settings_from_args(parse_args(["--video-root", "videos", "--checkpoint", "run/checkpoints",
                                       "--encoder", "{backend: hf, model: clip}"]))
    assert s["checkpoint"] == str(tmp_path.resolve() / "run" / "checkpoints")
    assert s["video_roots"] == [str(tmp_path.resolve() / "videos")]
    assert s["features"]["encoder"] == {"backend": "hf", "model": str(tmp_path.resolve() / "clip")}
    hub = settings_from_args(parse_args(["--video-root", "videos", "--encoder", "{backend: hf, model: org/clip}"]))
    assert hub["features"]["encoder"]["model"] == "org/clip" and hub["checkpoint"] is None
    with pytest.raises(SystemExit, match="--checkpoint run/missing: no such file or folder"):
        settings_from_args(parse_args(["--video-root", "videos", "--checkpoint", "run/missing"]))


def test_concurrent_first_requests_decode_a_video_once(roots):
    """In-process service (no Ray): four threads ask for one uncached video; the encoder runs on it once."""
    from concurrent.futures import ThreadPoolExecutor

    from tspo_ray.serve.service import KeyframeService, ServeSettings

    svc = KeyframeService(ServeSettings(video_roots=[str(roots["root"])]))
    calls = []
    encode = svc.encoder.encode_frames
    svc.encoder.encode_frames = lambda frames, **kw: calls.append(len(frames)) or encode(frames, **kw)
    path = str(roots["root"] / "clip.mp4")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: svc.video_features(path, 1.0, 24), range(4)))
    assert calls == [24]
    assert sorted(hit for _, hit, _ in results) == [False, True, True, True]
    assert all(r[0] is results[0][0] for r in results)


def test_without_checkpoint_the_service_says_its_agent_is_random(tmp_path):
    from tspo_ray.checkpoint import save_checkpoint
    from tspo_ray.method.agent import TemporalAgent
    from tspo_ray.serve.service import KeyframeService, ServeSettings

    info = KeyframeService(ServeSettings()).describe()
    assert info["model_version"] == "random-init(seed=0)" and "no checkpoint given" in info["agent"]
    wrong = TemporalAgent(32, heads=8)
    path = save_checkpoint(tmp_path, 1, {"agent": wrong.state_dict(), "agent_config": wrong.config()})
    with pytest.raises(ValueError, match="does not match the encoder"):
        KeyframeService(ServeSettings(checkpoint=str(path)))


# --- property-based: requests over the whole schema, valid and not, against the running service ----------------------

def _request_strategy():
    """Valid requests, valid ones with one field replaced by anything JSON can carry (NaN and Infinity included),
    and bodies of any shape."""
    from hypothesis import strategies as st

    from tspo_ray.method.selection_methods import SELECTORS
    from tspo_ray.serve.schema import MAX_CANDIDATE_FPS, MAX_CANDIDATES, MAX_FRAMES, MIN_CANDIDATE_FPS

    anything = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=3), max_leaves=6)
    videos = st.sampled_from(["clip.mp4", "missing.mp4", "corrupt.mp4", "notes.txt", "../outside/secret.mp4",
                              "escape.mp4", "loop.mp4", "a/clip.mp4", "/etc/passwd", "https://x.org/v.mp4"])
    valid = {
        "video": st.one_of(videos, videos, st.text(min_size=1, max_size=300)),
        "question": st.one_of(st.sampled_from(["When does the red star appear?", "What colour is the square?"]),
                              st.text(max_size=80)),
        "num_frames": st.integers(1, MAX_FRAMES),
    }
    optional = {
        "method": st.one_of(st.sampled_from([*SELECTORS, "agent", "agent:bin-max", "clip:aks", "agent:events"]),
                            st.text(max_size=20)),
        "candidate_fps": st.floats(MIN_CANDIDATE_FPS, MAX_CANDIDATE_FPS),
        "max_candidates": st.integers(1, MAX_CANDIDATES),
        "return_frames": st.booleans(),
    }
    any_number = st.one_of(st.integers(), st.floats(), st.floats(max_value=1e-300, min_value=0), st.just(5e-324))
    well_formed = st.fixed_dictionaries(valid, optional=optional)

    @st.composite
    def one_field_bad(draw):
        body = draw(well_formed)
        name = draw(st.sampled_from([*valid, *optional, "extra_field"]))
        body[name] = draw(st.one_of(anything, any_number))
        return body

    return st.one_of(well_formed, one_field_bad(), anything)


def test_no_request_over_the_schema_gets_a_5xx(service):
    import json

    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=_request_strategy())
    def check(body):
        raw = json.dumps(body, allow_nan=True).encode()  # NaN / Infinity as Python's json (and the service) read them
        resp = service.post("/select", content=raw, headers={"content-type": "application/json"})
        assert resp.status_code < 500, (body, resp.text)
        answer = resp.json()
        if resp.status_code == 200:
            assert len(answer["frame_indices"]) <= body["num_frames"]
        else:
            assert answer["error"] and answer["message"], answer

    check()
