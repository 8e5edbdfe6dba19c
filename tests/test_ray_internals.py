"""Each private Ray API behind tspo_ray.ray_internals, pinned: a Ray upgrade that moves one fails here, by name."""
from __future__ import annotations

import ray

from tspo_ray import ray_internals


def test_no_module_outside_ray_internals_reaches_into_ray_privates():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = [p for folder in ("tspo_ray", "jobs", "pipelines", "benchmarks") for p in (root / folder).rglob("*.py")]
    private = ("ray._private", "serve._private", "_raylet", "_get_global_client")
    offenders = [f"{p.relative_to(root)}:{n}" for p in files if p.name != "ray_internals.py"
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if any(s in line.split("#")[0] for s in private)]
    assert offenders == []


def test_session_dir_reads_the_global_node():
    assert hasattr(ray._private.worker, "_global_node")
    assert ray_internals.session_dir() is None  # no Ray in this process


def test_the_uv_hook_flag_is_where_it_is_switched_off(monkeypatch):
    from ray._private import ray_constants

    monkeypatch.setattr(ray_constants, "RAY_ENABLE_UV_RUN_RUNTIME_ENV", ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV)
    ray_internals.disable_uv_run_runtime_env()
    assert ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV is False


def test_the_actor_table_api_exists():
    from ray._private import state

    assert callable(state.actors)


def test_serve_http_host_is_none_outside_serve():
    from ray.serve.context import _get_global_client

    assert callable(_get_global_client)
    assert ray_internals.serve_http_host() is None


def test_serve_reads_the_timeout_header_as_the_gate_expects():
    assert ray_internals.serve_request_timeout({b"x-request-timeout-seconds": b"5"}, 60.0) == 5.0
    assert ray_internals.serve_request_timeout({}, 60.0) == 60.0


def test_serve_names_the_proxy_callback_variable():
    from ray.serve._private import constants

    assert hasattr(constants, ray_internals.PROXY_CALLBACK_ENV)  # Serve reads the variable of that name
    assert f'"{ray_internals.PROXY_CALLBACK_ENV}"' in open(constants.__file__).read()


def test_live_ray_session_dir_and_actor_table(ray_local):
    import os

    assert os.path.isdir(ray_internals.session_dir())

    @ray.remote(num_cpus=0)
    class Probe:
        def pid(self) -> int:
            return os.getpid()

    probe = Probe.remote()
    pid = ray.get(probe.pid.remote())
    rows = [a for a in ray_internals.actor_table() if a.get("Pid") == pid]
    assert rows and "Probe" in rows[0]["ActorClassName"] and rows[0]["State"] == "ALIVE"
    assert rows[0]["Address"]["NodeID"] == ray.get_runtime_context().get_node_id()
    ray.kill(probe)
