"""Selection cost against accuracy: every training-free selector of the suite and the agent, at several frame budgets,
on the embedded world's test split.

    nice uv run python benchmarks/cost_accuracy.py [--questions 120] [--budgets 8 16 32 64] \
        [--checkpoint outputs/run/checkpoints] [--json F] [--png docs/img/cost_accuracy.png]

Per selector and budget k:
- acc: accuracy of the embedded answerer on the k frames chosen (the questions of --questions, the first of the split);
- sel ms/q, ms/video (cached): the selection from stored features (scoring and the method, select_from_features'
  own timing), per question and per video (a video's questions together);
- ms/q, ms/video (uncached): the same with the video's features computed first: decoding and encoding its
  candidates (measured on --extract-videos videos with the job's encoder) once per video, plus each question's text
  encoding; `uniform` needs neither (only the candidate grid from the file's metadata);
- answer s/q: the simulated 7B Video-MLLM's latency model (tspo_ray/answerers/simulated.py, LatencyModel) for one
  question of k frames in a call of --answer-batch questions: per_call / batch + per_request + k * per_frame;
- GPU-s/1k q: 1,000 x (selection + answering) seconds, cached and uncached. Selection is counted at the time
  measured here, on this machine's CPU with the embedded encoder (for a GPU, an upper bound).
The agent is the checkpoint's default inference mode (`agent`, chosen on validation). The table is printed as
Markdown; --json writes the rows, --png draws accuracy against GPU-seconds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from tspo_ray.answerers.simulated import LatencyModel
from tspo_ray.config import BASELINE_SELECTORS

BUDGETS = (8, 16, 32, 64)
SELECTORS = BASELINE_SELECTORS + ("agent",)


def cost_row(selector: str, k: int, accuracy: float, selection_ms_q: float, questions_per_video: float,
             extract_ms_video: float, text_ms_q: float, metadata_ms_video: float, latency: LatencyModel,
             answer_batch: int) -> dict:
    """One row of the table from measured times (ms) and the latency model. Pure."""
    needs_features = selector != "uniform"
    answer_s = latency.seconds([k] * answer_batch) / answer_batch
    cached_q = selection_ms_q
    per_video_extra = extract_ms_video if needs_features else metadata_ms_video
    uncached_video = per_video_extra + questions_per_video * (selection_ms_q + (text_ms_q if needs_features else 0))
    uncached_q = uncached_video / questions_per_video
    return {
        "selector": selector, "k": k, "accuracy": accuracy,
        "selection_ms_q": cached_q, "selection_ms_video": cached_q * questions_per_video,
        "uncached_ms_q": uncached_q, "uncached_ms_video": uncached_video,
        "answer_s_q": answer_s,
        "gpu_s_per_1k": 1000 * (cached_q / 1000 + answer_s),
        "gpu_s_per_1k_uncached": 1000 * (uncached_q / 1000 + answer_s),
    }


def format_table(rows: list[dict]) -> str:
    head = ("| selector | k | acc % | sel ms/q | sel ms/video | uncached ms/q | uncached ms/video | answer s/q "
            "| GPU-s/1k q | GPU-s/1k q uncached |")
    lines = [head, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(f"| {r['selector']} | {r['k']} | {100 * r['accuracy']:.1f} | {r['selection_ms_q']:.2f} "
                     f"| {r['selection_ms_video']:.1f} | {r['uncached_ms_q']:.1f} | {r['uncached_ms_video']:.0f} "
                     f"| {r['answer_s_q']:.3f} | {r['gpu_s_per_1k']:.0f} | {r['gpu_s_per_1k_uncached']:.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, key, label in ((axes[0], "gpu_s_per_1k", "features cached"),
                           (axes[1], "gpu_s_per_1k_uncached", "features computed per video")):
        for sel in dict.fromkeys(r["selector"] for r in rows):
            pts = sorted((r[key], 100 * r["accuracy"], r["k"]) for r in rows if r["selector"] == sel)
            style = dict(lw=2.5, marker="o") if sel == "agent" else dict(lw=1, marker=".")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=sel, **style)
            if sel == "agent":
                for x, y, k in pts:
                    ax.annotate(f"k={k}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("GPU-seconds per 1,000 questions (selection + answering)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def extraction_ms(items, encoder, spec, videos: int) -> tuple[float, float, float]:
    """(ms to decode and encode a video's candidates, ms to read its candidate grid, ms to encode one question)."""
    from tspo_ray.video.features import compute_video_features, video_candidates

    paths = list(dict.fromkeys(it.video_path for it in items))[:videos]
    extract, grid = [], []
    for path in paths:
        t0 = time.perf_counter()
        compute_video_features(path, encoder, spec)
        extract.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        video_candidates(path, spec)
        grid.append(time.perf_counter() - t0)
    text = []
    for it in items[:20]:
        t0 = time.perf_counter()
        encoder.encode_text([it.record.question])
        text.append(time.perf_counter() - t0)
    return 1000 * statistics.mean(extract), 1000 * statistics.mean(grid), 1000 * statistics.mean(text)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "embedded.yaml"))
    ap.add_argument("--checkpoint", default=str(ROOT / "outputs" / "run" / "checkpoints"),
                    help="the agent (a run folder or checkpoint); without one the agent's rows are left out")
    ap.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    ap.add_argument("--selectors", nargs="+", default=list(SELECTORS))
    ap.add_argument("--questions", type=int, help="the first N test questions only (default: the whole split)")
    ap.add_argument("--extract-videos", type=int, default=8, help="videos whose feature extraction is timed")
    ap.add_argument("--answer-batch", type=int, default=8, help="questions per call of the simulated 7B model")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--png", help="draw accuracy against GPU-seconds here")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. data.root=... features.store=...")
    args = ap.parse_args(argv)

    from tspo_ray.answerers import build_answerer, settings_for
    from tspo_ray.config import load_config
    from tspo_ray.evaluation.accuracy import evaluate_selector, summarise
    from tspo_ray.method.selection_methods import parse_selector
    from tspo_ray.splits import prepare_split
    from tspo_ray.video.encoders import load_encoder

    cfg = load_config(args.config, args.overrides)
    encoder = load_encoder(cfg.features.encoder)
    items, _, _ = prepare_split(cfg, "test", encoder, max_questions=args.questions, progress=False)
    selectors, agent, mode = list(args.selectors), None, "top-k"
    if any(parse_selector(s)[0] == "agent" for s in selectors):
        if Path(args.checkpoint).exists():
            from tspo_ray.selector import load_selector_agent

            agent, mode = load_selector_agent(args.checkpoint, window=cfg.agent.window, heads=cfg.agent.heads)
        else:
            print(f"no checkpoint at {args.checkpoint}: the agent's rows are left out")
            selectors = [s for s in selectors if parse_selector(s)[0] != "agent"]
    answerer = build_answerer(cfg.answerer.kind, settings_for(cfg))
    extract_ms, grid_ms, text_ms = extraction_ms(items, encoder, cfg.features.store_spec(encoder.name),
                                                 args.extract_videos)
    per_video = Counter(it.video_path for it in items)
    q_per_video = len(items) / len(per_video)
    latency = LatencyModel()
    rows = []
    for sel in selectors:
        for k in args.budgets:  # the selection methods' settings as the split evaluation uses them
            got = evaluate_selector(items, sel, k, answerer, agent, progress=False, inference_mode=mode)
            sel_ms = statistics.mean(r["selection_ms"] for r in got)
            rows.append(cost_row(sel, k, summarise(got)["accuracy"], sel_ms, q_per_video, extract_ms, text_ms,
                                 grid_ms, latency, args.answer_batch))
            print(f"{sel} k={k}: {100 * rows[-1]['accuracy']:.1f}%, {sel_ms:.2f} ms/q", flush=True)
    header = (f"{len(items)} test questions on {len(per_video)} videos ({q_per_video:.2f} per video); agent mode "
              f"{mode}; extraction {extract_ms:.0f} ms/video, text {text_ms:.1f} ms/question, grid "
              f"{grid_ms:.1f} ms/video; answering: LatencyModel at {args.answer_batch} questions per call")
    print(header + "\n\n" + format_table(rows))
    out = {"questions": len(items), "videos": len(per_video), "agent_mode": mode, "extract_ms_video": extract_ms,
           "text_ms_q": text_ms, "grid_ms_video": grid_ms, "answer_batch": args.answer_batch, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    if args.png:
        plot(rows, Path(args.png), f"embedded world, test split: {len(items)} questions; answering: simulated 7B "
                                   f"model, {args.answer_batch} questions per call")
    return out


if __name__ == "__main__":
    main()
