"""Nobody gets in without a token: the service's bearer token over real HTTP (401 / 200), its refusal to listen
beyond loopback without one, and cluster.yaml's Ray token authentication with the dashboard on loopback."""
from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import httpx
import pytest
import yaml
from helpers.ports import free_port
from helpers.scripts import load_script

from tspo_ray.serve.auth import (
    authorize,
    configured_digest,
    is_loopback,
    require_token_beyond_loopback,
    token_digest,
)

ROOT = Path(__file__).resolve().parents[1]
TOKEN = secrets.token_urlsafe(32)
GOOD = {"video": "clip.mp4", "question": "When does the red star appear?", "num_frames": 4, "max_candidates": 24}



@pytest.fixture(scope="module")
def guarded(ray_local, tiny_world, tmp_path_factory):
    """The service with a bearer token read from a file (on loopback: a token is optional there, but honoured)."""
    from ray import serve

    from tspo_ray.serve.app import build_app

    base = tmp_path_factory.mktemp("auth")
    (base / "videos").mkdir()
    shutil.copy(sorted(tiny_world.rglob("*.mp4"))[0], base / "videos" / "clip.mp4")
    (base / "token").write_text(TOKEN + "\n")
    (base / "token").chmod(0o600)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"video_roots": [str(base / "videos")], "auth_token_file": str(base / "token")}),
              name="tspo-select", route_prefix="/")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
        yield http
    serve.shutdown()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer " + TOKEN[:-1] + "x"}, {"Authorization": TOKEN},
                                     {"Authorization": "Basic " + TOKEN}, {"Authorization": "Bearer"}],
                         ids=["none", "wrong", "no-scheme", "basic", "empty"])
def test_requests_without_the_token_get_a_401_json_error(guarded, headers):
    for method, path, kw in (("POST", "/select", {"json": GOOD}), ("GET", "/", {}), ("GET", "/healthz", {})):
        resp = guarded.request(method, path, headers=headers, **kw)
        assert resp.status_code == 401, (path, resp.text)
        assert resp.json()["error"] == "unauthorized" and "token" in resp.json()["message"]
        assert resp.headers["www-authenticate"] == "Bearer"
    # the token is checked before the body: an unauthenticated caller learns nothing about the schema or the files
    bad = guarded.post("/select", json={"video": "../etc/passwd"}, headers=headers)
    assert bad.status_code == 401


def test_requests_with_the_token_are_served(guarded):
    from tspo_ray.serve.client import SelectClient, ServiceError

    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert guarded.get("/healthz", headers=auth).json()["status"] == "ok"
    info = guarded.get("/", headers=auth)
    assert info.status_code == 200 and TOKEN not in info.text and token_digest(TOKEN) not in info.text
    resp = guarded.post("/select", json=GOOD, headers=auth)
    assert resp.status_code == 200 and len(resp.json()["frame_indices"]) == 4
    assert guarded.post("/select", json={**GOOD, "num_frames": 0}, headers=auth).status_code == 422
    with SelectClient(str(guarded.base_url), token=TOKEN) as client:
        assert client.select("clip.mp4", "Where is the blue circle?", 3, max_candidates=24)["frame_indices"]
    with SelectClient(str(guarded.base_url)) as client, pytest.raises(ServiceError) as err:
        client.select("clip.mp4", "Where is the blue circle?", 3)
    assert err.value.status == 401 and err.value.kind == "unauthorized"


def test_token_checks():
    digest = token_digest(TOKEN)
    authorize(f"Bearer {TOKEN}", digest)
    authorize(f"bearer  {TOKEN} ", digest)  # the scheme is case-insensitive (RFC 9110)
    authorize(None, None)  # no token configured: open (loopback only, see below)
    for header in (None, "", f"Bearer {TOKEN}x", f"Token {TOKEN}"):
        with pytest.raises(Exception) as err:
            authorize(header, digest)
        assert err.value.status == 401
    assert [is_loopback(h) for h in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost")] == [True] * 5
    assert [is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "example.com", "")] == [False] * 5


def test_token_sources(tmp_path, monkeypatch):
    (tmp_path / "t").write_text(TOKEN)
    (tmp_path / "t").chmod(0o600)
    assert configured_digest(str(tmp_path / "t"), None, None) == token_digest(TOKEN)
    monkeypatch.setenv("MY_TOKEN", TOKEN)
    assert configured_digest(None, "MY_TOKEN", None) == token_digest(TOKEN)
    assert configured_digest(None, None, token_digest(TOKEN).upper()) == token_digest(TOKEN)
    assert configured_digest(None, None, None) is None
    (tmp_path / "short").write_text("secret\n")
    (tmp_path / "short").chmod(0o600)
    for args, needle in (((str(tmp_path / "none"), None, None), "no such file"),
                         ((str(tmp_path / "short"), None, None), "at least 16 characters"),
                         ((None, "UNSET_TOKEN_VAR", None), "UNSET_TOKEN_VAR: the environment variable is not set"),
                         ((None, None, "abc"), "64 hexadecimal digits")):
        with pytest.raises(ValueError, match=needle):
            configured_digest(*args)


