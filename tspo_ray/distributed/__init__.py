"""Ray shells around the pure TSPO pieces: feature pipeline, rollout workers, learner, weight versions."""
import os


def run_local_workers_with_this_interpreter() -> None:
    """For a Ray started here, on this machine: workers use the driver's interpreter. Otherwise Ray's `uv run` hook
    re-creates the environment in every worker (and, with UV_NO_SYNC set, starts them without Ray installed).
    Ray reads the flag when it is imported, so the constant is set as well as the variable (which workers read)."""
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    from ray._private import ray_constants

    ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False
