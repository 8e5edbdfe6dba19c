"""Evaluating keyframe selectors: select T_s frames per question, answer, score; tables and exported selections."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

from tspo_ray.answerers.base import AnswerRequest
from tspo_ray.data.items import FeatureItem
from tspo_ray.method.rewards import answer_reward, temporal_reward
from tspo_ray.selector import select_from_features


def select_frames(item: FeatureItem, method: str, k: int, agent=None, inference_mode: str = "top-k",
                  **params) -> dict:
    """One selection result for a FeatureItem, through the selector API's feature-level path (one code path for
    evaluation, Serve and export): positions, native frame indices, timestamps, scores, timing."""
    return select_from_features(item.frame_features, item.text_feature, item.frame_indices, item.timestamps_s, k,
                                method, agent, inference_mode, key=item.key, **params)


def evaluate_selector(items: Sequence[FeatureItem], method: str, k: int, answerer, agent=None,
                      batch_size: int = 32, progress: bool = True, inference_mode: str = "top-k",
                      params: dict | None = None) -> list[dict]:
    """Rows per question: the selection plus the answer (raw text `output`, parsed option `predicted` or None,
    `error` where the answerer could not answer), correctness and R_T. params: the selection method's settings."""
    from tqdm import tqdm

    rows = []
    bar = tqdm(total=len(items), desc=f"eval {method}", disable=not progress)
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        selections = [select_frames(it, method, k, agent, inference_mode, **(params or {})) for it in chunk]
        requests = [AnswerRequest.for_record(it.record, it.video_path, sel["frame_indices"], sel["timestamps_s"], method)
                    for it, sel in zip(chunk, selections)]
        answers = answerer.answer(requests)
        for it, sel, ans in zip(chunk, selections, answers):
            rec = it.record
            rows.append({
                **sel, "family": rec.family, "answer": rec.answer, "predicted": ans.option, "output": ans.text,
                "error": ans.extra.get("error"), "correct": answer_reward(ans.option, rec.answer),
                "r_temporal": temporal_reward(sel["timestamps_s"], rec.target_spans) if rec.target_spans else None,
            })
        bar.update(len(chunk))
    bar.close()
    return rows


def validation_accuracy(items: Sequence[FeatureItem], agent, k: int, answerer, selector: str = "agent:top-k") -> dict:
    """The periodic validation of a training run, quietly: one selector's accuracy on a split's items, overall
    ("accuracy") and per family ("family/<name>")."""
    s = summarise(evaluate_selector(items, selector, k, answerer, agent, progress=False))
    return {"accuracy": s["accuracy"], **{f"family/{f}": v["accuracy"] for f, v in s["per_family"].items()}}


class AllRequestsRejected(RuntimeError):
    """The answerer answered none of a selector's questions: an accuracy of 0 would be a set-up failure."""


def check_answered(method: str, rows: Sequence[dict]) -> None:
    """Raise AllRequestsRejected when every row of a selector carries an answerer error."""
    if rows and all(r.get("error") for r in rows):
        raise AllRequestsRejected(
            f"selector {method}: the answerer rejected all {len(rows)} requests, so there is no accuracy to report; "
            f"first reason: {rows[0]['error']}")


def summarise(rows: Iterable[dict]) -> dict:
    """Overall and per-family accuracy, mean R_T, parse-failure rate, selection time, question count."""
    rows = list(rows)
    by_family: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_family[r["family"]].append(r)
    acc = lambda rs: sum(r["correct"] for r in rs) / max(len(rs), 1)
    r_t = [r["r_temporal"] for r in rows if r["r_temporal"] is not None]
    return {
        "questions": len(rows),
        "accuracy": acc(rows),
        "per_family": {f: {"accuracy": acc(rs), "questions": len(rs)} for f, rs in sorted(by_family.items())},
        "mean_r_temporal": sum(r_t) / len(r_t) if r_t else None,
        "parse_failure_rate": sum(r["predicted"] is None for r in rows) / max(len(rows), 1),
        "selection_ms_per_question": sum(r["selection_ms"] for r in rows) / max(len(rows), 1),
    }


def format_table(results: dict[str, dict]) -> str:
    """A plain-text table: one row per selector, accuracy overall and per family (in %), mean R_T."""
    families = sorted({f for s in results.values() for f in s["per_family"]})
    head = f"| {'selector':<11} | {'n':>4} | {'overall':>7} | " + " | ".join(f"{f:>16}" for f in families)
    head += f" | {'mean R_T':>8} | {'parse fail':>10} | {'select ms':>9} |"
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for name, s in results.items():
        fam = " | ".join(f"{100 * s['per_family'].get(f, {}).get('accuracy', float('nan')):>16.1f}" for f in families)
        rt = f"{s['mean_r_temporal']:.3f}" if s["mean_r_temporal"] is not None else "-"
        lines.append(f"| {name:<11} | {s['questions']:>4} | {100 * s['accuracy']:>7.1f} | {fam} | {rt:>8} | "
                     f"{100 * s['parse_failure_rate']:>9.1f}% | {s['selection_ms_per_question']:>9.2f} |")
    return "\n".join(lines)
