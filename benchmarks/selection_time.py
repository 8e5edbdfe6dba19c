"""Selection time per question from precomputed features, for each selector, at T candidates (agent D=768).

    uv run python benchmarks/selection_time.py --candidates 4096 16384 --k 64 --repeats 3

Random raw features stand in for CLIP-L/14 outputs (time does not depend on their values); the agents are random
ones of each --kinds (eq3: TemporalAgent at D=768, w=12, 8 heads; scan: tspo_ray/method/scan_agent.py). Each figure is the median over repeats of one select_from_features call
(scoring + selection), single process, on CPU.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from tspo_ray.method.kinds import agent_from_config
from tspo_ray.method.selection_methods import AKS_SETTINGS
from tspo_ray.selector import select_from_features

SELECTORS = ["uniform", "clip:top-k", "clip:bin-max", "clip:aks", "agent:top-k", "agent:bin-max", "agent:aks",
             "agent:top-k+edges"]


def time_one(selector: str, feats, text, idx, ts, k: int, agent, repeats: int) -> float:
    params = AKS_SETTINGS["longvideobench"] if selector.endswith(":aks") else {}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        select_from_features(feats, text, idx, ts, k, selector, agent, **params)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--selectors", nargs="+", default=SELECTORS)
    ap.add_argument("--kinds", nargs="+", default=["eq3"],
                    help="agent kinds timed in this run: eq3, scan, scan-alone (scan without eq. 3's part), "
                         "scan-adjacency (scan with agent.options.adjacency); a scan "
                         "kind adds agent:greedy to the agent's selectors")
    args = ap.parse_args()
    torch.manual_seed(0)
    built = {"eq3": {}, "scan": {"kind": "scan"}, "scan-alone": {"kind": "scan", "enhancer": False},
             "scan-adjacency": {"kind": "scan", "adjacency": True}}
    rows, names = {}, []
    for kind in args.kinds:
        agent = agent_from_config({"dim": args.dim, **built[kind]}).eval()
        selectors = [s for s in args.selectors if kind == "eq3" or s.startswith("agent")] + (
            ["agent:greedy"] if kind != "eq3" else [])
        for T in args.candidates:
            feats, text = torch.randn(T, args.dim) * 0.5, torch.randn(args.dim) * 0.5
            idx = np.arange(T, dtype=np.int64) * 30
            ts = idx / 30.0
            for s in selectors:
                rows[(kind, s, T)] = time_one(s, feats, text, idx, ts, args.k, agent, args.repeats)
        names += [(kind, s) for s in selectors]
    print(f"selection time per question (ms, median of {args.repeats}), k={args.k}, D={args.dim}, "
          f"torch threads={torch.get_num_threads()}")
    head = f"| {'agent kind':<10} | {'selector':<18} | " + " | ".join(f"T={T:>6}" for T in args.candidates) + " |"
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for kind, s in names:
        print(f"| {kind:<10} | {s:<18} | " + " | ".join(f"{rows[(kind, s, T)]:>8.1f}" for T in args.candidates) + " |")


if __name__ == "__main__":
    main()
