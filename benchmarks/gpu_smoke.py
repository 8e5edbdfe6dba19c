"""GPU smoke run: the project's tensor paths on an accelerator, each checked against the CPU on the same inputs.

    PYTHONPATH=. python benchmarks/gpu_smoke.py                      # a GPU machine: torch + transformers only
    uv run python benchmarks/gpu_smoke.py --small --device cpu      # seconds, on CPU (tests/test_gpu_smoke.py)

Needs torch, numpy and transformers only: no Ray, vLLM, MLflow, decord or network (it imports tspo_ray.method, the
learner step and the selector's feature path, none of which import more; tests/test_gpu_smoke.py checks that).
Prints ONE JSON line:
- agent: the temporal agent's forward + backward (eq. 3, D=768, w=12, 8 heads) at T = 128, 4096, 16384 in float32
  and bfloat16 (weights and inputs cast): median ms, peak memory, and against the CPU's float32 result on the same
  weights and inputs the max abs difference of S and the relative difference of the gradient;
- clip: a CLIP-L/14-shaped CLIPVisionModelWithProjection with random weights (transformers), frames/s at 224 px
  in float32 and bfloat16, its image embeddings against the CPU's (relative to their largest magnitude);
- learner_step: one GRPO update (tspo_ray.training.learner.learner_step, Adam, 2 epochs, Plackett-Luce, T_s=16,
  G=8) on the device against the same update on the CPU: loss, the updated weights, the time of a step;
- selection: select_positions at T = 4096, k = 64 for each method: ms on the device and the CPU, the scores' max abs
  difference, and the share of the k picks that agree (random features have near-ties, so not every pick must).
float32 checks run with TF32 off (torch.backends), so they measure the kernels' float32 and not TF32. `ok` is every
check within its tolerance (TOLERANCES); `--perturb x` adds x to every device result before it is checked, which
shows the checks can fail.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time

import numpy as np
import torch

from tspo_ray.data.items import FeatureItem
from tspo_ray.data.records import QARecord
from tspo_ray.method import sampling, selection_methods
from tspo_ray.method.agent import TemporalAgent
from tspo_ray.method.selection import select_positions
from tspo_ray.training.learner import batch_to_device, learner_step
from tspo_ray.training.rollout import Group

#: per dtype: S (cosines, abs), the gradient (relative, as one vector: grad_difference) and CLIP embeddings (relative
#: to the reference's largest magnitude). bfloat16 keeps 8 bits of mantissa: its gradient is ~10% off at D=768.
TOLERANCES = {
    "float32": {"scores": 1e-4, "grads": 1e-3, "clip": 1e-3},
    "bfloat16": {"scores": 5e-2, "grads": 0.3, "clip": 1e-1},
}
#: the learner step's updated weights (abs; Adam's first step moves every weight by about lr) and the loss (abs)
LEARNER_TOL = {"weights": 1e-5, "loss": 1e-4}
#: selection: S's abs difference, and the least share of the k picks the device and the CPU must agree on
SELECTION_TOL = {"scores": 1e-4, "agreement": 0.9}
SELECTION_METHODS = ["agent:top-k", "agent:bin-max", "agent:aks", "agent:events", "agent:top-k+edges",
                     "agent:anchors", "clip:top-k", "clip:bin-max", "uniform"]
#: --small: sizes for a CPU run in seconds
SMALL = dict(sizes=[16, 64, 200], dim=64, clip="tiny", clip_batch=4, select_candidates=256, k=16,
             learner_questions=2, learner_candidates=64, k_train=8, repeats=1)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
CLIP_L14 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                image_size=224, patch_size=14, projection_dim=768)
CLIP_TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 image_size=224, patch_size=14, projection_dim=16)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median ms of fn() over repeats, after one warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double().cpu() - b.detach().double().cpu()).abs().max())


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| over max |b| (b the reference)."""
    return max_abs(a, b) / max(float(b.detach().double().abs().max()), 1e-30)


