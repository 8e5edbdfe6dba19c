"""Bounded HTTP load on the keyframe-selection service from a separate client process, on loopback.

    uv run python benchmarks/serve_load.py --video-root data/synthetic --concurrency 20 --duration 60 [--baseline-ref main]

Starts the service on a local Ray in a child process (or targets --url); with --baseline-ref, also the service of that
git ref (unpacked with git archive, served with its own code), the two measured alternately in --rounds slices per
phase. Two phases of `--duration` seconds per service, `--concurrency` clients looping POST /select:
  cached    questions on a few videos whose features were loaded before the phase (decode+encode skipped);
  uncached  every request names a (video, candidate_fps, max_candidates) not seen before, so it decodes and encodes.
Reports requests/s, p50/p99 latency, the service's CPU seconds per request (its whole process tree), the cache-hit
ratio and the error count per phase (JSON).

With --kill-replica (2 replicas, e.g. --concurrency 16), a third phase: cached load for --duration seconds, one
selector replica SIGKILLed a third of the way in. It reports the answers of the requests in flight at the kill and of
those sent after it by status (500s and dropped connections counted apart), and the seconds until Serve runs the
two replicas again:
    uv run python benchmarks/serve_load.py --replicas 2 --replica-cpus 1 --concurrency 16 --duration 30 \
        --phases --kill-replica [--baseline-ref <git ref>]
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

QUESTIONS = ["When does the red star appear?", "What colour is the square?", "Where is the blue circle?",
             "How many times does the green triangle appear?", "What happens after the yellow star leaves?"]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


async def run_phase(url: str, payloads, concurrency: int, duration_s: float) -> dict:
    """`concurrency` clients, each sending the next payload as soon as its previous answer arrives."""
    latencies, errors, hits = [], [], 0
    deadline = time.perf_counter() + duration_s
    limits = httpx.Limits(max_connections=concurrency)

    async def worker(client: httpx.AsyncClient):
        nonlocal hits
        while time.perf_counter() < deadline:
            body = next(payloads)
            t0 = time.perf_counter()
            try:
                resp = await client.post("/select", json=body)
                if resp.status_code != 200:
                    errors.append(f"{resp.status_code}: {resp.text[:200]}")
                    continue
                hits += int(resp.json()["timings_ms"]["cache_hit"])
                latencies.append(time.perf_counter() - t0)
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return {"latencies": latencies, "errors": len(errors), "error_samples": errors[:3], "wall_s": wall,
            "cache_hits": hits}


async def run_kill_phase(url: str, payloads, concurrency: int, duration_s: float, child) -> dict:
    """`concurrency` clients on cached requests; a third of the way in the service's launcher SIGKILLs one selector
    replica; the load goes on until the duration is over and the service has been whole again for 5 s."""
    log: list[tuple] = []  # (sent, answered, status or None for a dropped connection, Retry-After, detail)
    stop = asyncio.Event()
    kill: dict = {}

    async def worker(client: httpx.AsyncClient):
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                resp = await client.post("/select", json=next(payloads))
                log.append((t0, time.perf_counter(), resp.status_code, resp.headers.get("retry-after"),
                            resp.text[:200] if resp.status_code != 200 else ""))
            except httpx.HTTPError as exc:
                log.append((t0, time.perf_counter(), None, None, f"{type(exc).__name__}: {exc}"))

    def kill_one() -> None:  # blocking pipe I/O with the launcher, in a thread
        child.stdin.write("kill\n")
        child.stdin.flush()
        for line in child.stdout:
            if line.startswith("KILLED"):
                kill["t"] = time.perf_counter()
            elif line.startswith("WHOLE "):
                kill["whole_s"] = float(line.split()[1])
                return

    async def conductor():
        t_start = time.perf_counter()
        await asyncio.sleep(duration_s / 3)
        await asyncio.to_thread(kill_one)
        await asyncio.sleep(max(5.0, duration_s - (time.perf_counter() - t_start)))
        stop.set()

    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=concurrency)) as c:
        t_begin = time.perf_counter()
        await asyncio.gather(conductor(), *(worker(c) for _ in range(concurrency)))
    return summarize_kill(log, kill, t_begin)


def summarize_kill(log: list[tuple], kill: dict, t_begin: float) -> dict:
    t_kill, whole_s = kill["t"], kill["whole_s"]
    t_whole = t_kill + whole_s

    def by_status(entries):
        counts: dict[str, int] = {}
        for e in entries:
            key = str(e[2]) if e[2] is not None else "dropped connection"
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))

    in_flight = [e for e in log if e[0] < t_kill < e[1]]
    after = [e for e in log if e[0] >= t_kill]
    whole_again = [e for e in log if e[0] >= t_whole]
    end = max(e[1] for e in log)
    return {"requests": len(log), "in_flight_at_kill": by_status(in_flight), "sent_after_kill": by_status(after),
            "500s": sum(e[2] == 500 for e in log), "dropped_connections": sum(e[2] is None for e in log),
            "503s_without_retry_after": sum(e[2] == 503 and e[3] is None for e in log),
            "replica_replaced_after_s": round(whole_s, 2),
            "requests_per_s_before_kill": round(sum(e[1] < t_kill for e in log) / (t_kill - t_begin), 2),
            "requests_per_s_once_whole": round(sum(e[1] > t_whole for e in whole_again) / max(end - t_whole, 1e-9), 2),
            "error_samples": [e[4] for e in log if e[2] != 200][:3]}


def payload_streams(videos: list[str], num_frames: int, seed: int = 0):
    """(warm-up payloads, cached stream, uncached stream): cached reuses 3 videos at the default T_c; uncached
    walks unseen (video, candidate_fps, max_candidates) settings."""
    rng = random.Random(seed)
    hot = videos[:3]
    warm = [{"video": v, "question": QUESTIONS[0], "num_frames": num_frames} for v in hot]

    def cached():
        for i in itertools.count():
            yield {"video": hot[i % len(hot)], "question": rng.choice(QUESTIONS), "num_frames": num_frames,
                   "method": rng.choice(["agent", "agent", "clip-top-k", "bin-max"])}

    def uncached():  # rates and caps on the service's steps (others are rounded onto them, and would hit the cache)
        combos = [(v, fps, cap) for fps in (1.0, 2.0, 4.0, 5.0, 10.0, 15.0) for cap in (96, 64, 48, 32, 24, 16)
                  for v in videos[3:]]
        for v, fps, cap in combos:
            yield {"video": v, "question": rng.choice(QUESTIONS), "num_frames": num_frames, "candidate_fps": fps,
                   "max_candidates": cap}
        raise RuntimeError("ran out of unseen (video, candidate_fps, max_candidates) settings; shorten --duration")

    return warm, cached(), uncached()


# Runs in a child process whose PYTHONPATH is one source tree, so a baseline tree serves with its own code.
LAUNCHER = r"""
import importlib.util, json, socket, sys, time
from pathlib import Path
from ray import serve
from tspo_ray.distributed import init_ray
args = json.loads(sys.argv[1])
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
init_ray("local", num_cpus=4, include_dashboard=False, log_to_driver=False)
serve.start(http_options={"host": "127.0.0.1", "port": port})
try:  # this tree's app builder (ingress + selector replicas)
    from tspo_ray.serve.app import SelectIngress, build_app
    app = build_app(args["settings"], replicas=args["replicas"], replica_cpus=args["cpus"])
