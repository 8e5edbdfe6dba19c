"""Each benchmark's own accuracy breakdown, against numbers worked out by hand."""
import pytest

from tspo_ray.evaluation.breakdown import breakdown, format_breakdown_table


def row(correct, *groups):
    out = {"meta": {"group": groups[0], "groups": list(groups)}}
    if correct is not None:
        out["correct"] = float(correct)
    return out


def test_mlvu_m_avg_is_the_mean_of_task_accuracies_not_of_questions():
    # needle 3/4 = 0.75, plotQA 0/1 = 0, ego 1/2 = 0.5: M-Avg = 1.25 / 3 = 0.41667; over questions 4/7 = 0.5714
    rows = [row(1, "needle"), row(1, "needle"), row(1, "needle"), row(0, "needle"), row(0, "plotQA"),
            row(1, "ego"), row(0, "ego")]
    got = breakdown("mlvu", rows)
    assert got["overall"] == pytest.approx(1.25 / 3) and got["overall_name"] == "M-Avg"
    assert got["groups"]["needle"] == {"accuracy": 0.75, "questions": 4}
    assert got["groups"]["ego"]["accuracy"] == 0.5 and got["groups"]["plotQA"]["accuracy"] == 0.0
    assert got["questions"] == 7


def test_lvbench_counts_a_multi_type_question_under_each_type():
    # q1 (KIR) right, q2 (ER) wrong, q3 (TG + reasoning) right, q4 (reasoning) wrong
    rows = [row(1, "key information retrieval"), row(0, "event understanding"),
            row(1, "temporal grounding", "reasoning"), row(0, "reasoning")]
    got = breakdown("lvbench", rows)
    assert got["overall"] == 0.5  # over questions: 2/4, each question once
    assert got["groups"]["reasoning"] == {"accuracy": 0.5, "questions": 2}
    assert got["groups"]["temporal grounding"] == {"accuracy": 1.0, "questions": 1}
    assert sum(g["questions"] for g in got["groups"].values()) == 5  # q3 counted twice


def test_videomme_and_longvideobench_columns_and_unanswered_questions():
    rows = [row(1, "long"), row(0, "short"), row(1, "short"), row(None, "medium"), row(1, "short")]
    got = breakdown("videomme", rows)
    assert list(got["groups"]) == ["short", "medium", "long"]  # Video-MME's own order
    assert got["overall"] == 3 / 5 and got["answered"] == 4  # the unanswered question counts as wrong
    assert got["groups"]["short"]["accuracy"] == pytest.approx(2 / 3) and got["groups"]["medium"]["accuracy"] == 0
    lvb = breakdown("longvideobench", [row(1, "3600"), row(0, "15"), row(1, "600"), row(1, "60"), row(0, "600")])
    assert list(lvb["groups"]) == ["15", "60", "600", "3600"]  # duration groups in numeric order
    assert lvb["overall"] == 0.6 and lvb["groups"]["600"]["accuracy"] == 0.5


def test_markdown_table_rows_are_selectors_columns_overall_and_groups():
    results = {"uniform": breakdown("mlvu", [row(1, "needle"), row(0, "ego"), row(0, "ego")]),
               "agent:top-k": breakdown("mlvu", [row(1, "needle"), row(1, "ego"), row(0, "ego"), row(1, "count")])}
    table = format_breakdown_table("mlvu", results).splitlines()
    assert table[0] == "| selector | questions | M-Avg | count | ego | needle |"
    assert table[2] == "| uniform | 3 | 50.0 | - | 0.0 | 100.0 |"  # (1 + 0) / 2 tasks
    assert table[3] == "| agent:top-k | 4 | 83.3 | 100.0 | 50.0 | 100.0 |"  # (1 + 0.5 + 1) / 3
