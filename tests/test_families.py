"""Question families as data: programs run by hand on a timeline, malformed and ambiguous families refused with
the file, the part and the reason, and a family written here built into a world, answered from its gold frames
and trained on."""
from __future__ import annotations

import json

import pytest

from helpers.scripts import load_script
from tspo_ray.synthetic.families import (
    Event,
    FamilyError,
    NoEvidence,
    TrueTimeline,
    family_from_text,
    load_families,
    run_program,
)
from tspo_ray.synthetic.tiny_clip import shipped_vocabulary

# segments:      0 red star   1 blue circle   2 red star   3 green square (needle)   4 blue circle
TIMELINE = TrueTimeline([Event("red", "star"), Event("blue", "circle"), Event("red", "star"),
                         Event("green", "square", needle=True), Event("blue", "circle")],
                        [(0, 10), (10, 20), (20, 30), (30, 33), (33, 50)], 50.0)


def run(program, **slots):
    return run_program(program, TIMELINE, slots)


def test_programs_by_hand():
    r = run([{"find": ["colour", "shape"]}, {"count": True}], colour="red", shape="star")
    assert r.value == 2 and r.touched == (0, 1, 2)  # both stars and what separates them
    r = run([{"find": ["colour", "shape"]}, {"appearance": 2}, {"step": 2}, {"attribute": "object"}],
            colour="red", shape="star")
    assert r.value == "a blue circle" and r.events == (4,) and r.touched == (0, 2, 3, 4)
    r = run([{"find": ["colour", "shape"]}, {"appearance": "last"}, {"step": -1}, {"attribute": "colour"}],
            colour="blue", shape="circle")
    assert r.value == "green" and r.touched == (1, 3, 4)  # every circle, to know the last one
    assert run([{"event": 3}, {"attribute": "object"}]).touched == (0, 1, 2)
    assert run([{"event": "last"}, {"step": -1}, {"attribute": "shape"}]).value == "square"
    assert run([{"at_fraction": 0.5}, {"attribute": "object"}]).value == "a red star"  # 25 s lies in [20, 30)
    r = run([{"between": [[{"event": 1}], [{"find": ["shape"]}, {"appearance": 1}]]}, {"count": True}],
            shape="square")
    assert r.value == 2 and r.events == (1, 2) and r.touched == (0, 1, 2, 3)
    assert run([{"find": ["shape"]}, {"attribute": "colour"}], shape="circle").value == "blue"
    with pytest.raises(NoEvidence):
        run([{"find": ["colour", "shape"]}, {"appearance": 1}, {"step": 5}, {"attribute": "object"}],
            colour="red", shape="star")
    with pytest.raises(NoEvidence):
        run([{"find": ["colour"]}, {"appearance": 1}, {"attribute": "shape"}], colour="yellow")


def test_the_event_at_a_fraction_is_the_segment_holding_that_time():
    assert TIMELINE.event_at(0.5) == 2  # 25 s lies in segment 2, [20, 30)
    assert TIMELINE.event_at(0.61) == 3 and TIMELINE.event_at(0.99) == 4


GOOD = """
family: mine
answer: object
constraints: {appearances: 1}
variants:
  - form: after
    program: [{find: [colour, shape]}, {appearance: 1}, {step: 1}, {attribute: object}]
    wordings: ["What appears right after the {colour} {shape} ?"]
"""


@pytest.mark.parametrize("text, message", [
    ("family: x\nanswer: object\nvariants: [{program: [{jump: 1}, {attribute: object}], wordings: ['What?']}]",
     "variants[0].program[0]: unknown primitive 'jump'"),
    ("family: x\nanswer: object\nvariants: [{program: [{find: [shape]}, {step: 1}, {attribute: object}], "
     "wordings: ['What {shape}?']}]", "variants[0].program[1]: step takes event, but the step before gives events"),
    ("family: x\nanswer: count\nvariants: [{program: [{event: 1}, {attribute: object}], wordings: ['What?']}]",
     "gives a object, but the answer type is count"),
    ("family: x\nanswer: object\nvariants: [{program: [{event: 1}, {attribute: object}], "
     "wordings: ['What {colour}?']}]", "names the slots ['colour'], but the program's find binds []"),
    ("family: x\nanswer: object\nvariants: [{program: [{event: 0}, {attribute: object}], wordings: ['What?']}]",
     "event takes last or k >= 1, got 0"),
    ("family: x\nanswr: object\nvariants: []", "answr: unknown key"),
    ("family: [x", "not valid YAML"),
])
def test_a_malformed_family_is_refused_naming_the_file_and_the_part(text, message):
    with pytest.raises(FamilyError) as err:
        family_from_text(text, "/fams/bad.yaml")
    assert str(err.value).startswith("/fams/bad.yaml: ") and message in str(err.value)


