"""Candidate decoding on long 720p H.264 videos: the floor (one decode pass of every frame, nothing converted) beside
exact 1-fps candidates (PyAV sequential, decord get_batch) and the keyframe fast mode, with wall time and peak RSS.

    uv run python benchmarks/decode.py                 # the 10-minute video
    uv run python benchmarks/decode.py --minutes 2     # a quicker run
    uv run python benchmarks/decode.py --long          # the 10- and the 60-minute video

The videos are made here with PyAV's libx264 (1280x720, 30 fps, GOP 250, a scrolling texture with moving blocks)
and cached under outputs/bench_videos. Each measurement runs in a fresh subprocess, so its peak RSS is its own.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

WIDTH, HEIGHT, FPS, GOP = 1280, 720, 30, 250


def make_video(path: Path, minutes: float, preset: str) -> Path:
    import av

    if path.exists():
        return path
    tmp = path.with_suffix(".part.mp4")
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (HEIGHT // 8, (WIDTH * 2) // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    t0 = time.perf_counter()
    with av.open(str(tmp), "w") as c:
        s = c.add_stream("libx264", rate=FPS, options={"preset": preset})
        s.width, s.height, s.pix_fmt, s.gop_size = WIDTH, HEIGHT, "yuv420p", GOP
        for i in range(int(minutes * 60 * FPS)):
            off = (i * 3) % WIDTH
            img = np.ascontiguousarray(texture[:, off: off + WIDTH])
            y, x = (i * 5) % (HEIGHT - 120), (i * 7) % (WIDTH - 160)
            img[y: y + 120, x: x + 160] = (i * 2) % 256  # a moving block whose level changes every frame
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    tmp.rename(path)
    print(f"made {path} ({minutes} min, preset {preset}) in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def measure(mode: str, path: str, size: int) -> dict:
    from tspo_ray.video import frames as video

    t0 = time.perf_counter()
    extra = {}
    if mode == "pass":
        import av

        with av.open(path) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            frames = sum(1 for _ in c.decode(stream))
    else:
        backend, decode_mode = {"pyav": ("pyav", "exact"), "decord": ("decord", "exact"),
                                "keyframes": ("pyav", "keyframes")}[mode]
        out, cands = video.decode_candidates(path, 1.0, 10**9, size, backend=backend, mode=decode_mode)
        frames = len(out)
        if mode == "keyframes":
            info = cands.info
            grid = video.candidate_indices(info.num_frames, info.native_fps, 1.0, 10**9)[1]
            extra = {"max_error_s": float(np.abs(cands.timestamps_s - grid).max()),
                     "mean_error_s": float(np.abs(cands.timestamps_s - grid).mean()),
                     "distinct": int(len(np.unique(cands.timestamps_s)))}
    seconds = time.perf_counter() - t0
    return {"mode": mode, "seconds": seconds, "frames": frames,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}


def run(mode: str, path: Path, size: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(path), "--size", str(size)],
                         capture_output=True, text=True)
    if out.returncode:
        return {"mode": mode, "error": out.stderr.strip().splitlines()[-1][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(path: Path, size: int) -> None:
    rows = {m: run(m, path, size) for m in ("pass", "pyav", "decord", "keyframes")}
    floor = rows["pass"]["seconds"]
    print(f"\n{path.name}: 1-fps candidates at {size} px")
    print(f"{'':<34} {'wall s':>8} {'peak RSS MB':>12} {'frames':>7} {'/ pass':>7}")
    names = {"pass": "one decode pass of every frame", "pyav": "exact 1-fps, PyAV sequential",
             "decord": "exact 1-fps, decord get_batch", "keyframes": "fast mode (nearest keyframe)"}
    for mode, row in rows.items():
        if "error" in row:
            print(f"{names[mode]:<34} failed: {row['error']}")
            continue
        print(f"{names[mode]:<34} {row['seconds']:>8.2f} {row['peak_rss_mb']:>12.0f} {row['frames']:>7}"
              f" {row['seconds'] / floor:>6.2f}x")
    fast = rows["keyframes"]
    if "error" not in fast and "error" not in rows["pyav"]:
        print(f"fast mode: {rows['pyav']['seconds'] / fast['seconds']:.1f}x faster than exact PyAV; "
              f"{fast['distinct']} distinct frames; timestamp error max {fast['max_error_s']:.2f} s, "
              f"mean {fast['mean_error_s']:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--long", action="store_true", help="also the 60-minute video")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--preset", default="ultrafast", help="libx264 preset for making the videos")
    ap.add_argument("--cache", default=str(ROOT / "outputs" / "bench_videos"))
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], args.size)))
        return
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    for minutes in [args.minutes] + ([60.0] if args.long else []):
        path = make_video(cache / f"h264_720p_{minutes:g}min_gop{GOP}_{args.preset}.mp4", minutes, args.preset)
        report(path, args.size)


if __name__ == "__main__":
    main()
