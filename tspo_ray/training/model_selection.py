"""Choosing the agent's default inference mode on the validation split, and recording it with the checkpoint.

The `agent` selector means "the agent's scores with the checkpoint's default selection method". That default is
picked here, on validation questions only (the test split serves the final table), among every method the agent's
scores can be selected with, and written into the checkpoint that was evaluated, with the validation accuracies
behind it.
"""
from __future__ import annotations

from pathlib import Path

from tspo_ray.method.selection_methods import SELECTION_METHODS, SET_METHODS

#: the methods the agent's scores can be selected with (uniform ignores scores)
AGENT_MODES = tuple(m for m in SELECTION_METHODS if m != "uniform")


def best_mode(accuracy_by_mode: dict[str, float], preference: tuple[str, ...] = AGENT_MODES) -> str:
    """The mode with the highest validation accuracy; ties go to the earlier mode of `preference` (top-k first)."""
    if not accuracy_by_mode:
        raise ValueError("no validation accuracies to choose an inference mode from")
    order = {m: i for i, m in enumerate(preference)}
    return max(accuracy_by_mode, key=lambda m: (accuracy_by_mode[m], -order.get(m, len(order))))


def record_inference_mode(checkpoint: str | Path, mode: str, accuracy_by_mode: dict[str, float]) -> Path:
    """Rewrite a checkpoint (a file, or a run folder's newest) atomically, in place, with its default inference mode
    and the validation accuracies behind it."""
    from tspo_ray.checkpoint import latest_checkpoint, load_checkpoint
    from tspo_ray.safe_files import write_payload

    path = Path(checkpoint)
    if path.is_dir():
        path = latest_checkpoint(path)
        if path is None:
            raise FileNotFoundError(f"{checkpoint}: no checkpoint to record an inference mode in")
    state = load_checkpoint(path)
    state["inference_mode"] = mode
    state["inference_mode_validation"] = {m: float(a) for m, a in accuracy_by_mode.items()}
    write_payload(path, state)
    return path


def choose_inference_mode(cfg, checkpoint: str | Path, out_dir: Path, agent, answerer,
                          progress: bool = True) -> tuple[str, dict[str, float]]:
    """Evaluate agent:<mode> for every mode on the validation split, record the best in the checkpoint."""
    from tspo_ray.evaluation.split_job import run_evaluation

    modes = AGENT_MODES + (SET_METHODS if hasattr(agent, "set_policy") else ())
    payload = run_evaluation(cfg, "val", [f"agent:{m}" for m in modes], out_dir, agent=agent,
                             answerer=answerer, checkpoint=str(checkpoint), progress=progress)
    accuracy = {sel.split(":", 1)[1]: r["accuracy"] for sel, r in payload["results"].items()}
    mode = best_mode(accuracy, modes)
    record_inference_mode(checkpoint, mode, accuracy)
    return mode, accuracy
