"""The split evaluation job (`jobs/evaluate.py --split`, and the final table of `jobs/train.py`): selectors compared on
a dataset split with an answerer; results.json, table.md, selections.jsonl and score-curve pictures."""
from __future__ import annotations

import json
from pathlib import Path

from tspo_ray.answerers import build_answerer, settings_for
from tspo_ray.config import ConfigError, with_selector_features
from tspo_ray.data.records import format_skipped
from tspo_ray.evaluation.accuracy import check_answered, evaluate_selector, format_table, summarise
from tspo_ray.method.selection_methods import parse_selector
from tspo_ray.safe_files import write_jsonl_atomic, write_text_atomic
from tspo_ray.splits import NoUsableQuestions, prepare_split
from tspo_ray.video.encoders import load_encoder


def run_evaluation(cfg, split: str, selectors: list[str], out_dir: Path, checkpoint: str | None = None,
                   num_plots: int = 0, items=None, answerer=None, agent=None, progress: bool = True) -> dict:
    """Evaluate selectors; writes results.json, table.md, selections.jsonl (and plots) under out_dir. With a
    checkpoint, the features are those it records (with_selector_features)."""
    inference_mode = cfg.agent.inference_mode
    if checkpoint and items is None:
        from tspo_ray.selector import selector_feature_spec

        cfg = with_selector_features(cfg, selector_feature_spec(checkpoint), str(checkpoint))
    if any(parse_selector(s)[0] == "agent" for s in selectors) and agent is None:
        if not checkpoint:
            raise ConfigError("selectors: the agent scorer needs --checkpoint (a run folder, checkpoint file or "
                              "TSPO-0.4B folder)")
        from tspo_ray.selector import load_selector_agent

        agent, inference_mode = load_selector_agent(checkpoint, window=cfg.agent.window, heads=cfg.agent.heads)
    problems = []
    if items is None:
        encoder = load_encoder(cfg.features.encoder)
        items, problems, _ = prepare_split(cfg, split, encoder, max_questions=cfg.data.max_eval_questions,
                                           progress=progress)
        if not items:
            raise NoUsableQuestions(f"no usable questions in the {split} split"
                                    + (format_skipped(problems) if problems else " (the split is empty)"))
    answerer = answerer or build_answerer(cfg.answerer.kind, settings_for(cfg))
    k = cfg.eval.num_frames
    results, selections = {}, []
    for method in selectors:
        rows = evaluate_selector(items, method, k, answerer, agent, progress=progress, inference_mode=inference_mode)
        check_answered(method, rows)
        results[method] = summarise(rows)
        selections.extend({key: r[key] for key in ("id", "method", "frame_indices", "timestamps_s", "scores",
                                                  "output", "predicted", "error", "answer", "correct")}
                          for r in rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"split": split, "num_frames": k, "answerer": answerer.name, "results": results,
               "skipped": problems, "checkpoint": checkpoint}
    if isinstance(getattr(answerer, "stats", None), dict):  # vLLM / HF: generate calls, requests, failed
        payload["answerer_stats"] = dict(answerer.stats)
    write_text_atomic(out_dir / "results.json", json.dumps(payload, indent=2))
    table = format_table(results) + format_skipped(problems)
    write_text_atomic(out_dir / "table.md", table + "\n")
    write_jsonl_atomic(out_dir / "selections.jsonl", selections)
    if agent is not None and num_plots:
        from tspo_ray.evaluation.plots import plot_item

        step = max(1, len(items) // num_plots)
        for item in items[::step][:num_plots]:
            plot_item(out_dir / "plots" / f"{item.key}.png", item, agent, k)
    return payload