def test_ambiguous_wordings_and_unknown_words_are_refused(tmp_path):
    clash = tmp_path / "clash.yaml"
    clash.write_text(GOOD.replace("family: mine", "family: clash"))
    mine = tmp_path / "mine.yaml"
    mine.write_text(GOOD)
    with pytest.raises(FamilyError, match=r"clash.yaml: wording .*also reads as .* of .*mine.yaml"):
        load_families([clash, mine])
    # the shipped relation family asks "right after the red star?" without the space before "?": no clash
    load_families([mine, *[p for p in _shipped() if p.name == "relation.yaml"]], vocabulary=shipped_vocabulary())
    odd = tmp_path / "odd.yaml"
    odd.write_text(GOOD.replace("right after", "immediately after"))
    with pytest.raises(FamilyError, match=r"odd.yaml: wording 'What appears immediately after .*the word "
                                          r"'immediately' is not in the text encoder's vocabulary"):
        load_families([odd], vocabulary=shipped_vocabulary())


def _shipped():
    from tspo_ray.synthetic.families import shipped_family_files

    return shipped_family_files()


def test_make_synthetic_refuses_a_bad_family_file_with_one_line(tmp_path, capsys):
    make_synthetic = load_script("pipelines/make_synthetic.py")

    bad = tmp_path / "bad.yaml"
    bad.write_text("family: bad\nanswer: object\nvariants: [{program: [{jump: 1}], wordings: ['What?']}]\n")
    assert make_synthetic.main(["--out", str(tmp_path / "w"), "--families", str(bad), "--train-videos", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad}: variants[0].program[0]: unknown primitive 'jump'") and "\n" not in err


# --- a family of the test's own, end to end ---------------------------------------------------------------------

OWN = """
# the event two steps after the video's first event: worded with words the tiny CLIP knows
family: own_third
answer: object
variants:
  - form: third
    program: [{event: 1}, {step: 2}, {attribute: object}]
    wordings: ["What appears right after what appears right after the beginning of the video?"]
"""


@pytest.fixture(scope="module")
def own_world(tmp_path_factory):
    from tspo_ray.synthetic.dataset import build_world

    out = tmp_path_factory.mktemp("own")
    fam = out / "own_third.yaml"
    fam.write_text(OWN)
    relation = next(p for p in _shipped() if p.name == "relation.yaml")
    build_world(out / "world", {"train": 3, "val": 1, "test": 1}, seed=5, min_s=60, max_s=80, workers=1,
                progress=False, families=[fam, relation])
    return out / "world"


def test_a_family_written_here_is_built_kept_and_answered_from_its_gold_frames(own_world):
    from tspo_ray.answerers import build_answerer
    from tspo_ray.answerers.frame_sets import request_for
    from tspo_ray.data.records import read_records

    manifest = json.loads((own_world / "manifest.json").read_text())
    assert [f["name"] for f in manifest["families"]] == ["own_third", "relation"]
    assert manifest["families"][0]["text"] == OWN  # the world keeps a copy of the file as written
    records = [r for split in ("train", "val", "test") for r in read_records(own_world / f"{split}.jsonl")[0]]
    own = [r for r in records if r.family == "own_third"]
    assert len(own) == 5  # one per video
    plans = {json.loads(line)["video_id"]: json.loads(line)
             for split in ("train", "val", "test") for line in (own_world / "plans" / f"{split}.jsonl").open()}
    for r in own:  # the answer is the third segment, the target the first three
        seg = plans[r.video.split("/")[1][:-4]]["segments"]
        assert r.meta["answer_text"] == f"a {seg[2]['colour']} {seg[2]['shape']}" and r.meta["segments"] == [0, 1, 2]
    answerer = build_answerer("embedded", {"world": str(own_world)})  # the grammar from the world's manifest
    answers = answerer.answer([request_for(r, own_world / r.video, "gold", 8) for r in own])
    assert [a.option for a in answers] == [r.answer for r in own]
    assert {a.extra["form"] for a in answers} == {"own_third:third"}
    shipped_only = build_answerer("embedded", {})  # without the world's families the wording means nothing
    assert shipped_only.answer([request_for(own[0], own_world / own[0].video, "gold", 8)])[0].extra["form"] == \
        "unknown"


def test_a_family_written_here_is_trained_on(own_world, tmp_path):
    import torch

    from tspo_ray.answerers import build_answerer, settings_for
    from tspo_ray.config import load_config
    from tspo_ray.method import sampling
    from tspo_ray.splits import prepare_split
    from tspo_ray.training import scoring
    from tspo_ray.training.trainer import LocalTrainer
    from tspo_ray.video.encoders import load_encoder

    cfg = load_config(overrides=[f"data.root={own_world}", f"features.store={tmp_path / 'features'}",
                                 "train.steps=3", "train.questions_per_step=6", "policy.group_size=4"])
    items, problems, _ = prepare_split(cfg, "train", load_encoder(cfg.features.encoder), progress=False)
    own = [it for it in items if it.record.family == "own_third"]
    assert not problems and own
    answerer = build_answerer(cfg.answerer.kind, settings_for(cfg))  # its grammar: the world's families
    assert answerer.grammar.parse(own[0].record.question).family.name == "own_third"
    trainer = LocalTrainer(own, scoring.reward_fn(answerer), cfg)
    learned = []  # each step's questions and answered groups, as the update receives them
    update = trainer.state.update
    trainer.state.update = lambda batch, groups: learned.append((batch, groups)) or update(batch, groups)
    metrics = trainer.run()
    assert trainer.step == 3 and len(metrics) == 3
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics)
    # trained on the family: the rewards on this family's questions differ within groups, and the update raised the
    # likelihood of the sets rewarded above their group's mean (sum of advantage x change in set log-likelihood > 0)
    batch, groups = learned[-1]
    assert {it.record.family for it in batch} == {"own_third"}
    rewards = torch.stack([g.rewards for g in groups])
    assert (rewards.std(dim=1) > 0).any()
    gain = 0.0
    with torch.no_grad():
        for it, g in zip(batch, groups):
            logits = trainer.agent(it.frame_features, it.text_feature) / g.tau
            new = sampling.set_logprob(logits, g.draws, cfg.policy.likelihood).sum(-1)
            above = g.rewards - g.rewards.mean()  # the sign of each set's advantage, computed here
            gain += float((above * (new - g.logp_old.sum(-1))).sum())
    print(f'advantage-weighted likelihood gain after the update: {gain:.4f}')
    assert gain > 0, gain


