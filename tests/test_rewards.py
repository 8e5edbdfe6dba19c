import pytest

from tspo_ray.method.rewards import answer_reward, parse_option, temporal_reward, total_reward


@pytest.mark.parametrize("text,expected", [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("B) a red star", "B"), ("The answer is B", "B"),
    ("Answer: b", "B"), ("answer: (c)", "C"), ("  D\n", "D"), ("[A]", "A"), ("I choose option C.", "C"),
    ("A. a red star", "A"),
])
def test_parse_accepts_the_usual_forms(text, expected):
    assert parse_option(text, 4) == expected


@pytest.mark.parametrize("text", [
    "a red star", "a blue circle appears", "E", "The answer is E", "", "I am not sure", "(e)", None, "Answer: 7",
])
def test_parse_rejects_invalid_and_never_reads_the_article(text):
    assert parse_option(text, 4) is None


def test_parse_respects_the_number_of_options():
    assert parse_option("C", 2) is None
    assert parse_option("C", 3) == "C"


def test_rewards_hand_computed():
    assert answer_reward("B", "B") == 1.0 and answer_reward("A", "B") == 0.0 and answer_reward(None, "B") == 0.0
    ts = [1.0, 5.0, 10.0, 10.5, 30.0, 61.0, 62.0, 90.0]
    assert temporal_reward(ts, [[9.5, 10.5], [60.0, 62.0]]) == pytest.approx(4 / 8)
    assert temporal_reward(ts, []) == 0.0
    assert temporal_reward([], [[0, 1]]) == 0.0
    assert total_reward("general", 1.0, 0.25) == 2.0
    assert total_reward("needle", 1.0, 0.25) == 1.25
    with pytest.raises(ValueError):
        total_reward("other", 1.0, 0.0)
