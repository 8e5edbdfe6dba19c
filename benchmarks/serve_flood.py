"""The service under a flood of unauthenticated uploads, beside the callers who have its token, on loopback.

    uv run python benchmarks/serve_flood.py --video-root data/synthetic --flooders 16 --clients 4 --duration 20 \
        --body-mib 64 [--baseline-ref main]

Starts the service with a bearer token on a local Ray in a child process (and, with --baseline-ref, that git ref's
service the same way, one after the other), then two phases of --duration seconds:
  idle   --clients authenticated clients loop cached POST /select requests;
  flood  the same, while --flooders unauthenticated clients each open a connection, declare a --body-mib body and
         stream it as fast as the server takes it, ignoring any early answer, then open the next connection.
Reports per phase the authenticated requests' p50 and p99 latency and status codes, the flooders' answers (status
codes, and the connections the server closed or reset before answering) and the MiB of body their sockets took
(written into the kernel's buffers: a body refused from its headers is dropped there, never read), and
the service's peak resident memory: the whole process tree of its Ray (the sum of RSS) and its Serve proxy alone,
sampled every 0.2 s, beside the figures just before the phase (JSON).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

QUESTIONS = ["When does the red star appear?", "What colour is the square?", "Where is the blue circle?"]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def baseline_tree(ref: str, out: Path) -> Path:
    """The repository at `ref`, unpacked (git archive) into `out`."""
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "-C", str(repo), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out

# Runs in a child process whose PYTHONPATH is one source tree, so a baseline tree serves with its own code. A tree
# with tspo_ray/serve/gate.py gets the gate in its proxy and a request timeout, as jobs/serve.py starts it.
LAUNCHER = r"""
import json, socket, sys
from ray import serve
from tspo_ray.distributed import init_ray
args = json.loads(sys.argv[1])
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
init_ray("local", num_cpus=4, include_dashboard=False, log_to_driver=False)
settings = args["settings"]
try:
    from tspo_ray.serve.gate import GateSettings, controller_options
    gate = GateSettings.from_serve_settings(settings)
    serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": gate.request_timeout_s},
                controller_options=controller_options(gate))
except ImportError:  # an earlier tree: no gate, no timeout
    serve.start(http_options={"host": "127.0.0.1", "port": port})
from tspo_ray.serve.app import build_app
serve.run(build_app(settings, replicas=1, replica_cpus=args["cpus"]), name="tspo-select", route_prefix="/")
print(f"URL http://127.0.0.1:{port}", flush=True)
for line in sys.stdin:  # serve until the benchmark closes our stdin
    pass
