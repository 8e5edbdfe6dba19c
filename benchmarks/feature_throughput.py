"""Feature extraction throughput: the one-process loop beside the Ray Data pipeline, same videos, fresh stores.

    uv run python benchmarks/feature_throughput.py [--videos 120] [--world outputs/bench_world]
        [--encoders 1] [--encoder-cpus 1] [--decode-workers 1] [--local-threads N] [--breakdown 20]

The videos are a world of the embedded kind (tspo_ray.synthetic: MPEG-4, 128 px, 2 fps; --min/--max-seconds long),
built once under --world and reused (the build is resumable). Both paths encode the same videos with the shipped
tiny CLIP and the default feature settings (1-fps grid capped at 128 candidates, 64 px) into fresh stores:
`features.extract_local` (this process on features.worker_cpus torch threads, as the job's one-process path
runs; --local-threads to change) and `extract_with_ray` (decode actors and encoder
actors; Ray is started before its clock starts, and ray.init is reported apart). Printed per path: wall time,
frames/s, videos/s, the time until the first entry is written, peak RSS (this process plus its children, sampled every
0.1 s) and the ratio; then the largest feature difference between the two stores. --breakdown N times decoding alone
and encoding alone (1 and 2 torch threads) on N videos in this process: the bound a two-stage pipeline can reach.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class PeakRSS:
    """Peak resident memory of this process and all its descendants (Ray's daemons and workers), sampled."""

    def __init__(self, every_s: float = 0.1):
        import psutil

        self.proc, self.every_s, self.peak, self._stop = psutil.Process(), every_s, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _total(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except Exception:  # a process that ended between listing and reading
                pass
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self._total())

    def __enter__(self) -> "PeakRSS":
        self.peak = self._total()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def first_entry_s(store, t0_wall: float) -> float:
    """Seconds from t0 until the first store entry was written (the oldest entry file's mtime)."""
    times = [p.stat().st_mtime for p in (store.root / "videos").glob("*.safetensors")]
    return min(times) - t0_wall if times else float("nan")


def timed(label: str, run, store, frames_of) -> dict:
    with PeakRSS() as rss:
        t_wall, t0 = time.time(), time.perf_counter()
        counts = run()
        wall = time.perf_counter() - t0
    frames = frames_of(counts)
    result = {"label": label, "wall_s": wall, "frames": frames, "videos": counts["encoded"], "failed": counts["failed"],
              "first_s": first_entry_s(store, t_wall), "peak_rss_mb": rss.peak / 2**20}
    print(f"{label:<44} {wall:7.1f} s  {frames / wall:7.0f} frames/s  {counts['encoded'] / wall:6.2f} videos/s  "
          f"first video {result['first_s']:5.1f} s  peak RSS {result['peak_rss_mb']:6.0f} MB", flush=True)
    return result


def breakdown(videos, spec, encoder_spec) -> None:
    """Decoding alone, then encoding the decoded frames alone with 1 and 2 torch threads, in this process."""
    import torch

    from tspo_ray.video import frames as video_io
    from tspo_ray.video.encoders import load_encoder
    from tspo_ray.video.features import video_candidates

    encoder = load_encoder(encoder_spec)
    t0 = time.perf_counter()
    decoded = [list(video_io.iter_frames(v, video_candidates(v, spec).frame_indices, spec.frame_size)) for v in videos]
    decode_s = time.perf_counter() - t0
    frames = sum(len(c) for chunks in decoded for c in chunks)
    line = f"breakdown on {len(videos)} videos, {frames} frames: decode {1e3 * decode_s / frames:.2f} ms/frame"
    before = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        for chunks in decoded:
            for c in chunks:
                encoder.encode_frames(c, batch_size=64)
        line += f", encode ({threads} thread{'s' * (threads > 1)}) {1e3 * (time.perf_counter() - t0) / frames:.2f} ms/frame"
    torch.set_num_threads(before)
    print(line, flush=True)


def max_difference(videos, spec, a, b) -> float:
    worst = 0.0
    for v in videos:
        key = spec.video_key(v)
        if not (a.has(key) and b.has(key)):
            continue
        x, y = a.get(key), b.get(key)
        assert (x.frame_indices == y.frame_indices).all() and (x.timestamps_s == y.timestamps_s).all(), v
        worst = max(worst, float((x.frame_features.float() - y.frame_features.float()).abs().max()))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=120)
    ap.add_argument("--world", default=str(ROOT / "outputs" / "bench_world"))
    ap.add_argument("--videos-from", metavar="DIR", help="encode every *.mp4 in DIR instead (e.g. data/synthetic/videos: "
                    "the main job's videos); --videos and --world are then unused")
    ap.add_argument("--min-seconds", type=float, default=120)
    ap.add_argument("--max-seconds", type=float, default=480)
    ap.add_argument("--encoders", type=int, default=1, help="most encoder actors")
    ap.add_argument("--encoder-cpus", type=float, default=1.0, help="CPUs (= torch threads) per encoder actor")
    ap.add_argument("--decode-workers", type=int, default=1, help="most decode actors")
    ap.add_argument("--decode-cpus", type=float, default=1.0, help="CPUs per decode actor")
    ap.add_argument("--local-threads", type=int, default=None, help="torch threads of the one-process loop "
                    "(default: features.worker_cpus, as the job's one-process path runs; 0: torch's, one per core)")
    ap.add_argument("--ray-cpus", type=int, default=None, help="logical CPUs of the local Ray (default: the cores)")
    ap.add_argument("--breakdown", type=int, default=0, metavar="N", help="time decode and encode alone on N videos")
    ap.add_argument("overrides", nargs="*", help="config overrides (features.*)")
    from tspo_ray.config import parse_job_args

    args = parse_job_args(ap)

    import torch

    from tspo_ray.config import load_config
    from tspo_ray.distributed import init_ray
    from tspo_ray.distributed.feature_pipeline import extract_with_ray
    from tspo_ray.synthetic.dataset import build_world
    from tspo_ray.video.encoders import load_encoder
    from tspo_ray.video.features import FeatureStore, extract_local

    t0 = time.perf_counter()
    if args.videos_from:
        videos = sorted(str(p) for p in Path(args.videos_from).glob("*.mp4"))
        if not videos:
            raise SystemExit(f"error: no *.mp4 under {args.videos_from}")
        where = args.videos_from
    else:
        build_world(args.world, {"train": args.videos}, seed=11, min_s=args.min_seconds, max_s=args.max_seconds,
                    workers=2, progress=False)
        videos = sorted(str(p) for p in (Path(args.world) / "videos").glob("train-*.mp4"))[: args.videos]
        where = f"({args.min_seconds:.0f}-{args.max_seconds:.0f} s) under {args.world}"
    print(f"{len(videos)} videos {where}, ready in {time.perf_counter() - t0:.0f} s; {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    cfg = load_config(ROOT / "configs" / "embedded.yaml", args.overrides)
    threads = max(1, int(cfg.features.worker_cpus)) if args.local_threads is None else args.local_threads
    if threads:
        torch.set_num_threads(threads)
    from tspo_ray.distributed.feature_pipeline import choose_engine, engine_line

    f = cfg.features
    print("the job's choice for these videos on this machine: " + engine_line(
        *choose_engine(f.engine, len(videos), float(os.cpu_count() or 1), False, f.ray_min_cpus, f.ray_min_videos),
        len(videos), float(os.cpu_count() or 1)), flush=True)
    encoder_spec = cfg.features.encoder.to_dict()
    spec = cfg.features.store_spec(load_encoder(encoder_spec).name)
    if args.breakdown:
        breakdown(videos[: args.breakdown], spec, encoder_spec)

    with tempfile.TemporaryDirectory() as tmp:
        local_store, ray_store = FeatureStore(Path(tmp) / "local"), FeatureStore(Path(tmp) / "ray")
        frames_in = {}

        def run_local():
            encoder = load_encoder(encoder_spec)  # on the clock, as the pipeline's actors load theirs
            counts = extract_local(videos, encoder, spec, local_store, progress=False)
            frames_in["local"] = sum(len(local_store.get(spec.video_key(v)).frame_indices) for v in videos)
            return counts

        local = timed(f"one process ({torch.get_num_threads()} torch threads)", run_local, local_store,
                      lambda c: frames_in["local"])
        t0 = time.perf_counter()
        init_ray("local", num_cpus=args.ray_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - t0
        ray_run = timed(
            f"Ray Data ({args.decode_workers} decode x {args.decode_cpus:g} CPU, {args.encoders} encoder x "
            f"{args.encoder_cpus:g} CPU)",
            lambda: extract_with_ray(videos, encoder_spec, spec, ray_store, num_workers=args.encoders,
                                     cpus_per_worker=args.encoder_cpus, decode_workers=args.decode_workers,
                                     decode_cpus=args.decode_cpus, progress=False),
            ray_store, lambda c: c["frames"])
        diff = max_difference(videos, spec, local_store, ray_store)
    print(f"ray.init (not on the clock): {init_s:.1f} s")
    for r in (local, ray_run):  # the rate once the first entry is written: start-up (actors, model loads) left out
        steady = (r["videos"] - 1) / (r["wall_s"] - r["first_s"])
        r["steady"] = steady
        print(f"after the first video, {r['label']}: {steady:.2f} videos/s")
    print(f"steady-state ratio {ray_run['steady'] / local['steady']:.2f}x; Ray Data start-up to the first entry "
          f"{ray_run['first_s']:.1f} s vs {local['first_s']:.1f} s")
    ratio = local["wall_s"] / ray_run["wall_s"]
    print(f"Ray Data / one process: {ratio:.2f}x frames/s ({ray_run['frames']} vs {local['frames']} frames, "
          f"{ray_run['videos']} vs {local['videos']} videos); {(local['wall_s']) / (ray_run['wall_s'] + init_s):.2f}x "
          f"with ray.init; max |feature difference| {diff:.1e}; load after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
