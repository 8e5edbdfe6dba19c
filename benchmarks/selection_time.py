"""Selection time per question over precomputed features, as the benchmark job runs it (select_from_features):
T candidates of D=768 (CLIP-L/14, TSPO-0.4B's width), k=64, for each selector, side by side in one run.

    uv run python benchmarks/selection_time.py [--lengths 4096 16384] [--repeats 5] [--threads 2]

The agent has random weights (time does not depend on them). Medians of `repeats` after one warm-up. Features come
from the store as float16 and are cast to float32 inside the selection, as in the job; decoding and encoding are
not included (they are the feature pipeline's, paid once per video).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

SELECTORS = ("uniform", "clip:top-k", "agent:top-k", "agent:bin-max", "agent:aks", "agent:top-k+edges")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()

    import numpy as np
    import torch

    from tspo_ray.agent import TemporalAgent
    from tspo_ray.selector import select_from_features

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    agent = TemporalAgent(args.dim).eval()
    times: dict[str, dict[int, float]] = {s: {} for s in SELECTORS}
    for T in args.lengths:
        feats, text = torch.randn(T, args.dim).half(), torch.randn(args.dim)
        idx = np.arange(T, dtype=np.int64) * 30
        ts = np.arange(T, dtype=np.float64)
        for selector in SELECTORS:
            params = {"t1": 0.2, "t2": -100.0, "all_depth": 3} if selector.endswith(":aks") else {}
            run = lambda: select_from_features(feats, text, idx, ts, args.k, selector, agent, **params)  # noqa: E731
            run()  # warm-up
            samples = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                out = run()
                samples.append(time.perf_counter() - t0)
            assert len(out["frame_indices"]) <= args.k
            times[selector][T] = statistics.median(samples)
    print(f"torch threads {torch.get_num_threads()}, CPU cores {os.cpu_count()}, load {os.getloadavg()[0]:.1f}; "
          f"D={args.dim}, k={args.k}, median of {args.repeats}")
    print("| selector | " + " | ".join(f"T={T:,}" for T in args.lengths) + " |")
    print("|---|" + "---:|" * len(args.lengths))
    for selector in SELECTORS:
        print(f"| {selector} | " + " | ".join(f"{1000 * times[selector][T]:.1f} ms" for T in args.lengths) + " |")


if __name__ == "__main__":
    main()