"""


def launch(tree: Path, video_root: str, token: str, cpus: float):
    """(child process, URL) of the service of `tree` with a bearer token (passed as its SHA-256)."""
    import hashlib

    settings = {"video_roots": [str(Path(video_root).resolve())],
                "auth_token_sha256": hashlib.sha256(token.encode()).hexdigest()}
    child = subprocess.Popen([sys.executable, "-c", LAUNCHER, json.dumps({"settings": settings, "cpus": cpus})],
                             cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    for line in child.stdout:
        if line.startswith("URL "):
            return child, line.split()[1]
    return child, None


class MemorySampler:
    """Peak RSS (MiB) of a process tree, summed, and of its Serve proxy, sampled every `period` seconds in a thread."""

    def __init__(self, pid: int, period: float = 0.2):
        self.pid, self.period = pid, period
        self.total = self.proxy = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def snapshot(self) -> tuple[float, float]:
        import psutil

        total = proxy = 0.0
        root = psutil.Process(self.pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                rss = proc.memory_info().rss / 2**20
                total += rss
                if "ProxyActor" in " ".join(proc.cmdline()):
                    proxy += rss
            except psutil.Error:
                pass
        return total, proxy

    def _run(self):
        while not self._stop.is_set():
            total, proxy = self.snapshot()
            self.total, self.proxy = max(self.total, total), max(self.proxy, proxy)
            self._stop.wait(self.period)

    def __enter__(self):
        self.before = self.snapshot()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def figures(self) -> dict:
        return {"tree_before_mib": round(self.before[0]), "tree_peak_mib": round(self.total),
                "proxy_before_mib": round(self.before[1]), "proxy_peak_mib": round(self.proxy)}


async def authenticated(url: str, token: str, videos: list[str], clients: int, stop: asyncio.Event) -> dict:
    latencies, codes = [], Counter()

    async def worker(client: httpx.AsyncClient, i: int):
        n = i
        while not stop.is_set():
            body = {"video": videos[n % len(videos)], "question": QUESTIONS[n % len(QUESTIONS)], "num_frames": 8}
            n += clients
            t0 = time.perf_counter()
            try:
                resp = await client.post("/select", json=body)
                codes[str(resp.status_code)] += 1
                if resp.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
            except httpx.HTTPError as exc:
                codes[type(exc).__name__] += 1

    async with httpx.AsyncClient(base_url=url, timeout=120, headers={"Authorization": f"Bearer {token}"},
                                 limits=httpx.Limits(max_connections=clients)) as client:
        await asyncio.gather(*(worker(client, i) for i in range(clients)))
    return {"requests_ok": len(latencies), "codes": dict(sorted(codes.items())),
            "p50_ms": round(1000 * percentile(latencies, 50), 1) if latencies else None,
            "p99_ms": round(1000 * percentile(latencies, 99), 1) if latencies else None}


async def flooder(host: str, port: int, body_bytes: int, stop: asyncio.Event, codes: Counter, sent: list[int]):
    """One unauthenticated client after another: declare `body_bytes`, stream them, ignore an early answer."""
    head = (f"POST /select HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {body_bytes}\r\n\r\n").encode()
    piece = b"x" * 65536
    while not stop.is_set():
        writer, closed = None, ""
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(head)
            done = 0
            while done < body_bytes and not stop.is_set():
                n = min(len(piece), body_bytes - done)
                writer.write(piece[:n])
                await writer.drain()
                done, sent[0] = done + n, sent[0] + n
        except OSError:  # ConnectionResetError, BrokenPipeError: the server closed the connection
            closed = " (connection closed mid-body)"
        try:
            parts = (await asyncio.wait_for(reader.readline(), 30)).split(b" ") if writer else []
        except (OSError, asyncio.TimeoutError):
            parts = []
        codes[(parts[1].decode() if len(parts) > 1 else "no answer") + closed] += 1
        if writer is not None:
            writer.close()


async def phase(url: str, token: str, videos: list[str], clients: int, flooders: int, body_mib: float,
                duration: float) -> dict:
    stop = asyncio.Event()
    codes, sent = Counter(), [0]
    host, port = url.split("://")[1].split(":")
    floods = [asyncio.create_task(flooder(host, int(port), int(body_mib * 2**20), stop, codes, sent))
              for _ in range(flooders)]
    auth = asyncio.create_task(authenticated(url, token, videos, clients, stop))
    await asyncio.sleep(duration)
    stop.set()
    out = {"authenticated": await auth}
    await asyncio.gather(*floods, return_exceptions=True)
    if flooders:
        out["unauthenticated"] = {"connections": sum(codes.values()), "answers": dict(sorted(codes.items())),
                                  "body_mib_written": round(sent[0] / 2**20)}
    return out


def measure(url: str, pid: int, token: str, videos: list[str], args) -> dict:
    with httpx.Client(base_url=url, timeout=300, headers={"Authorization": f"Bearer {token}"}) as client:
        for v in videos:  # features cached: the authenticated load is the cheap path the flood competes with
            client.post("/select", json={"video": v, "question": QUESTIONS[0], "num_frames": 8}).raise_for_status()
    report = {}
    for name, flooders in (("idle", 0), ("flood", args.flooders)):
        with MemorySampler(pid) as mem:
            report[name] = asyncio.run(phase(url, token, videos, args.clients, flooders, args.body_mib, args.duration))
        report[name]["memory"] = mem.figures()
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video-root", default="data/synthetic")
    ap.add_argument("--baseline-ref", help="also measure this git ref's service (e.g. main), before this one")
    ap.add_argument("--flooders", type=int, default=16, help="N: unauthenticated clients streaming large bodies")
    ap.add_argument("--clients", type=int, default=4, help="M: authenticated clients")
    ap.add_argument("--body-mib", type=float, default=64, help="the body each flooder declares and streams")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    ap.add_argument("--replica-cpus", type=float, default=1)
    ap.add_argument("--videos", type=int, default=3, help="videos the authenticated clients ask about")
    args = ap.parse_args()
    root = Path(args.video_root)
    videos = sorted(str(p.relative_to(root)) for p in root.rglob("*.mp4"))[:args.videos]
    if not videos:
        sys.exit(f"error: {root}: no .mp4 videos (build some with pipelines/make_synthetic.py)")
    token = secrets.token_urlsafe(32)
    report = {"flooders": args.flooders, "clients": args.clients, "body_mib": args.body_mib,
              "duration_s_per_phase": args.duration}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"current": Path(__file__).resolve().parents[1]}
        if args.baseline_ref:
            trees = {"baseline": baseline_tree(args.baseline_ref, Path(tmp)), **trees}
        for name, tree in trees.items():
            child, url = launch(tree, str(root), token, args.replica_cpus)
            try:
                if not url:
                    sys.exit(f"error: the service of {tree} did not start (exit status {child.wait()})")
                report[name] = measure(url, child.pid, token, videos, args)
            finally:
                child.stdin.close()
                child.wait(timeout=120)
            print(json.dumps({name: report[name]}), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