def test_service_refuses_to_listen_beyond_loopback_without_a_token(tmp_path, monkeypatch):
    serve_main = load_script("jobs/serve.py").main

    require_token_beyond_loopback("127.0.0.1", False, False)
    require_token_beyond_loopback("0.0.0.0", True, False)
    require_token_beyond_loopback("0.0.0.0", False, True)
    with pytest.raises(ValueError, match="refusing to serve on 0.0.0.0"):
        require_token_beyond_loopback("0.0.0.0", False, False)
    monkeypatch.delenv("TSPO_SERVE_TOKEN", raising=False)
    # jobs/serve.py stops before starting Ray (no Ray is started here: the refusal comes first)
    with pytest.raises(SystemExit, match="refusing to serve on 0.0.0.0.*--insecure-no-auth"):
        serve_main(["--video-root", str(tmp_path), "--host", "0.0.0.0"])
    with pytest.raises(SystemExit, match="auth token file .*: no such file"):
        serve_main(["--video-root", str(tmp_path), "--host", "0.0.0.0", "--auth-token-file", str(tmp_path / "x")])


def test_serve_job_passes_the_token_digest_never_the_token(tmp_path, monkeypatch):
    access_settings, parse_args = load_script("jobs/serve.py").access_settings, load_script("jobs/serve.py").parse_args

    monkeypatch.setenv("TSPO_SERVE_TOKEN", TOKEN)
    got = access_settings(parse_args(["--video-root", str(tmp_path), "--host", "0.0.0.0"]))
    assert got == {"auth_token_sha256": token_digest(TOKEN), "insecure_no_auth": False}
    monkeypatch.delenv("TSPO_SERVE_TOKEN")
    got = access_settings(parse_args(["--video-root", str(tmp_path), "--host", "0.0.0.0", "--insecure-no-auth"]))
    assert got == {"auth_token_sha256": None, "insecure_no_auth": True}


def test_ingress_refuses_a_non_loopback_host_without_a_token(monkeypatch):
    """What `serve run configs/serve.yaml` meets: the ingress reads the proxies' host from Serve and refuses."""
    from tspo_ray.serve import app
    from tspo_ray.serve.service import ServeSettings

    monkeypatch.setattr(app, "http_host", lambda: "0.0.0.0")
    with pytest.raises(ValueError, match="refusing to serve on 0.0.0.0"):
        app.access_digest(ServeSettings())
    assert app.access_digest(ServeSettings(insecure_no_auth=True)) is None
    assert app.access_digest(ServeSettings(auth_token_sha256=token_digest(TOKEN))) == token_digest(TOKEN)
    monkeypatch.setattr(app, "http_host", lambda: None)  # a host it cannot read counts as beyond loopback
    with pytest.raises(ValueError, match="refusing to serve on an unknown host"):
        app.access_digest(ServeSettings())
    monkeypatch.setattr(app, "http_host", lambda: "127.0.0.1")
    assert app.access_digest(ServeSettings()) is None


def test_serve_config_binds_beyond_loopback_only_with_a_token():
    raw = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
    args = raw["applications"][0]["args"]
    host = raw["http_options"]["host"]
    assert is_loopback(host) or (args.get("auth_token_file") or args.get("auth_token_env"))
    assert not args.get("insecure_no_auth")


def test_cluster_provisions_ray_token_auth_and_keeps_the_dashboard_on_loopback():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    head, workers = " ".join(cfg["head_start_ray_commands"]), cfg["worker_start_ray_commands"]
    assert "0.0.0.0" not in head and "--dashboard-host=127.0.0.1" in head
    starts = [c for c in [*cfg["head_start_ray_commands"], *workers] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts)
    # the token reaches every node (file mounts are copied to the head and from it to each worker)
    assert cfg["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    assert any("RAY_AUTH_MODE=token" in c and ".bashrc" in c for c in cfg["setup_commands"])
    assert any(c.startswith("chmod 600") and "auth_token" in c for c in cfg["setup_commands"])
    serve_cfg = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
    token_file = serve_cfg["applications"][0]["args"]["auth_token_file"]
    assert any(Path(remote).name == Path(token_file).name for remote in cfg["file_mounts"])
