"""The scan kind's batched passes beside one question at a time, on the embedded world's own features.

    uv run python benchmarks/scan_batching.py [--questions 64] [--repeats 5] [key=value ...]

A training step of the scan kind (configs/embedded.yaml) does three things with the agent, each timed here both
ways in one run, on the same `--questions` training questions of world 0 (their CLIP features, T = 128):

- sampling: G sets per question from the set-aware policy (`rollout.sample_groups`, one batched pass for the
  policies and one for the draws, against `rollout.sample_group` called question by question);
- the update's likelihoods, forward and backward (`learner.batch_logprobs` against `learner.group_logprob`);
- selection for validation, the greedy decode (`selector.select_many` against `select_positions` one by one).

It also times the exps of the scan's bumps on the same batch with and without the floor at exp(-EXP_FLOOR): the
CPU's exp takes a slow path for arguments under -87, which most pairs of events far apart reach. Medians of
--repeats, one torch thread. The batched results equal the one-at-a-time ones (tests/test_scan_agent.py,
tests/test_learner_packed.py); the largest difference is printed as a check.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeats: int) -> tuple[float, object]:
    """(median seconds over `repeats` calls after one warm-up call, the last result)."""
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "embedded.yaml"))
    ap.add_argument("--questions", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    from tspo_ray.config import load_config
    from tspo_ray.method.scan_agent import EXP_FLOOR, SIGMA
    from tspo_ray.method.selection import select_positions
    from tspo_ray.selector import SelectionJob, select_many
    from tspo_ray.splits import prepare_split
    from tspo_ray.synthetic.dataset import ensure_world
    from tspo_ray.threads import use_torch_threads
    from tspo_ray.training.learner import batch_logprobs, group_logprob
    from tspo_ray.training.learner_state import build_agent
    from tspo_ray.training.rollout import sample_group, sample_groups
    from tspo_ray.video.encoders import load_encoder

    use_torch_threads(1)
    cfg = load_config(args.config, args.overrides)
    ensure_world(cfg)
    items, _, _ = prepare_split(cfg, "train", load_encoder(cfg.features.encoder), progress=False)
    items = items[: args.questions]
    torch.manual_seed(0)
    agent = build_agent(cfg, items[0].frame_features.shape[-1])
    if not hasattr(agent, "set_policies"):
        raise SystemExit(f"agent.kind={cfg.agent.kind} has no batched set-aware policy; this measures the scan kind")
    p, tau, seed = cfg.policy, cfg.policy.tau_start, 7
    print(f"{len(items)} questions of world 0's training split, T = {items[0].frame_features.shape[0]}, "
          f"G = {p.group_size}, T_s = {p.num_frames}, one torch thread, medians of {args.repeats}")

    def one_by_one():
        gen = torch.Generator().manual_seed(seed)  # one generator through the batch, as sample_groups uses it
        return [sample_group(agent, it, p.group_size, p.num_frames, tau, p.likelihood, 0, gen) for it in items]

    rows = []
    with torch.no_grad():
        one, groups = timed(one_by_one, args.repeats)
        many, batched = timed(lambda: sample_groups(agent, items, p.group_size, p.num_frames, tau, p.likelihood, 0,
                                                    torch.Generator().manual_seed(seed)), args.repeats)
    same = all(torch.equal(a.draws, b.draws) for a, b in zip(groups, batched))
    rows.append(("sampling G sets per question", one, many, f"draws equal: {same}"))

    def update(batch: bool):
        agent.zero_grad()
        pairs = (batch_logprobs(agent, items, groups, p.likelihood) if batch
                 else [group_logprob(agent, it, g, p.likelihood) for it, g in zip(items, groups)])
        torch.cat([lp for _, lp in pairs]).sum().backward()
        return torch.cat([lp.detach() for _, lp in pairs])

    one, lp_one = timed(lambda: update(False), args.repeats)
    many, lp_many = timed(lambda: update(True), args.repeats)
    rows.append(("the update's likelihoods, fwd + bwd", one, many,
                 f"max |diff| {float((lp_one - lp_many).abs().max()):.1e}"))

    agent.eval()
    k = cfg.eval.num_frames
    jobs = [SelectionJob(it.frame_features, it.text_feature, it.frame_indices, it.timestamps_s, k, "agent:greedy")
            for it in items]
    one, pos_one = timed(lambda: [select_positions(it.frame_features, it.text_feature, "agent:greedy", k, agent)[0]
                                  .tolist() for it in items], args.repeats)
    many, recs = timed(lambda: select_many(jobs, agent), args.repeats)
    rows.append(("greedy selection (validation)", one, many,
                 f"sets equal: {pos_one == [r['positions'] for r in recs]}"))

    # the bumps' exps on this batch's event indices: all pairs, as the neighbour matches and the kernel take them
    with torch.no_grad():
        _, index = agent.structure(torch.stack([it.frame_features for it in items]),
                                   torch.stack([it.text_feature for it in items]))
        exponent = -(index[:, :, None] - index[:, None, :]) ** 2 / (2 * SIGMA**2)
        floored = exponent.clamp_min(-EXP_FLOOR)
        one, _ = timed(lambda: torch.exp(exponent), args.repeats)
        many, _ = timed(lambda: torch.exp(floored), args.repeats)
    below = float((exponent < -87).float().mean())
    rows.append((f"exp of all pairs' bumps ({100 * below:.0f}% of arguments < -87)", one, many, "floored at -80"))

    print(f"\n| {'what':<50} | one at a time ms | batched ms | ÷ | check |\n|---|---:|---:|---:|---|")
    for name, a, b, check in rows:
        print(f"| {name:<50} | {1000 * a:.1f} | {1000 * b:.1f} | {a / b:.2f}× | {check} |")
    print("(the last row: the plain exp against the floored one, not one at a time against batched)")


if __name__ == "__main__":
    main()
