"""Loopback mode (no token) with the gate in Serve's proxy, as jobs/serve.py starts it: what a web page in the
operator's browser could send is refused there, on Serve's own routes too."""
from __future__ import annotations

import shutil

import httpx
import pytest
from helpers.ports import free_port
from helpers.scripts import load_script


@pytest.fixture(scope="module")
def loopback(ray_local, tiny_world, tmp_path_factory):
    from ray import serve
    serve_job = load_script("jobs/serve.py")
    gate_options, http_options = serve_job.gate_options, serve_job.http_options
    parse_args, settings_from_args = serve_job.parse_args, serve_job.settings_from_args

    from tspo_ray.serve.app import build_app

    root = tmp_path_factory.mktemp("loopback_videos")
    shutil.copy(sorted(tiny_world.rglob("*.mp4"))[0], root / "clip.mp4")
    args = parse_args(["--video-root", str(root), "--port", str(free_port())])
    settings = settings_from_args(args)
    serve.start(http_options=http_options(args), controller_options=gate_options(settings))
    serve.run(build_app(settings), name="tspo-select", route_prefix="/")
    with httpx.Client(base_url=f"http://127.0.0.1:{args.port}", timeout=120) as http:
        yield http
    serve.shutdown()


BODY = '{"video": "clip.mp4", "question": "When does the red star appear?", "num_frames": 4, "max_candidates": 24}'


def test_a_rebound_host_is_refused_on_every_route(loopback):
    for path in ("/-/routes", "/-/healthz", "/healthz", "/", "/docs"):
        resp = loopback.get(path, headers={"Host": "attacker.example:8000"})
        assert resp.status_code == 403 and resp.json()["error"] == "bad_host", path
    assert loopback.get("/-/routes").status_code == 200  # the same route, addressed to loopback
    assert loopback.get("/healthz", headers={"Host": "localhost"}).json()["status"] == "ok"


def test_a_cross_site_form_or_text_post_is_refused(loopback):
    for kind in ("text/plain", "application/x-www-form-urlencoded"):
        resp = loopback.post("/select", content=BODY, headers={"Content-Type": kind})
        assert resp.status_code == 415, (kind, resp.text)
    resp = loopback.post("/select", content=BODY, headers={"Content-Type": "application/json",
                                                           "Origin": "https://attacker.example"})
    assert resp.status_code == 403 and resp.json()["error"] == "bad_origin"
    resp = loopback.post("/select", content=BODY, headers={"Content-Type": "application/json"})
    assert resp.status_code == 200 and len(resp.json()["frame_indices"]) == 4
