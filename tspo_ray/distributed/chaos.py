"""Killing a running job's processes on purpose (SIGKILL), by kind, to show that the job outlives them.

Used by the fault-tolerance tests and `benchmarks/chaos.py`. A kind names the Ray actor class that runs the
process: the Ray Train learner worker, the rollout coordinator, the answerer actors, the Ray Data workers of the
feature pipeline and the Serve replicas. Processes are found in Ray's actor table (the GCS, so no dashboard is
needed) and killed with SIGKILL as the kernel's OOM killer or a reclaimed node would, only on this machine's node.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable

from tspo_ray.checkpoint import latest_step

#: process kind -> a part of the Ray actor class name that runs it
ACTOR_CLASSES = {
    "learner": "RayTrainWorker",
    "coordinator": "RolloutCoordinator",
    "answerer": "AnswererActor",
    "feature_worker": "MapWorker",
    "serve_replica": "ServeReplica",
}


def live_actor_pids(kind: str) -> list[int]:
    """Process ids of the live actors of `kind` on this node, the most recently started first: an earlier job's
    actors, still listed alive while they exit, come last and are not the victims of a kill of one."""
    import ray

    from tspo_ray.ray_internals import actor_table

    part = ACTOR_CLASSES[kind]
    node = ray.get_runtime_context().get_node_id()
    live = [a for a in actor_table()
            if part in a.get("ActorClassName", "") and a.get("State") == "ALIVE" and a.get("Pid")
            and a.get("Address", {}).get("NodeID") == node]
    return [int(a["Pid"]) for a in sorted(live, key=lambda a: (-float(a.get("StartTime") or 0), int(a["Pid"])))]


def kill_processes(kind: str, how_many: int | None = 1) -> list[int]:
    """SIGKILL `how_many` live actors of `kind` (None: all of them); the pids killed (empty: none was alive)."""
    pids = live_actor_pids(kind)
    victims = pids if how_many is None else pids[:how_many]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # exited meanwhile
            pass
    return victims


class KillWhen(threading.Thread):
    """A background thread: once `ready()` is true, calls `kill()` (which returns the pids it killed) until it
    killed something; then records when, and stops. `killed` stays empty if the job ended first."""

    def __init__(self, ready: Callable[[], bool], kill: Callable[[], list[int]], poll_s: float = 0.05,
                 timeout_s: float = 900.0):
        super().__init__(daemon=True)
        self.ready, self.kill, self.poll_s, self.timeout_s = ready, kill, poll_s, timeout_s
        self.killed: list[int] = []
        self.killed_at: float | None = None  # time.monotonic() of the kill
        self._stop_event = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not self._stop_event.is_set() and time.monotonic() < deadline:
            if self.ready():
                self.killed = self.kill()
                if self.killed:
                    self.killed_at = time.monotonic()
                    return
            time.sleep(self.poll_s)

    def stop(self) -> None:
        self._stop_event.set()
        if self.ident is not None:  # started
            self.join(timeout=5)


def kill_at_step(ckpt_dir: str | Path, step: int, kind: str, how_many: int | None = 1) -> KillWhen:
    """Started: SIGKILLs `how_many` processes of `kind` once the run's newest checkpoint reaches `step`."""
    killer = KillWhen(lambda: latest_step(ckpt_dir) >= step, lambda: kill_processes(kind, how_many))
    killer.start()
    return killer
