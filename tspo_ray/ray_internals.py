"""Every private Ray API the package relies on, behind one module: each is pinned by a test
(tests/test_ray_internals.py), so a Ray upgrade that moves one fails there, by name, and is fixed here.

Ray is imported inside the functions: importing this module costs nothing.
"""
from __future__ import annotations

from typing import Any

#: the environment variable through which Serve's proxies import extra ASGI middlewares (tspo_ray.serve.gate)
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"


def session_dir() -> str | None:
    """The session folder of the Ray this process started or joined (ray._private.worker._global_node), or None."""
    import ray._private.worker

    node = getattr(ray._private.worker, "_global_node", None)
    return node.get_session_dir_path() if node is not None else None


def disable_uv_run_runtime_env() -> None:
    """Ray's uv hook off in this process: Ray reads RAY_ENABLE_UV_RUN_RUNTIME_ENV once, into ray_constants."""
    from ray._private import ray_constants

    ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False


def actor_table() -> list[dict[str, Any]]:
    """Every actor of the connected cluster as the GCS lists it (ray._private.state.actors): dicts with
    ActorClassName, State, Pid, StartTime and Address.NodeID."""
    from ray._private import state

    return list(state.actors().values())


def serve_http_host() -> str | None:
    """The host Serve's HTTP proxies bind (the Serve controller client's http_config), None outside Serve (and
    without a Ray: the client would start one)."""
    import ray

    if not ray.is_initialized():
        return None
    try:
        from ray.serve.context import _get_global_client

        return _get_global_client().http_config.host
    except Exception:  # not inside a Serve instance (e.g. an in-process test)
        return None


def serve_request_timeout(headers: dict[bytes, bytes], default: float | None) -> float | None:
    """How Serve's proxy reads a client's x-request-timeout-seconds header (ray.serve._private.http_util), which
    the gate must keep from lifting the service's timeout."""
    from ray.serve._private.http_util import parse_request_timeout_header

    return parse_request_timeout_header(headers, default)