def grad_difference(grads: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """||g - g_ref|| / ||g_ref|| over all parameters' gradients as one vector (per-element ratios are meaningless
    where the exact gradient is zero, as for the key bias, which softmax cancels)."""
    diff = sum(float((grads[n].double().cpu() - reference[n].double()).pow(2).sum()) for n in reference)
    norm = sum(float(reference[n].double().pow(2).sum()) for n in reference)
    return (diff / max(norm, 1e-300)) ** 0.5


def check(values: dict[str, float], tol: dict[str, float], at_least: tuple[str, ...] = ()) -> dict:
    """The measured differences, their tolerances and ok (every value <= its tolerance, or >= for at_least)."""
    ok = all((values[k] >= tol[k]) if k in at_least else (values[k] <= tol[k]) for k in values)
    return {**{k: float(f"{v:.3g}") for k, v in values.items()}, "tol": tol, "ok": bool(ok)}


def agent_forward_backward(agent: torch.nn.Module, feats: torch.Tensor, text: torch.Tensor,
                           weight: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """S and every parameter's gradient of sum(S * weight)."""
    agent.zero_grad(set_to_none=True)
    scores = agent(feats, text)
    (scores.float() * weight).sum().backward()
    return scores.detach(), {n: p.grad.detach() for n, p in agent.named_parameters()}


def bench_agent(args, device: torch.device) -> list[dict]:
    rows = []
    for T in args.sizes:
        torch.manual_seed(T)
        agent = TemporalAgent(args.dim, window=12, heads=8)
        feats, text, weight = torch.randn(T, args.dim) * 0.5, torch.randn(args.dim) * 0.5, torch.randn(T)
        ref_scores, ref_grads = agent_forward_backward(agent, feats, text, weight)
        for name, dtype in DTYPES.items():
            dev_agent = copy.deepcopy(agent).to(device=device, dtype=dtype)
            f, t, w = feats.to(device, dtype), text.to(device, dtype), weight.to(device)
            reset_peak(device)
            ms = timed(lambda: agent_forward_backward(dev_agent, f, t, w), device, args.repeats)
            scores, grads = agent_forward_backward(dev_agent, f, t, w)
            scores = scores + args.perturb
            grad_rel = grad_difference({n: g + args.perturb for n, g in grads.items()}, ref_grads)
            rows.append({"T": T, "dtype": name, "fwd_bwd_ms": round(ms, 3), "peak_mem_mb": peak_mb(device),
                         "check": check({"scores": max_abs(scores, ref_scores), "grads": grad_rel},
                                        {k: TOLERANCES[name][k] for k in ("scores", "grads")})})
    return rows


def bench_clip(args, device: torch.device) -> dict:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    import transformers

    shape = CLIP_TINY if args.clip == "tiny" else CLIP_L14
    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**shape)).eval()
    size = shape["image_size"]
    pixels = torch.randn(args.clip_batch, 3, size, size)
    checked = pixels[: args.clip_check_frames]
    with torch.no_grad():
        reference = model(pixel_values=checked).image_embeds
    out = {"shape": args.clip, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
           "image_px": size, "batch": args.clip_batch, "transformers": transformers.__version__}
    for name, dtype in DTYPES.items():
        dev_model = copy.deepcopy(model).to(device=device, dtype=dtype)
        p = pixels.to(device, dtype)
        with torch.no_grad():
            ms = timed(lambda: dev_model(pixel_values=p), device, args.repeats)
            embeds = dev_model(pixel_values=checked.to(device, dtype)).image_embeds.float() + args.perturb
        out[name] = {"frames_per_s": round(args.clip_batch / (ms / 1000), 1), "batch_ms": round(ms, 2),
                     "check": check({"clip": max_rel(embeds, reference)}, {"clip": TOLERANCES[name]["clip"]})}
        del dev_model
    return out


def learner_batch(args) -> tuple[torch.nn.Module, list[FeatureItem], list[Group]]:
    """A random agent and N answered groups drawn by it on the CPU (the rollout side's part)."""
    torch.manual_seed(1)
    agent = TemporalAgent(args.dim, window=12, heads=8)
    gen = torch.Generator().manual_seed(2)
    items, groups = [], []
    for i in range(args.learner_questions):
        T = args.learner_candidates
        record = QARecord(id=f"q{i}", video=f"v{i}.mp4", question="?", options=["a", "b"], answer="A")
        item = FeatureItem(record, torch.randn(T, args.dim) * 0.5, torch.randn(args.dim) * 0.5,
                           np.arange(T), np.arange(T, dtype=np.float64), f"v{i}.mp4")
        with torch.no_grad():
            logits = agent(item.frame_features, item.text_feature) / args.tau
        draws = sampling.gumbel_topk(logits, args.k_train, args.group_size, gen)
        logp_old = sampling.set_logprob(logits, draws, "plackett_luce")
        r_answer = torch.randint(0, 2, (args.group_size,), generator=gen).float()
        groups.append(Group(f"q{i}", draws, logp_old, args.tau, 0, rewards=r_answer + 1, r_answer=r_answer,
                            r_temporal=torch.zeros(args.group_size)))
        items.append(item)
    return agent, items, groups


def bench_learner(args, device: torch.device) -> dict:
    agent, items, groups = learner_batch(args)
    settings = dict(likelihood="plackett_luce", clip_eps=0.2, epochs=2, current_version=0)

    def step(a, it, gr):
        optimizer = torch.optim.Adam(a.parameters(), lr=args.lr)
        return learner_step(a, optimizer, it, gr, **settings), optimizer

    ref_agent = copy.deepcopy(agent)
    ref_metrics, _ = step(ref_agent, items, groups)
    dev_agent = copy.deepcopy(agent).to(device)
    dev_items, dev_groups = batch_to_device(items, groups, device)
    metrics, optimizer = step(dev_agent, dev_items, dev_groups)
    weights = max(max_abs(p.detach() + args.perturb, r.detach())
                  for p, r in zip(dev_agent.parameters(), ref_agent.parameters()))
    moved = max_abs(ref_agent.query.weight, agent.query.weight)
    ms = timed(lambda: learner_step(dev_agent, optimizer, dev_items, dev_groups, **settings), device, args.repeats)
    return {"questions": len(items), "candidates": args.learner_candidates, "k": args.k_train, "G": args.group_size,
            "lr": args.lr, "step_ms": round(ms, 2), "cpu_loss": ref_metrics["loss"], "loss": metrics["loss"],
            "weight_moved": float(f"{moved:.3g}"),
            "check": check({"weights": weights, "loss": abs(metrics["loss"] + args.perturb - ref_metrics["loss"])},
                           LEARNER_TOL)}


