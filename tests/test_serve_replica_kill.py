"""A selector replica SIGKILLed under load (2 replicas, 16 clients, real HTTP on a local Ray): no 500, no dropped
connection; requests in flight may get a 503 with Retry-After, every request sent after the kill succeeds, and Serve
replaces the replica."""
from __future__ import annotations

import shutil
import threading
import time

import httpx
import pytest
from helpers.ports import free_port

REPLICAS, CLIENTS = 2, 16



@pytest.fixture(scope="module")
def two_replicas(ray_local, tiny_world, tmp_path_factory):
    from ray import serve

    from tspo_ray.serve.app import build_app

    root = tmp_path_factory.mktemp("kill_videos")
    shutil.copy(sorted(tiny_world.rglob("*.mp4"))[0], root / "clip.mp4")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"video_roots": [str(root)], "max_candidates": 32}, replicas=REPLICAS, replica_cpus=1),
              name="tspo-select", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def _load(url: str, stop: threading.Event, log: list, lock: threading.Lock) -> None:
    body = {"video": "clip.mp4", "question": "When does the red star appear?", "num_frames": 4}
    with httpx.Client(base_url=url, timeout=120) as http:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                resp = http.post("/select", json=body)
                entry = (t0, time.perf_counter(), resp.status_code, resp.headers.get("retry-after"), resp.text[:200])
            except httpx.HTTPError as exc:  # a dropped connection, a reset, a timeout
                entry = (t0, time.perf_counter(), None, None, f"{type(exc).__name__}: {exc}")
            with lock:
                log.append(entry)


def wait_for(condition, what: str, timeout_s: float = 240.0) -> None:
    """Poll `condition` until it holds (the log grows as answers come back); fail naming `what` past the timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s:.0f} s for {what}")
        time.sleep(0.05)


def test_replica_killed_under_load_gives_no_500_and_is_replaced(two_replicas):
    from tspo_ray.serve.replicas import kill_replica, replica_names, wait_until_whole

    with httpx.Client(base_url=two_replicas, timeout=120) as http:  # both replicas cache the video's features
        for _ in range(6):
            assert http.post("/select", json={"video": "clip.mp4", "question": "q?", "num_frames": 4}).status_code == 200
    before = set(replica_names())
    assert len(before) == REPLICAS
    log, lock, stop = [], threading.Lock(), threading.Event()
    clients = [threading.Thread(target=_load, args=(two_replicas, stop, log, lock)) for _ in range(CLIENTS)]
    for c in clients:
        c.start()
    try:
        wait_for(lambda: len(log) >= 2 * CLIENTS, "every client under way")  # the load is on
        victim = sorted(before)[0]
        t_kill = time.perf_counter()
        kill_replica(victim)
        whole_s = wait_until_whole(before, victim, REPLICAS, since=t_kill, timeout_s=240)
        whole_at = t_kill + whole_s  # then load on the whole service again: a round of requests sent after it
        wait_for(lambda: sum(e[0] > whole_at for e in log) >= CLIENTS, "a round of requests after the replacement")
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=180)
    dropped = [e for e in log if e[2] is None]
    assert dropped == [], dropped[:3]
    assert all(e[2] in (200, 503) for e in log), [e for e in log if e[2] not in (200, 503)][:3]
    assert all(e[3] is not None for e in log if e[2] == 503)  # every 503 says when to retry
    in_flight = [e for e in log if e[0] < t_kill < e[1]]
    after = [e for e in log if e[0] > t_kill]
    assert len(in_flight) >= CLIENTS // 2  # the kill did meet requests on their way
    assert after and all(e[2] == 200 for e in after), [e for e in after if e[2] != 200][:3]
    assert sum(e[0] > t_kill + whole_s for e in log) > 0  # the replaced service answered too
    now = set(replica_names())
    assert victim not in now and len(now) == REPLICAS and now - before
    print(f"replica replaced after {whole_s:.1f} s; {len(log)} requests, {len(in_flight)} in flight at the kill, "
          f"{sum(e[2] == 503 for e in log)} got 503")
