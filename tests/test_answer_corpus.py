"""parse_option on a hand-labelled corpus of answers written the way Qwen2.5-VL, LLaVA-Video, InternVL, GPT-style
and <think>/<answer> reasoning models write them (tests/data/answer_corpus.jsonl)."""
import json
import string
from pathlib import Path

import pytest

from tspo_ray.method.rewards import parse_option

CORPUS = [json.loads(line) for line in (Path(__file__).parent / "data" / "answer_corpus.jsonl").open()]


def test_the_corpus_is_large_and_labelled_with_valid_letters():
    assert len(CORPUS) >= 60
    assert len({row["id"] for row in CORPUS}) == len(CORPUS)
    for row in CORPUS:
        assert row["expected"] is None or row["expected"] in string.ascii_uppercase[: len(row["options"])], row
    assert sum(row["expected"] is None for row in CORPUS) >= 5  # refusals and invalid letters are in it


@pytest.mark.parametrize("row", CORPUS, ids=[f"{r['id']}-{r['style']}" for r in CORPUS])
def test_parse_option_reads_the_corpus(row):
    assert parse_option(row["output"], len(row["options"]), row["options"]) == row["expected"], row["output"]


@pytest.mark.parametrize("text,options,expected", [
    ("The answer is a red star.", ["a blue circle", "a red star"], "B"),  # never A: "a" is the article
    ("a red star", ["a blue circle", "a red star"], "B"),
    ("The video shows a red star and a blue circle.", ["a blue circle", "a red star"], None),  # both named
    ("It is not a red star, it is a blue circle", ["a red star", "a blue circle"], "B"),
    ("Three times", ["Three", "Three times", "Twice"], "B"),  # the longest matching text wins
])
def test_option_text_counts_only_with_the_options(text, options, expected):
    assert parse_option(text, len(options), options) == expected
    assert parse_option(text, len(options)) is None  # without the texts there is no letter in these answers
