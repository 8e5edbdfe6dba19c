"""The answerer actor pool on a real local Ray: order, chunking over actors, replacement after ray.kill and after an
engine death, the restart limit, and keyed (idempotent) answers; and the training pool (ScoreJobs to rewards) on
top of it, through an engine death.

The answerer inside the actors is a stand-in that echoes each key with its process id and can "lose its engine" on
cue: the pool is generic over answerers, and a real engine cannot be made to die on cue here. The real vLLM engine
goes through the same pool in test_vllm_answerer.py (including a replacement after ray.kill).
"""
from __future__ import annotations

import functools
import time

import pytest

from tspo_ray.answerers.base import AnswerRequest


def requests(n: int) -> list[AnswerRequest]:
    return [AnswerRequest(f"q#{i}", "v.mp4", (i,), (float(i),), "Q?", ("a", "b")) for i in range(n)]


@pytest.fixture(scope="module")
def local_ray(ray_local):
    return ray_local  # the shared Ray's workers import helpers.echo_answerer


def echo_factory(workdir, **answerer_kwargs):
    from helpers.echo_answerer import EchoAnswerer as Echo  # by module name, so the workers can import it

    return functools.partial(Echo, str(workdir), **answerer_kwargs)


def make_pool(workdir, num_actors=2, max_restarts=2, **answerer_kwargs):
    from tspo_ray.answerers.pool import AnswererActorPool

    return AnswererActorPool(echo_factory(workdir, **answerer_kwargs), num_actors=num_actors,
                             actor_options={"num_cpus": 0.5}, max_restarts=max_restarts)


def kill_and_wait(ray, actor) -> None:
    """ray.kill returns before the actor is gone (a call sent right after may still be answered): wait until a
    call to it fails, so that the pool's next call meets a dead actor."""
    from ray.exceptions import RayActorError

    ray.kill(actor)
    for _ in range(600):
        try:
            ray.get(actor.pid.remote(), timeout=30)
        except RayActorError:
            return
        time.sleep(0.05)
    raise AssertionError("the killed actor still answers")


def test_answers_in_order_spread_over_actors_and_a_killed_actor_replaced(local_ray, tmp_path):
    pool = make_pool(tmp_path)
    reqs = requests(7)
    answers = pool.answer(reqs + reqs[:2])  # repeated keys are answered once
    assert [a.key for a in answers] == [r.key for r in reqs + reqs[:2]]
    pids = {a.text.split("@")[1] for a in answers}
    assert len(pids) == 2  # two contiguous chunks (4 + 3), one per actor
    assert sorted((tmp_path / "answered.txt").read_text().split()) == sorted(r.key for r in reqs)
    assert [s["requests"] for s in pool.stats()] == [4, 3]

    kill_and_wait(local_ray, pool.actors[0])
    answers = pool.answer(requests(3))  # chunks q#0-1 (actor 0, dead) and q#2 (actor 1)
    assert pool.restarts == 1 and [a.key for a in answers] == ["q#0", "q#1", "q#2"]
    pool.shutdown()


def test_every_actor_killed_at_once_is_replaced_and_every_key_answered_once(local_ray, tmp_path):
    pool = make_pool(tmp_path)
    old = local_ray.get([a.pid.remote() for a in pool.actors])
    for actor in list(pool.actors):
        kill_and_wait(local_ray, actor)
    answers = pool.answer(requests(6))
    assert pool.restarts == 2 and [a.key for a in answers] == [f"q#{i}" for i in range(6)]
    assert not set(local_ray.get([a.pid.remote() for a in pool.actors])) & set(old)
    assert sorted((tmp_path / "answered.txt").read_text().split()) == sorted(f"q#{i}" for i in range(6))
    pool.shutdown()


def test_a_replacement_that_fails_to_start_is_replaced_again(local_ray, tmp_path):
    pool = make_pool(tmp_path, max_restarts=2)
    local_ray.get([a.pid.remote() for a in pool.actors])  # both started before the next start is made to fail
    (tmp_path / "fail-next-start").touch()
    kill_and_wait(local_ray, pool.actors[0])
    answers = pool.answer(requests(4))  # actor 0 dead; its replacement fails to start; the next one answers
    assert not (tmp_path / "fail-next-start").exists()  # the failed start happened
    assert pool.restarts == 2 and [a.key for a in answers] == [f"q#{i}" for i in range(4)]
    assert sorted((tmp_path / "answered.txt").read_text().split()) == sorted(f"q#{i}" for i in range(4))
    pool.shutdown()