except ImportError:  # an earlier tree: the selector was the ingress
    from tspo_ray.serve.app import KeyframeSelector
    app = KeyframeSelector.options(num_replicas=args["replicas"], ray_actor_options={"num_cpus": args["cpus"]})
    app = app.bind(args["settings"])
serve.run(app, name="tspo-select", route_prefix="/")
print(f"URL http://127.0.0.1:{port}", flush=True)
# the benchmark's replica tools (tspo_ray/serve/replicas.py of the measuring tree: same app and deployment names)
spec = importlib.util.spec_from_file_location("replicas", args["replica_tools"])
replicas = importlib.util.module_from_spec(spec)
spec.loader.exec_module(replicas)
for line in sys.stdin:  # serve until the benchmark closes our stdin (or exits); "kill" kills one selector replica
    if line.strip() == "kill":
        before = set(replicas.replica_names())
        victim = sorted(before)[0]
        t_kill = time.perf_counter()
        replicas.kill_replica(victim)
        print("KILLED", flush=True)
        whole = replicas.wait_until_whole(before, victim, args["replicas"], since=t_kill)
        print(f"WHOLE {whole:.3f}", flush=True)
"""


def launch_service(tree: Path, video_root: str, checkpoint: str | None, replicas: int, cpus: float):
    """(child process, URL): the service of the source tree `tree` on a private local Ray."""
    settings = {"checkpoint": checkpoint, "video_roots": [str(Path(video_root).resolve())], "cache_size": 512}
    tools = Path(__file__).resolve().parents[1] / "tspo_ray" / "serve" / "replicas.py"
    args = json.dumps({"settings": settings, "replicas": replicas, "cpus": cpus, "replica_tools": str(tools)})
    env = {**os.environ, "PYTHONPATH": str(tree)}
    child = subprocess.Popen([sys.executable, "-c", LAUNCHER, args], cwd=tree, env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    for line in child.stdout:
        if line.startswith("URL "):
            return child, line.split()[1]
    return child, None


def baseline_tree(ref: str, out: Path) -> Path:
    """The repository at `ref`, unpacked (git archive) into `out`: the previous code, served side by side."""
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(repo), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def tree_cpu_s(pid: int | None) -> float:
    """CPU seconds used so far by a process and all its descendants (a service's Ray processes); 0 without pid."""
    import psutil

    if pid is None:
        return 0.0
    total = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:  # exited meanwhile
            pass
    return total


def run_rounds(services: dict[str, str], pids: dict[str, int], streams: dict[str, object], concurrency: int,
               duration_s: float, rounds: int) -> dict[str, dict]:
    """Each service's phase in `rounds` slices alternating between services (load drifts on a shared machine);
    figures are over all of a service's slices. CPU seconds per request count the service's whole process tree
    (proxy, replica, Ray's own processes): the work, whatever share of the cores the machine's load left it."""
    raw: dict[str, list[dict]] = {name: [] for name in services}
    for _ in range(rounds):
        for name, url in services.items():
            before = tree_cpu_s(pids.get(name))
            part = asyncio.run(run_phase(url, streams[name], concurrency, duration_s / rounds))
            part["cpu_s"] = tree_cpu_s(pids.get(name)) - before
            raw[name].append(part)
    return {name: merge(parts) for name, parts in raw.items()}


def merge(parts: list[dict]) -> dict:
    latencies = [x for p in parts for x in p.pop("latencies")]
    n, wall = len(latencies), sum(p["wall_s"] for p in parts)
    hits = sum(p["cache_hits"] for p in parts)
    return {"requests_ok": n, "errors": sum(p["errors"] for p in parts), "wall_s": round(wall, 1),
            "error_samples": [e for p in parts for e in p["error_samples"]][:3],
            "requests_per_s": round(n / wall, 2), "cache_hit_ratio": round(hits / max(n, 1), 3),
            "service_cpu_s_per_request": round(sum(p["cpu_s"] for p in parts) / max(n, 1), 4),
            "p50_ms": round(1000 * percentile(latencies, 50), 1) if n else None,
            "p99_ms": round(1000 * percentile(latencies, 99), 1) if n else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video-root", default="data/synthetic")
    ap.add_argument("--url", help="an already running service (default: start one here)")
    ap.add_argument("--baseline-ref", help="also serve this git ref (e.g. main) and measure it alternately")
    ap.add_argument("--checkpoint")
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--replica-cpus", type=float, default=2, help="ray_actor_options.num_cpus of each replica")
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per phase and service")
    ap.add_argument("--rounds", type=int, default=2, help="slices per phase, alternating between services")
    ap.add_argument("--phases", nargs="*", default=["cached", "uncached"], choices=["cached", "uncached"])
    ap.add_argument("--kill-replica", action="store_true",
                    help="then SIGKILL one of the selector replicas under cached load (needs --replicas >= 2)")
    ap.add_argument("--num-frames", type=int, default=8)
    args = ap.parse_args()
    root = Path(args.video_root)
    videos = sorted(str(p.relative_to(root)) for p in root.rglob("*.mp4"))
    if args.kill_replica and (args.url or args.replicas < 2):
        sys.exit("error: --kill-replica needs a service started here (no --url) with --replicas 2 or more")
    if len(videos) < 4:
        sys.exit(f"error: {root}: need at least 4 .mp4 videos (build some with pipelines/make_synthetic.py)")
    children, services = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {} if args.url else {"current": Path(__file__).resolve().parents[1]}
        if args.baseline_ref:
            trees = {"baseline": baseline_tree(args.baseline_ref, Path(tmp)), **trees}
        try:
            for name, tree in trees.items():
                for _ in range(2):  # on a loaded machine Serve's proxy can miss its start-up deadline: once more
                    child, url = launch_service(tree, str(root), args.checkpoint, args.replicas, args.replica_cpus)
                    children.append(child)
                    if url:
                        break
                    child.wait()
                if not url:
                    sys.exit(f"error: the service of {tree} did not start (exit status {child.returncode})")
                services[name] = url
            if args.url:
                services["current"] = args.url
            live = {name: child for name, child in zip(trees, [c for c in children if c.poll() is None])}
            pids = {name: child.pid for name, child in live.items()}
            report = measure(services, pids, videos, args)
            if args.kill_replica:
                for name, url in services.items():
                    cached = payload_streams(videos, args.num_frames, seed=1)[1]
                    report[name]["kill_replica"] = asyncio.run(
                        run_kill_phase(url, cached, args.concurrency, args.duration, live[name]))
        finally:
            for child in children:
                child.stdin.close()
                child.wait(timeout=120)
    print(json.dumps(report, indent=2))


def measure(services: dict[str, str], pids: dict[str, int], videos: list[str], args) -> dict:
    report = {"concurrency": args.concurrency, "duration_s_per_phase": args.duration, "rounds": args.rounds,
              "replicas": args.replicas, "replica_cpus": args.replica_cpus, "baseline_ref": args.baseline_ref}
    streams = {name: payload_streams(videos, args.num_frames) for name in services}
    for name, url in services.items():
        with httpx.Client(base_url=url, timeout=300) as client:
            for body in streams[name][0]:
                client.post("/select", json=body).raise_for_status()
            info = client.get("/").json()
        report[name] = {"model_version": info["model_version"], "encoder": info["encoder"],
                        "workers": info.get("workers")}
    for index, phase in ((1, "cached"), (2, "uncached")):
        if phase in args.phases:
            got = run_rounds(services, pids, {n: s[index] for n, s in streams.items()}, args.concurrency,
                             args.duration, args.rounds)
            for name, figures in got.items():
                report[name][phase] = figures
    for name, url in services.items():
        with httpx.Client(base_url=url, timeout=30) as client:
            report[name]["batching"] = client.get("/").json()["batching"]
    if "baseline" in services and "current" in services:
        report["speed-up (requests/s, current / baseline)"] = {
            phase: round(report["current"][phase]["requests_per_s"] / report["baseline"][phase]["requests_per_s"], 2)
            for phase in args.phases if report["baseline"][phase]["requests_per_s"]}
        report["CPU-s per request, baseline / current"] = {
            phase: round(report["baseline"][phase]["service_cpu_s_per_request"]
                         / max(report["current"][phase]["service_cpu_s_per_request"], 1e-9), 2)
            for phase in args.phases}
    return report


if __name__ == "__main__":
    main()