def bench_selection(args, device: torch.device) -> dict:
    torch.manual_seed(3)
    agent = TemporalAgent(args.dim, window=12, heads=8).eval()
    T, k = args.select_candidates, args.k
    feats, text = torch.randn(T, args.dim) * 0.5, torch.randn(args.dim) * 0.5
    dev_agent, dev_feats, dev_text = copy.deepcopy(agent).to(device), feats.to(device), text.to(device)
    out = {"T": T, "k": k, "methods": {}}
    for method in args.methods:
        params = selection_methods.AKS_SETTINGS["longvideobench"] if method.endswith(":aks") else {}
        try:
            ref_pos, ref_scores = select_positions(feats, text, method, k, agent, **params)
            cpu_ms = timed(lambda: select_positions(feats, text, method, k, agent, **params), torch.device("cpu"),
                           args.repeats)
            ms = timed(lambda: select_positions(dev_feats, dev_text, method, k, dev_agent, **params), device,
                       args.repeats)
            pos, scores = select_positions(dev_feats, dev_text, method, k, dev_agent, **params)
        except Exception as exc:  # a path that fails on the device is a finding, not the end of the run
            out["methods"][method] = {"error": f"{type(exc).__name__}: {exc}"[:300], "check": {"ok": False}}
            continue
        agree = len(set(pos.tolist()) & set(ref_pos.tolist())) / max(len(ref_pos), 1)
        values = {"agreement": agree}
        if scores is not None:
            values["scores"] = max_abs(scores + args.perturb, ref_scores)
        else:
            values["agreement"] = agree if not args.perturb else 0.0  # uniform has no scores to perturb
        out["methods"][method] = {"ms": round(ms, 3), "cpu_ms": round(cpu_ms, 3),
                                  "check": check(values, SELECTION_TOL, at_least=("agreement",))}
    return out


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--small", action="store_true",
                    help="small sizes for a CPU run in seconds: T 16 64 200, D 64, a tiny CLIP, selection at T 256")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 4096, 16384], help="the agent's T")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--clip", choices=["l14", "tiny"], default="l14")
    ap.add_argument("--clip-batch", type=int, default=64, help="frames per encoder call when timing")
    ap.add_argument("--clip-check-frames", type=int, default=2, help="frames compared with the CPU")
    ap.add_argument("--select-candidates", type=int, default=4096)
    ap.add_argument("--k", type=int, default=64, help="selection budget")
    ap.add_argument("--methods", nargs="+", default=SELECTION_METHODS)
    ap.add_argument("--learner-questions", type=int, default=8)
    ap.add_argument("--learner-candidates", type=int, default=128)
    ap.add_argument("--k-train", type=int, default=16)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--tau", type=float, default=0.025)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--perturb", type=float, default=0.0,
                    help="add this to every device result before it is checked (shows the checks can fail)")
    if ap.parse_known_args(argv)[0].small:  # small defaults; options given explicitly still win
        ap.set_defaults(**SMALL)
    return ap.parse_args(argv)


def set_float32_exact() -> None:
    """TF32 off for matmuls and convolutions: float32 checks then compare float32 kernels."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    set_float32_exact()
    t0 = time.perf_counter()
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "device_type": device.type, "torch": torch.__version__, "cuda": torch.version.cuda,
              "cpu_threads": torch.get_num_threads(), "perturb": args.perturb}
    for part, fn in (("agent", bench_agent), ("clip", bench_clip), ("learner_step", bench_learner),
                     ("selection", bench_selection)):
        t = time.perf_counter()
        try:
            result[part] = fn(args, device)
        except Exception as exc:  # one failing part still leaves the others' figures
            result[part] = {"error": f"{type(exc).__name__}: {exc}"[:500], "check": {"ok": False}}
        result.setdefault("part_s", {})[part] = round(time.perf_counter() - t, 1)
    result["ok"] = all(c["ok"] for c in all_checks(result))
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    return result


def all_checks(result: dict) -> list[dict]:
    """Every check dict of a result."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if "check" in node:
                found.append(node["check"])
            for key, value in node.items():
                if key != "check":
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(result)
    return found


def main(argv=None) -> dict:
    result = run(parse_args(argv))
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
