"""The simulated answerer: the embedded answerer's answers after a modelled Video-MLLM latency, several simulated
GPUs per actor process."""
import time

import pytest

from tspo_ray.answerers import build_answerer
from tspo_ray.answerers.simulated import LatencyModel, SimulatedAnswerer, SimulatedSettings
from tspo_ray.config import ConfigError


def test_latency_is_per_call_plus_per_request_plus_per_frame():
    m = LatencyModel(per_call_s=0.1, per_request_s=0.01, per_frame_s=0.02)
    assert m.seconds([4, 4, 4]) == pytest.approx(0.1 + 3 * (0.01 + 4 * 0.02))
    assert m.seconds([]) == 0.0
    assert m.question_seconds(8, 16, questions_per_call=4) == pytest.approx((0.1 + 32 * (0.01 + 0.32)) / 4)
    # the defaults: a 7B Video-MLLM on one GPU, G=8 sets of T_s=8 frames in 0.77 s of prefill plus 0.10 s a call
    d = LatencyModel()
    assert d.per_call_s == pytest.approx(0.10176)
    assert 8 * (d.per_request_s + 8 * d.per_frame_s) == pytest.approx(8 * (150 + 8 * 196) / 17_900)
    scaled = SimulatedSettings.load({"time_scale": 0.5, "per_call_s": 1.0}).latency()
    assert scaled.per_call_s == 0.5 and scaled.per_frame_s == pytest.approx(0.5 * 196 / 17_900)


@pytest.mark.parametrize("settings, field", [({"per_cal_s": 1}, "per_cal_s"), ({"per_frame_s": -1}, "per_frame_s"),
                                             ({"time_scale": 0}, "time_scale"), ({"gpus_per_actor": 0}, "gpus_per_actor"),
                                             ({"inner_kind": "simulated"}, "inner_kind")])
def test_bad_settings_name_the_field(settings, field):
    with pytest.raises(ConfigError, match=f"answerer.settings.{field}"):
        SimulatedSettings.load(settings)


class Recorder:
    name = "recorder"

    def __init__(self):
        self.seen = []

    def answer(self, requests):
        self.seen.append([r.key for r in requests])
        return [f"answer {r.key}" for r in requests]


def test_sleeps_what_the_inner_compute_left_and_counts_overruns():
    from tspo_ray.answerers.base import AnswerRequest

    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    inner = Recorder()
    sim = SimulatedAnswerer(inner, LatencyModel(1.0, 0.1, 0.05), sleep=sleep, clock=lambda: now[0])
    reqs = [AnswerRequest(f"q#{g}", "v.mp4", (1, 2, 3, 4), (0.0, 1.0, 2.0, 3.0), "q?", ("a", "b")) for g in range(2)]
    assert sim.answer(reqs) == ["answer q#0", "answer q#1"] and inner.seen == [["q#0", "q#1"]]
    assert slept == [pytest.approx(1.0 + 2 * (0.1 + 0.2))]
    inner.answer = lambda requests: (now.__setitem__(0, now[0] + 5.0), ["x"] * len(requests))[1]  # slower than a GPU
    sim.answer(reqs)
    s = sim.stats
    assert len(slept) == 1 and s["calls"] == 2 and s["overrun_calls"] == 1
    assert s["overrun_s"] == pytest.approx(5.0 - 1.6) and s["modelled_s"] == pytest.approx(3.2)


def test_answers_are_the_embedded_answerers(tiny_world, tiny_hf_clip):
    from tspo_ray.data.records import read_records
    from tspo_ray.training.scoring import ScoreJob

    records, _ = read_records(tiny_world / "train.jsonl")
    enc = {"encoder": {"backend": "hf", "model": tiny_hf_clip}}
    jobs = [ScoreJob(r, str(tiny_world / r.video), tuple(((i, i + 4), (i / 2, i / 2 + 2)) for i in range(0, 16, 4)))
            for r in records[:6]]
    requests = [r for job in jobs for r in job.requests()]
    sim = build_answerer("simulated", {"inner_settings": enc, "per_call_s": 0.2, "per_request_s": 0.0,
                                       "per_frame_s": 0.0})
    t0 = time.perf_counter()
    got = sim.answer(requests)
    assert time.perf_counter() - t0 >= 0.2  # never earlier than the model would
    want = build_answerer("embedded", enc).answer(requests)
    assert [(a.key, a.option) for a in got] == [(a.key, a.option) for a in want]
    assert sim.name.startswith("simulated:embedded")