def _alias_bomb(levels: int) -> str:
    """A family file whose aliases nest `levels` deep: each level holds the previous one nine times."""
    lines = ["family: bomb", "answer: object", "a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(9))}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\nvariants: []\n"


@pytest.mark.parametrize("text, message", [
    (_alias_bomb(18), "aliases (*name) are not accepted"),
    ("family: &f [*f]\nanswer: object\nvariants: []\n", "aliases (*name) are not accepted"),
    ("family: x\nanswer: object\nvariants: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than"),
    ("family: x\nanswer: object\nvariants: []\n" + "# padding\n" * 30000, "larger than"),
])
def test_a_hostile_yaml_family_is_a_family_error_naming_the_file_fast(text, message):
    import time

    start = time.perf_counter()
    with pytest.raises(FamilyError) as err:
        family_from_text(text, "/fams/hostile.yaml")
    assert time.perf_counter() - start < 1.0
    assert str(err.value).startswith("/fams/hostile.yaml: ") and message in str(err.value)


def test_a_deeply_nested_json_family_is_a_family_error():
    with pytest.raises(FamilyError, match=r"^/fams/deep.json: not valid JSON \(nested deeper than"):
        family_from_text('{"family": "x", "variants": ' + "[" * 100000 + "]" * 100000 + "}", "/fams/deep.json")


def test_shipped_families_still_load_under_the_bounds():
    from tspo_ray.synthetic.families import load_families

    assert load_families()
