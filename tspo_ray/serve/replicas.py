"""The selector replicas of a running app, seen from a Ray driver: list them, SIGKILL one (as an out-of-memory kill or a
lost node would end it), and wait until Serve has replaced it. Used by the replica-kill test and benchmark."""
from __future__ import annotations

import os
import signal
import time

SERVE_NAMESPACE = "serve"
REPLICA_PREFIX = "SERVE_REPLICA::"  # Ray Serve's actor name: SERVE_REPLICA::<app>#<deployment>#<id>


def replica_names(app: str = "tspo-select", deployment: str = "SelectorReplica") -> list[str]:
    """Actor names of the live replicas of `deployment` (dead actors leave the list)."""
    import ray

    prefix = f"{REPLICA_PREFIX}{app}#{deployment}#"
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["namespace"] == SERVE_NAMESPACE and a["name"].startswith(prefix))


def kill_replica(name: str) -> int:
    """SIGKILL the worker process of replica `name` (no clean shutdown, as the OOM killer does); returns its pid."""
    import ray

    actor = ray.get_actor(name, namespace=SERVE_NAMESPACE)
    pid = ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=60)
    os.kill(pid, signal.SIGKILL)  # the replica runs on this node in local runs; on a cluster use its node's shell
    return pid


def running_replicas(app: str = "tspo-select", deployment: str = "SelectorReplica") -> int:
    from ray import serve

    status = serve.status().applications[app].deployments[deployment]
    return int(status.replica_states.get("RUNNING", 0))


def wait_until_whole(before: set[str], killed: str, replicas: int, since: float, app: str = "tspo-select",
                     deployment: str = "SelectorReplica", timeout_s: float = 300.0, poll_s: float = 0.1) -> float:
    """Seconds from `since` (a time.perf_counter() reading, the kill) until `replicas` replicas run again, `killed`
    gone and a replica not in `before` (the names before the kill) among them; TimeoutError past timeout_s."""
    while time.perf_counter() - since < timeout_s:
        names = set(replica_names(app, deployment))
        if killed not in names and names - before and running_replicas(app, deployment) >= replicas:
            return time.perf_counter() - since
        time.sleep(poll_s)
    raise TimeoutError(f"{deployment}: {replicas} replicas were not running again {timeout_s:.0f} s after "
                       f"{killed} was killed")
