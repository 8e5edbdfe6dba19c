"""Banded (O(T*w)) vs dense (O(T^2)) window attention in the temporal agent: time, peak memory, agreement.

    uv run python benchmarks/agent_attention.py [--dim 768] [--lengths 128 1024 4096 16384]

Each length runs in a fresh subprocess so that peak RSS is the module's own.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(mode: str, T: int, dim: int) -> dict:
    import torch

    from tspo_ray.agent import TemporalAgent, dense_window_attention

    torch.manual_seed(0)
    agent = TemporalAgent(dim).eval()
    frames, text = torch.randn(T, dim), torch.randn(dim)
    if mode == "dense":
        import tspo_ray.agent as module

        module.banded_attention = dense_window_attention  # the same formula through a T x T mask
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.inference_mode():
        agent(frames[:8], text)  # warm-up
        t0 = time.perf_counter()
        scores = agent(frames, text)
        elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mode": mode, "T": T, "seconds": elapsed, "peak_rss_mb": peak / 1024, "delta_rss_mb": (peak - base) / 1024,
            "scores": scores[:: max(1, T // 64)].tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 1024, 4096, 16384])
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.dim)))
        return
    print(f"{'T':>6} | {'banded s':>9} {'banded MB':>10} | {'dense s':>9} {'dense MB':>10} | {'speed-up':>8} {'max |dS|':>9}")
    for T in args.lengths:
        rows = {}
        for mode in ("banded", "dense"):
            out = subprocess.run([sys.executable, __file__, "--dim", str(args.dim), "--child", mode, str(T)],
                                 capture_output=True, text=True)
            rows[mode] = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
        b, d = rows["banded"], rows["dense"]
        if d is None:
            print(f"{T:>6} | {b['seconds']:>9.3f} {b['delta_rss_mb']:>10.0f} | {'failed (out of memory?)':>21} |")
            continue
        diff = max(abs(x - y) for x, y in zip(b["scores"], d["scores"]))
        print(f"{T:>6} | {b['seconds']:>9.3f} {b['delta_rss_mb']:>10.0f} | {d['seconds']:>9.3f} {d['delta_rss_mb']:>10.0f} |"
              f" {d['seconds'] / b['seconds']:>7.1f}x {diff:>9.1e}")


if __name__ == "__main__":
    main()
