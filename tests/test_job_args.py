"""Config overrides may stand anywhere on a job's command line: before, between and after its options, also right
after an option that takes several values; anything else left over is refused by name."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers.scripts import load_script

# (script module, options that take a value, in the order they are given)
JOBS = [
    ("jobs/train.py", ["--results", "r.json", "--resume"]),
    ("jobs/evaluate.py", ["--out", "outputs/e", "--selectors", "uniform", "clip:top-k", "--plots", "2"]),
    ("pipelines/extract_features.py", ["--split", "val", "--chunk", "64"]),
    ("pipelines/difficulty_filter.py", ["--split", "val", "--easy-frames", "2"]),
]


@pytest.mark.parametrize("script, options", JOBS, ids=[Path(j[0]).stem for j in JOBS])
def test_overrides_anywhere_on_the_line(script, options):
    parse = load_script(script).parse_args
    first, middle, last = "train.steps=30", "train.seed=1", "answerer.settings={model: m, num_frames: 8}"
    argv = [first, *options[:2], middle, *options[2:], last]
    args = parse(argv)
    assert args.overrides == [first, middle, last] == parse([*options, first, middle, last]).overrides
    assert vars(args) == vars(parse([first, middle, last, *options]))  # the options read the same wherever they stand
    if script == "jobs/train.py":  # the line argparse alone refused ("unrecognized arguments")
        assert parse(["train.steps=30", "--results", "r.json", "train.seed=1"]).results == "r.json"
    if script == "jobs/evaluate.py":  # the override after --selectors' values is not taken for a selector
        assert args.selectors == ["uniform", "clip:top-k"] and args.plots == 2


@pytest.mark.parametrize("script", [j[0] for j in JOBS], ids=[Path(j[0]).stem for j in JOBS])
def test_a_stray_word_is_refused_with_its_name(script, capsys):
    parse = load_script(script).parse_args
    with pytest.raises(SystemExit):
        parse(["train.steps=3", "steps30"])
    assert "steps30: an override must look like section.key=value" in capsys.readouterr().err