def test_engine_death_makes_the_actor_exit_and_its_chunk_go_to_a_replacement(local_ray, tmp_path):
    pool = make_pool(tmp_path, die_on="q#5")
    pids = local_ray.get([a.pid.remote() for a in pool.actors])
    answers = pool.answer(requests(8))  # chunks q#0-3 (actor 0) and q#4-7 (actor 1, whose engine dies)
    assert pool.restarts == 1
    assert [a.key for a in answers] == [f"q#{i}" for i in range(8)]
    by_pid = {a.key: int(a.text.split("@")[1]) for a in answers}
    assert by_pid["q#0"] == pids[0] and by_pid["q#5"] != pids[1]  # the lost chunk went to a live actor
    assert local_ray.get(pool.actors[1].pid.remote()) not in pids  # and the dead one was replaced
    # every key answered exactly once, the lost chunk included
    assert sorted((tmp_path / "answered.txt").read_text().split()) == sorted(f"q#{i}" for i in range(8))
    pool.shutdown()


def test_gives_up_after_max_restarts(local_ray, tmp_path):
    from tspo_ray.answerers.errors import AnswerersGaveUp

    pool = make_pool(tmp_path, num_actors=1, max_restarts=1, die_on="q#0", die_always=True)
    with pytest.raises(AnswerersGaveUp, match=r"answerer actors died 2 times; giving up \(max_restarts 1\)"):
        pool.answer(requests(2))
    with pytest.raises(AnswerersGaveUp):  # and stays given up, without starting more actors
        pool.answer(requests(1))
    assert pool.restarts == 2
    pool.shutdown()


def test_training_pool_engine_death_replaces_the_actor_and_scores_every_group_once(local_ray, tmp_path):
    from tspo_ray.data.records import QARecord
    from tspo_ray.distributed.answerer_pool import AnswererPool
    from tspo_ray.training.scoring import ScoreJob

    sets = tuple(((g, g + 1), (float(g), g + 0.5)) for g in range(4))  # set g at g s and g + 0.5 s
    jobs = [ScoreJob(QARecord(f"q{j}", "v.mp4", "Q?", ["a", "b"], "A", "needle", [[0.0, 1.0]]), "v.mp4", sets)
            for j in range(6)]
    pool = AnswererPool(echo_factory(tmp_path, die_on="q3#2:2,3"), num_actors=2, num_cpus=0.5, jobs_per_call=1,
                        max_restarts=2)
    pids = local_ray.get([a.pid.remote() for a in pool.actors])
    results = pool.score(jobs)  # the actor that gets q3 loses its engine, exits, and q3 goes to a live actor
    assert pool.restarts == 1
    new_pids = local_ray.get([a.pid.remote() for a in pool.actors])
    dead = set(pids) - set(new_pids)
    assert len(dead) == 1 and len(set(new_pids) - set(pids)) == 1  # exactly one actor replaced
    assert len(results) == len(jobs)
    for result, texts in results:
        # R_A: A (right) for even sets; R_T: both frames in [0, 1] s for set 0, one of two for set 1
        assert result.rewards.tolist() == [2.0, 0.5, 1.0, 0.0] and result.parse_failures == 0
    assert not {int(t.split("@")[1]) for t in results[3][1]} & dead  # q3 came from a live actor
    # every set of every group answered exactly once, the one lost with the dead engine included
    assert sorted((tmp_path / "answered.txt").read_text().split()) == sorted(
        r.key for job in jobs for r in job.requests())
    pool.shutdown()


def test_answerer_actors_are_shared_out_among_coordinators():
    from tspo_ray.distributed.training import answerer_share

    assert [answerer_share(5, 2, i) for i in range(2)] == [3, 2]
    assert [answerer_share(64, 3, i) for i in range(3)] == [22, 21, 21]
    assert [answerer_share(0, 2, i) for i in range(2)] == [0, 0]  # each coordinator answers itself
    for n, c in [(7, 3), (2, 2), (33, 4)]:
        shares = [answerer_share(n, c, i) for i in range(c)]
        assert sum(shares) == n and max(shares) - min(shares) <= 1