def test_several_simulated_gpus_share_one_process_and_answer_at_once(ray_local, tiny_world, tiny_hf_clip):
    from tspo_ray.answerers import AnswererFactory, slots_per_actor
    from tspo_ray.answerers.pool import AnswererActorPool
    from tspo_ray.data.records import read_records
    from tspo_ray.training.scoring import ScoreJob

    settings = {"inner_settings": {"encoder": {"backend": "hf", "model": tiny_hf_clip}}, "per_call_s": 2.0,
                "gpus_per_actor": 2}
    assert slots_per_actor("simulated", settings) == 2
    pool = AnswererActorPool(AnswererFactory("simulated", settings), num_actors=4,
                             actor_options={"num_cpus": 0.25}, slots_per_actor=2)
    assert len(pool.actors) == 4 and len(pool.processes()) == 2
    pool.ready()
    records, _ = read_records(tiny_world / "train.jsonl")
    jobs = [ScoreJob(r, str(tiny_world / r.video), (((0, 4), (0.0, 2.0)),)) for r in records[:4]]
    chunks = [job.requests() for job in jobs]
    answers = pool.answer_chunks(chunks)
    assert len(answers) == 4
    # 4 chunks on 4 slots: each process answered 2 calls at the same time (the 2 s calls overlapped)
    assert [s["max_in_flight"] for s in pool.stats()] == [2, 2]
    assert [s["calls"] for s in pool.stats()] == [2, 2]
    pool.shutdown()


class Labeller:
    """A deterministic inner answerer that records what reached it: the answer is a function of the frames."""

    name = "labeller"

    def __init__(self):
        self.seen = []

    def answer(self, requests):
        from tspo_ray.answerers.base import Answer

        self.seen.extend(r.key for r in requests)
        return [Answer(r.key, "ABCD"[sum(r.frame_indices) % 4], "ABCD"[sum(r.frame_indices) % 4]) for r in requests]


def request(key, frames, question="q?"):
    from tspo_ray.answerers.base import AnswerRequest

    return AnswerRequest(key, "v.mp4", tuple(frames), tuple(float(f) for f in frames), question, ("a", "b", "c", "d"))


def test_a_frame_set_shown_again_is_answered_from_the_cache_with_its_own_answer():
    inner = Labeller()
    sim = SimulatedAnswerer(inner, LatencyModel(0.0, 0.0, 0.0), cache_size=100)
    first = sim.answer([request("q#0", (1, 2)), request("q#1", (1, 3)), request("q#2", (1, 2))])
    # within a call: the repeated set reaches the inner answerer once
    assert inner.seen == ["q#0", "q#1"] and [a.key for a in first] == ["q#0", "q#1", "q#2"]
    assert [a.option for a in first] == ["D", "A", "D"]
    # a later call (a later step): cached sets cost nothing, a new question or new frames are answered
    again = sim.answer([request("p#5", (1, 3)), request("p#6", (1, 3), "other?"), request("p#7", (2, 2))])
    assert inner.seen == ["q#0", "q#1", "p#6", "p#7"]
    assert [(a.key, a.option) for a in again] == [("p#5", "A"), ("p#6", "A"), ("p#7", "A")]
    assert sim.stats["cache_hits"] == 2


def test_the_cache_keeps_its_size_dropping_the_least_recent():
    inner = Labeller()
    sim = SimulatedAnswerer(inner, LatencyModel(0.0, 0.0, 0.0), cache_size=2)
    sim.answer([request("a", (1,)), request("b", (2,))])
    sim.answer([request("a2", (1,))])  # (1,) is now the most recent
    sim.answer([request("c", (3,))])  # drops (2,)
    sim.answer([request("a3", (1,)), request("b2", (2,))])
    assert inner.seen == ["a", "b", "c", "b2"]


def test_without_a_cache_every_request_reaches_the_inner_answerer():
    inner = Labeller()
    sim = SimulatedAnswerer(inner, LatencyModel(0.0, 0.0, 0.0))
    sim.answer([request("a", (1,)), request("b", (1,))])
    assert inner.seen == ["a", "b"] and sim.stats["cache_hits"] == 0
    assert SimulatedSettings.load({}).answer_cache > 0  # on by default for the benchmarks and jobs
    with pytest.raises(ConfigError, match="answerer.settings.answer_cache"):
        SimulatedSettings.load({"answer_cache": -1})


def test_each_answer_carries_its_share_of_the_calls_compute_modelled_and_overrun_time():
    from tspo_ray.answerers.simulated import CALL_TIMES

    now = [0.0]
    inner = Labeller()
    slow = inner.answer
    inner.answer = lambda requests: (now.__setitem__(0, now[0] + 3.0), slow(requests))[1]  # 3 s of compute
    sim = SimulatedAnswerer(inner, LatencyModel(1.0, 0.0, 0.0), sleep=lambda s: now.__setitem__(0, now[0] + s),
                            clock=lambda: now[0], cache_size=10)
    got = sim.answer([request("a", (1,)), request("b", (2,))])
    totals = {k: sum(a.extra[k] for a in got) for k in CALL_TIMES}
    assert totals == pytest.approx({"sim_compute_s": 3.0, "sim_modelled_s": 1.0, "sim_overrun_s": 2.0})
    again = sim.answer([request("c", (1,)), request("d", (2,))])  # both cached: no compute, no overrun
    assert sum(a.extra["sim_overrun_s"] for a in again) == 0.0 and sum(a.extra["sim_modelled_s"] for a in again) == 1.0
