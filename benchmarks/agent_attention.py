"""The temporal agent's forward pass at long T: the package vs the blocked band before it vs the offset-by-offset band
before that vs a dense T x T mask, beside the floor (the five D x D matrix products alone). Time, peak memory and
agreement of the scores, side by side.

    uv run python benchmarks/agent_attention.py [--dim 768] [--lengths 128 1024 4096 16384] [--threads 2]

Each (implementation, length) runs in a fresh subprocess so that peak RSS is its own; the time is the best of
--repeats forward passes under torch.inference_mode after one warm-up pass at the same length. CPU seconds (all
threads) are printed beside wall seconds: on a shared machine they show the work when the wall clock shows the queue.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from tspo_ray.method.agent import (
    BLOCK,
    MASKED_LOGIT,
    TemporalAgent,
    _outside_band,
    dense_window_attention,
    sinusoidal_positions,
    window_offsets,
)


def offset_loop_attention(q, k, v, heads: int, window: int):
    """The previous implementation: one [T, D] product per offset, masked_fill and stack."""
    *lead, T, D = q.shape
    hd = D // heads
    offsets = window_offsets(window)
    pad_lo, pad_hi = -offsets[0], offsets[-1]
    k_pad = F.pad(k, (0, 0, pad_lo, pad_hi))
    v_pad = F.pad(v, (0, 0, pad_lo, pad_hi))
    qh = q.reshape(*lead, T, heads, hd)
    positions = torch.arange(T, device=q.device)
    logits = []
    for o in offsets:
        k_o = k_pad[..., pad_lo + o: pad_lo + o + T, :].reshape(*lead, T, heads, hd)
        logit = (qh * k_o).sum(-1) / math.sqrt(hd)
        outside = (positions + o < 0) | (positions + o >= T)
        logits.append(logit.masked_fill(outside[:, None], MASKED_LOGIT))
    weights = torch.softmax(torch.stack(logits, dim=-1), dim=-1)
    out = torch.zeros_like(qh)
    for slot, o in enumerate(offsets):
        v_o = v_pad[..., pad_lo + o: pad_lo + o + T, :].reshape(*lead, T, heads, hd)
        out = out + weights[..., slot, None] * v_o
    return out.reshape(*lead, T, D)


def positions_float64(T: int, dim: int) -> torch.Tensor:
    """The previous positional encoding: recomputed in float64 at every call."""
    pos = torch.arange(T, dtype=torch.float64) / max(T, 1)
    freq = torch.pow(10000.0, -torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = pos[:, None] * freq[None, :]
    pe = torch.zeros(T, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return pe.float()


def previous_forward(agent: TemporalAgent, frames, text, attention=offset_loop_attention):
    """The previous forward pass: fresh positions, three q/k/v matmuls, the given attention."""
    x = frames + positions_float64(frames.shape[-2], agent.dim)
    attended = attention(agent.query(x), agent.key(x), agent.value(x), agent.heads, agent.window)
    enhanced = agent.mlp(attended) + frames
    t = text.unsqueeze(-2)
    return F.cosine_similarity(enhanced, t, dim=-1) + F.cosine_similarity(frames, t, dim=-1)


def _key_blocks(x: torch.Tensor, heads: int, window: int, block: int, num_blocks: int) -> torch.Tensor:
    """The B + w - 1 keys (or values) each block of queries can reach: [..., T, D] -> [..., H, nb, hd, B + w - 1];
    torch.matmul copies these strided blocks, which the package's head-major buffers avoid."""
    *lead, T, D = x.shape
    pad_lo = -window_offsets(window)[0]
    span = block + window - 1
    padded = F.pad(x, (0, 0, pad_lo, num_blocks * block + window - 1 - pad_lo - T))
    blocks = padded.unfold(-2, span, block)  # [..., nb, D, span], a view
    blocks = blocks.reshape(*lead, num_blocks, heads, D // heads, span)
    return blocks.movedim(-3, -4)


def blocked_attention_before(q, k, v, heads: int, window: int):
    """The blocked band before in-place masking: a fresh tensor for the scaled logits and for the masked ones."""
    *lead, T, D = q.shape
    hd = D // heads
    block = min(BLOCK, T)
    nb = -(-T // block)
    qb = F.pad(q, (0, 0, 0, nb * block - T)).reshape(*lead, nb, block, heads, hd)
    qb = qb.permute(*range(len(lead)), -2, -4, -3, -1)
    logits = torch.matmul(qb, _key_blocks(k, heads, window, block, nb)) / math.sqrt(hd)
    logits = logits.masked_fill(_outside_band(T, window, block, q.device), MASKED_LOGIT)
    weights = torch.softmax(logits, dim=-1)
    out = torch.matmul(weights, _key_blocks(v, heads, window, block, nb).transpose(-1, -2))
    out = out.permute(*range(len(lead)), -3, -2, -4, -1).reshape(*lead, nb * block, D)
    return out[..., :T, :]


def blocked_forward(agent: TemporalAgent, frames, text):
    """The forward pass before this version: fused q/k/v, the blocked band, nn.Sequential MLP plus a residual copy,
    F.cosine_similarity twice (each through a [T, D] product)."""
    x = frames + sinusoidal_positions(frames.shape[-2], agent.dim, frames.device, frames.dtype)
    weight = torch.cat([agent.query.weight, agent.key.weight, agent.value.weight])
    bias = torch.cat([agent.query.bias, agent.key.bias, agent.value.bias])
    q, k, v = F.linear(x, weight, bias).split(agent.dim, dim=-1)
    enhanced = agent.mlp(blocked_attention_before(q, k, v, agent.heads, agent.window)) + frames
    t = text.unsqueeze(-2)
    return F.cosine_similarity(enhanced, t, dim=-1) + F.cosine_similarity(frames, t, dim=-1)


def bare_matmuls(agent: TemporalAgent, frames, text):
    """The floor: only the forward's five D x D products over T rows (q/k/v fused, the MLP's two), nothing else."""
    weight = torch.cat([agent.query.weight, agent.key.weight, agent.value.weight])
    q = F.linear(frames, weight)[..., : agent.dim]
    hidden = F.linear(q, agent.mlp[0].weight)
    return F.linear(hidden, agent.mlp[2].weight)[..., 0]


IMPLEMENTATIONS = {
    "package": lambda agent, frames, text: agent(frames, text),
    "blocked": blocked_forward,
    "previous": previous_forward,
    "dense": lambda agent, frames, text: previous_forward(agent, frames, text, dense_window_attention),
    "matmuls": bare_matmuls,
}


def measure(mode: str, T: int, dim: int, repeats: int) -> dict:
    torch.manual_seed(0)
    agent = TemporalAgent(dim).eval()
    frames, text = torch.randn(T, dim), torch.randn(dim)
    forward = IMPLEMENTATIONS[mode]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.inference_mode():
        forward(agent, frames, text)  # warm-up at the same length (allocator, caches)
        best, best_cpu = math.inf, math.inf
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            scores = forward(agent, frames, text)
            best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mode": mode, "T": T, "seconds": best, "cpu_seconds": best_cpu, "delta_rss_mb": (peak - base) / 1024, "scores": scores.tolist()}


def run_child(mode: str, T: int, args) -> dict | None:
    out = subprocess.run([sys.executable, __file__, "--dim", str(args.dim), "--threads", str(args.threads),
                          "--repeats", str(args.repeats), "--child", mode, str(T)], capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 1024, 4096, 16384])
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dense-max", type=int, default=4096, help="skip the dense T x T mask above this length")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.dim, args.repeats)))
        return
    print(f"D={args.dim}, {args.threads} threads, best of {args.repeats}; max|dS| of the package against the blocked "
          "band before it and the offset loop before that; floor = the five D x D products alone")
    print(f"{'T':>6} | {'package s':>9} {'cpu s':>6} {'MB':>5} | {'blocked s':>9} {'offsets s':>9} {'dense s':>7} |"
          f" {'floor s':>7} {'pkg/floor':>9} | {'vs blocked':>10} {'max|dS|':>8} {'vs offsets':>10} {'max|dS|':>8}")
    for T in args.lengths:
        runs = {m: run_child(m, T, args) for m in ("package", "blocked", "previous", "matmuls")}
        dense = run_child("dense", T, args) if T <= args.dense_max else None
        if any(r is None for r in runs.values()):
            print(f"{T:>6} | failed")
            continue
        new, blocked, old, floor = runs["package"], runs["blocked"], runs["previous"], runs["matmuls"]
        diff = lambda other: max(abs(a - b) for a, b in zip(new["scores"], other["scores"]))
        dense_col = f"{dense['seconds']:>7.3f}" if dense else f"{'-':>7}"
        print(f"{T:>6} | {new['seconds']:>9.3f} {new['cpu_seconds']:>6.3f} {new['delta_rss_mb']:>5.0f} |"
              f" {blocked['seconds']:>9.3f} {old['seconds']:>9.3f} {dense_col} |"
              f" {floor['seconds']:>7.3f} {new['seconds'] / floor['seconds']:>8.2f}x |"
              f" {blocked['seconds'] / new['seconds']:>9.2f}x {diff(blocked):>8.1e}"
              f" {old['seconds'] / new['seconds']:>9.2f}x {diff(old):>8.1e}", flush=True)

if __name__ == "__main__":
    main()
