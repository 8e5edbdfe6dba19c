"""A private local Ray for tests that start actors, robust to a loaded shared machine."""
from __future__ import annotations

import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_local_ray(num_cpus: int = 2, extra_paths: tuple[str, ...] = (), tries: int = 3):
    """ray.init on a fresh local instance (never a cluster someone else started here).

    Workers start from the venv's python, not through `uv run` (which would re-sync the environment at every
    worker start). Ray gives its raylet 30 s to register; on a busy machine that can run out, so it is retried.
    """
    import ray

    from tspo_ray.distributed import run_local_workers_with_this_interpreter

    run_local_workers_with_this_interpreter()
    path = os.pathsep.join([str(ROOT), *extra_paths])
    for attempt in range(1, tries + 1):
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, ignore_reinit_error=True,
                     log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
            return ray
        except Exception as exc:  # "The current node timed out during startup"
            ray.shutdown()
            if attempt == tries or "timed out during startup" not in str(exc):
                raise
            time.sleep(5)
    return ray
