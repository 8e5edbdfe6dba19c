"""The embedded answerer's contract, and that it answers from the right frames only."""
import pytest

from tspo_ray.answerers import AnswerRequest, build_answerer
from tspo_ray.answerers.embedded import count_runs
from tspo_ray.data.records import read_records
from tspo_ray.video import VideoError, probe


@pytest.fixture(scope="module")
def answerer():
    return build_answerer("embedded")  # the shipped tiny CLIP


def request_for(world, record, times, key="k"):
    info = probe(world / record.video)
    idx = tuple(min(int(round(t * info.native_fps)), info.num_frames - 1) for t in times)
    return AnswerRequest(key, str(world / record.video), idx, tuple(i / info.native_fps for i in idx),
                         record.question, tuple(record.options), record.duration_s)


def gold_times(record, k=8):
    """k timestamps spread over the record's target spans."""
    spans = record.target_spans
    per = max(1, k // len(spans))
    return [s + (e - s) * (i + 0.5) / per for s, e in spans for i in range(per)]


def test_contract_order_keys_and_parsing(tiny_world, tiny_hf_clip):
    rand = build_answerer("embedded", {"encoder": {"backend": "hf", "model": tiny_hf_clip}})
    records, _ = read_records(tiny_world / "test.jsonl")
    reqs = [request_for(tiny_world, r, [1.0, 5.0, 9.0], key=f"key-{i}") for i, r in enumerate(records[:5])]
    reqs.append(request_for(tiny_world, records[0], [3.0], key="one-frame"))
    answers = rand.answer(reqs)
    assert [a.key for a in answers] == [r.key for r in reqs]
    for a, r in zip(answers, reqs):
        assert a.option in "ABCD"[: len(r.options)] and a.text == a.option


def test_bad_video_is_named(answerer, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    req = AnswerRequest("k", str(bad), (0,), (0.0,), "What colour is the star?", ("red", "blue"), 10.0)
    with pytest.raises(VideoError, match="broken.mp4"):
        answerer.answer([req])


def test_answers_from_gold_frames_and_not_without_them(answerer, tiny_world):
    records, _ = read_records(tiny_world / "train.jsonl")
    gold = [r for r in records if r.family in ("needle_attribute", "relation", "position")]
    answers = answerer.answer([request_for(tiny_world, r, gold_times(r)) for r in gold])
    accuracy = sum(a.option == r.answer for a, r in zip(answers, gold)) / len(gold)
    assert accuracy >= 0.8, accuracy
    # frames far from the needle: the answerer cannot know the needle's attribute, so it must not be reliably right
    needles = [r for r in records if r.family == "needle_attribute"]
    away = []
    for r in needles:
        (s, e), = r.target_spans
        away.append(request_for(tiny_world, r, [t for t in range(1, int(r.duration_s) - 1, 6) if not s - 2 <= t <= e + 2]))
    blind = answerer.answer(away)
    assert sum(a.option == r.answer for a, r in zip(blind, needles)) < len(needles)


def test_count_runs():
    assert count_runs([]) == 0
    assert count_runs([True, True, False, True, False, False, True]) == 3
    assert count_runs([False, False]) == 0
