"""Accuracy as each benchmark's own table reports it, from per-question result rows (pure functions).

A row is one (selector, question): `correct` (1.0 / 0.0; absent when the question got no answer, which counts as
wrong: the benchmark's denominator is all its questions) and `meta["groups"]` (the importers' breakdown rows).

  longvideobench  overall over questions; columns by duration group (15, 60, 600, 3600 s)
  mlvu            M-Avg: the mean of the per-task accuracies (not the mean over questions); columns by task type
  videomme        overall over questions; columns short / medium / long
  lvbench         overall over questions; columns by question type, a question with several types counting
                  under each (as LVBench's own table does), so the columns need not average to the overall
  tsv, tspo10k    overall over questions; columns by the file's task / type
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

#: the name of the overall column, per benchmark
OVERALL_NAME = {"mlvu": "M-Avg"}
#: column order where the benchmark fixes one; others are sorted
_ORDER = {"videomme": ("short", "medium", "long")}


def _groups(row: dict) -> list[str]:
    meta = row.get("meta") or {}
    groups = meta.get("groups") or ([meta["group"]] if "group" in meta else [])
    return [str(g) for g in groups]


def _sort_key(benchmark: str, group: str):
    order = _ORDER.get(benchmark)
    if order and group in order:
        return (0, order.index(group), "")
    if group.isdigit():  # LongVideoBench's duration groups read as numbers: 15 < 60 < 600 < 3600
        return (1, int(group), "")
    return (2, 0, group)


def breakdown(benchmark: str, rows: Iterable[dict]) -> dict:
    """{"overall", "overall_name", "questions", "answered", "groups": {group: {"accuracy", "questions"}}} for one
    selector's rows. Accuracies are fractions in [0, 1]."""
    rows = list(rows)
    per_group: dict[str, list[float]] = defaultdict(list)
    scores = []
    for row in rows:
        score = float(row.get("correct") or 0.0)
        scores.append(score)
        for group in dict.fromkeys(_groups(row)):  # a type listed twice still counts once
            per_group[group].append(score)
    groups = {g: {"accuracy": sum(v) / len(v), "questions": len(v)}
              for g, v in sorted(per_group.items(), key=lambda kv: _sort_key(benchmark, kv[0]))}
    if benchmark == "mlvu":
        overall = sum(g["accuracy"] for g in groups.values()) / len(groups) if groups else 0.0
    else:
        overall = sum(scores) / len(scores) if scores else 0.0
    return {"overall": overall, "overall_name": OVERALL_NAME.get(benchmark, "overall"), "questions": len(rows),
            "answered": sum("correct" in row for row in rows), "groups": groups}


def format_breakdown_table(benchmark: str, results: dict[str, dict]) -> str:
    """A markdown table, one row per selector: questions, overall (M-Avg for MLVU), then every group, in %."""
    columns: list[str] = []
    for res in results.values():
        columns.extend(g for g in res["groups"] if g not in columns)
    columns.sort(key=lambda g: _sort_key(benchmark, g))
    overall_name = OVERALL_NAME.get(benchmark, "overall")
    head = ["selector", "questions", overall_name, *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for selector, res in results.items():
        cells = [selector, str(res["questions"]), f"{100 * res['overall']:.1f}"]
        cells += [f"{100 * res['groups'][g]['accuracy']:.1f}" if g in res["groups"] else "-" for g in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
