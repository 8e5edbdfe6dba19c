"""Pictures: the agent's score curve over time with the target spans and a strip of the selected frames."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def score_curve_png(path: str | Path, timestamps_s: np.ndarray, curves: dict[str, np.ndarray],
                    selected_positions: Sequence[int], frames: np.ndarray, target_spans: Sequence[Sequence[float]],
                    title: str) -> Path:
    """Score curves over the candidates' timestamps, target spans shaded, selected frames marked and shown below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = max(len(frames), 1)
    fig = plt.figure(figsize=(max(8, 1.1 * k), 4.6))
    ax = fig.add_axes([0.07, 0.42, 0.9, 0.48])
    for start, end in target_spans:
        ax.axvspan(start, end, color="tab:green", alpha=0.2, lw=0)
    for name, values in curves.items():
        ax.plot(timestamps_s, values, lw=1.2, label=name)
    first = next(iter(curves.values()))
    sel_t = [timestamps_s[p] for p in selected_positions]
    ax.scatter(sel_t, [first[p] for p in selected_positions], color="tab:red", zorder=3, s=18, label="selected")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    for i, (frame, t) in enumerate(zip(frames, sel_t)):
        sub = fig.add_axes([0.07 + i * 0.9 / k, 0.02, 0.9 / k - 0.005, 0.28])
        sub.imshow(frame)
        sub.set_axis_off()
        sub.set_title(f"{t:.0f}s", fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_item(path, item, agent, k: int) -> Path:
    """The paper's Figure-5 view for one question: agent and CLIP scores, the agent's selection and its frames."""
    import torch

    from tspo_ray.evaluation.accuracy import select_frames
    from tspo_ray.video.frames import read_frames

    with torch.no_grad():
        agent_scores = agent(item.frame_features, item.text_feature).numpy()
    clip_scores = torch.nn.functional.cosine_similarity(item.frame_features, item.text_feature[None], dim=-1).numpy()
    sel = select_frames(item, "agent", k, agent)
    frames = read_frames(item.video_path, sel["frame_indices"], 96)
    return score_curve_png(path, item.timestamps_s, {"agent S": agent_scores, "CLIP cos": clip_scores},
                           sel["positions"], frames, item.record.target_spans,
                           f"{item.key}: {item.record.question}  (answer {item.record.answer})")


def learning_curves_png(path: str | Path, steps: Sequence[int], per_family: dict[str, Sequence[float]],
                        baselines: dict[str, dict[str, float]], title: str) -> Path:
    """Validation accuracy per family over the training steps, one panel per family, each baseline a dashed line.

    per_family: {family: [accuracy at each of steps]}; baselines: {selector: {family: accuracy}}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(per_family)
    cols = min(4, max(len(families), 1))
    rows = -(-len(families) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), squeeze=False, sharex=True)
    for ax, family in zip(axes.flat, families):
        ax.plot(steps, [100 * a for a in per_family[family]], marker="o", ms=3, lw=1.5, label="agent")
        for i, (name, accs) in enumerate(baselines.items()):
            if family in accs:
                ax.axhline(100 * accs[family], ls="--", lw=1, color=f"C{i + 1}", label=name)
        ax.set_title(family, fontsize=9)
        ax.set_ylim(0, 102)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(families):]:
        ax.set_axis_off()
    axes.flat[0].legend(fontsize=6, loc="lower right")
    fig.supxlabel("training step", fontsize=8)
    fig.supylabel("validation accuracy (%)", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