def test_answerer_restarts_are_summed_over_the_coordinators():
    """Each coordinator reports its own pool's count with each batch it returns; the learner logs the sum of the
    latest counts (a restarted coordinator's new pool starts again at 0)."""
    from types import SimpleNamespace

    from tspo_ray.distributed.training import RolloutPipeline

    pipeline = RolloutPipeline(SimpleNamespace(step=0), ["first", "second"], cfg=None)
    assert pipeline.answerer_restarts(0, 1) == 1  # batch 0: the first coordinator
    assert pipeline.answerer_restarts(1, 2) == 3  # batch 1: the second
    assert pipeline.answerer_restarts(2, 1) == 3  # batch 2: the first again, no new restart
    assert pipeline.answerer_restarts(3, 0) == 1  # the second restarted, its new pool at 0


def test_an_equal_cut_gives_pieces_that_differ_by_at_most_one():
    from tspo_ray.distributed.answerer_pool import equal_cut

    assert equal_cut(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert equal_cut(3, 8) == [(0, 1), (1, 2), (2, 3)]  # never an empty call
    assert equal_cut(0, 4) == [] and equal_cut(5, 1) == [(0, 5)]
    for n in range(1, 40):
        for parts in range(1, 20):
            sizes = [b - a for a, b in equal_cut(n, parts)]
            assert sum(sizes) == n and max(sizes) - min(sizes) <= 1 and len(sizes) == min(n, parts)


def test_a_spread_batch_is_sorted_by_video_and_cut_into_equal_calls():
    from tspo_ray.distributed.answerer_pool import pinned_cut, spread_cut, video_slot

    names = ["a", "bb", "ccc", "dddd", "eeeee"]
    paths = [f"videos/{names[i % 5]}.mp4" for i in range(32)]  # 32 jobs on 5 videos (slots 5, 14, 4, 12, 2 of 16)
    groups, slots = spread_cut(paths, 16, 8)
    assert sorted(i for g in groups for i in g) == list(range(32)) and [len(g) for g in groups] == [4] * 8
    order = [i for g in groups for i in g]
    keys = [(video_slot(paths[i], 16), paths[i]) for i in order]
    assert keys == sorted(keys)  # a video's jobs sit together
    for g, slot in zip(groups, slots):
        pins = [video_slot(paths[i], 16) for i in g]
        assert pins.count(slot) == max(pins.count(p) for p in pins)
    # the pinned cut, by contrast, follows the videos: calls as uneven as the videos' shares
    pinned, _ = pinned_cut(paths, 16, 4)  # 7, 7, 6, 6, 6 jobs a video
    assert max(len(g) for g in pinned) == 4 and min(len(g) for g in pinned) < 4


def test_in_process_pool_scores_as_the_one_process_loop_does(tiny_world):
    """train.num_answerers 0: the rollout coordinator answers in its own process (InProcessPool); its rewards and
    answers are those of the one-process loop's reward function, the batch in one call."""
    import torch

    from tspo_ray.answerers import AnswererFactory, build_answerer
    from tspo_ray.data.records import read_records
    from tspo_ray.distributed.answerer_pool import InProcessPool
    from tspo_ray.training.scoring import ScoreJob, score_answers

    records, _ = read_records(tiny_world / "train.jsonl")
    sets = tuple(((i, i + 4), (i / 2, i / 2 + 2)) for i in (0, 4, 8))
    jobs = [ScoreJob(r, str(tiny_world / r.video), sets) for r in records[:5]]
    pool = InProcessPool(AnswererFactory("embedded", {}))
    assert pool.restarts == 0 and pool.gave_up is None and pool.processes() == []
    calls = []
    answer = pool.answerer.answer
    pool.answerer.answer = lambda reqs: calls.append(len(reqs)) or answer(reqs)
    got = pool.score(jobs, times := {})
    assert calls == [len(jobs) * len(sets)]  # one call for the whole batch
    reference = build_answerer("embedded", {})
    for job, (result, texts) in zip(jobs, got):
        answers = reference.answer(job.requests())
        want = score_answers(job, [a.option for a in answers])
        assert torch.equal(result.rewards, want.rewards) and torch.equal(result.r_answer, want.r_answer)
        assert texts == [a.text for a in answers]
    from tspo_ray.answerers.simulated import CALL_TIMES

    assert times == {key: 0.0 for key in CALL_TIMES}  # the embedded answerer models no GPU time
