"""Ray shells around the pure TSPO pieces: feature pipeline, rollout workers, learner, weight versions."""
from __future__ import annotations

import os
import time
from pathlib import Path

PROJECT_ROOT = str(Path(__file__).resolve().parents[2])


def init_ray(address: str | None = None, num_cpus: int | None = None, extra_paths: tuple[str, ...] = (),
             tries: int = 3, **init_kwargs):
    """ray.init for every entry point: the cluster at `address` (or RAY_ADDRESS), else a private local Ray.

    A local Ray's workers run this interpreter (see use_this_interpreter_for_local_workers). The workers get the
    project root (and `extra_paths`) on PYTHONPATH. Ray gives a new raylet 30 s to register; on a busy machine that
    can run out, so a local start is retried. Returns the ray module; a no-op when Ray is already initialised.
    """
    import ray

    if ray.is_initialized():
        return ray
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    local = target == "local"
    if local:
        use_this_interpreter_for_local_workers()
        if num_cpus is not None:
            init_kwargs["num_cpus"] = num_cpus
    runtime_env = dict(init_kwargs.pop("runtime_env", None) or {})
    env_vars = dict(runtime_env.get("env_vars") or {})
    env_vars.setdefault("PYTHONPATH", os.pathsep.join([PROJECT_ROOT, *extra_paths]))
    runtime_env["env_vars"] = env_vars
    for attempt in range(1, (tries if local else 1) + 1):
        try:
            ray.init(address=target, runtime_env=runtime_env, **init_kwargs)
            if local:
                remove_session_dir_at_exit(ray)
            return ray
        except Exception as exc:  # "The current node timed out during startup"
            ray.shutdown()
            if attempt == tries or not local or "timed out during startup" not in str(exc):
                raise
            time.sleep(5)
    return ray


def remove_session_dir_at_exit(ray) -> None:
    """A private local Ray's session folder (logs, sockets, spilled objects) is deleted when this process exits, after
    Ray is shut down, so runs do not pile folders up in the temp dir. Runs at exit before Ray's own shutdown hook
    (registered earlier, and exit hooks run last-in first-out), hence the explicit shutdown."""
    import atexit
    import shutil

    from tspo_ray.ray_internals import session_dir as current_session_dir

    session_dir = current_session_dir()
    if not session_dir:
        return

    def cleanup() -> None:
        ray.shutdown()
        shutil.rmtree(session_dir, ignore_errors=True)

    atexit.register(cleanup)


def use_this_interpreter_for_local_workers() -> None:
    """For a Ray started here, on this machine: workers use the driver's interpreter and environment.

    Otherwise, under `uv run`, Ray's uv hook builds a fresh copy of the environment in the temp folder of every
    cluster it starts and re-syncs it at every worker start (or, with UV_NO_SYNC set, starts workers without Ray).
    Ray reads the flag when it is imported, so the constant is set as well as the variable (which workers read).
    """
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    from tspo_ray.ray_internals import disable_uv_run_runtime_env

    disable_uv_run_runtime_env()
