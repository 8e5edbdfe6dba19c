"""The main job on a local Ray: decoupled rollouts, Ray Train learner, MLflow, checkpoints, exact resume."""
import json

import pytest
import torch
from helpers.jobs import job_overrides
from helpers.scripts import load_script

from tspo_ray.checkpoint import best_checkpoint, load_checkpoint
from tspo_ray.config import FULL_SUITE, load_config
from tspo_ray.method.selection_methods import SET_METHODS
from tspo_ray.synthetic.families import load_families
from tspo_ray.training.model_selection import AGENT_MODES


def test_train_job_end_to_end(ray_local, tiny_world, tiny_hf_clip, tmp_path):
    main = load_script("jobs/train.py").main

    straight = tmp_path / "straight"
    assert main(job_overrides(tiny_world, tiny_hf_clip, straight, extra=["train.eval_every=2"])
                + ["--results", str(straight / "results.json")]) == 0
    results = json.loads((straight / "results.json").read_text())["results"]
    shipped = {f.name for f in load_families()}  # the world's questions come from the shipped family files
    # every baseline, every agent mode (a set-aware kind's own greedy decode too), and the default
    default = load_config(load_script("jobs/train.py").parse_args([]).config)
    set_aware = default.agent.kind != "eq3"
    assert list(results) == [*FULL_SUITE[:-1], *(f"agent:{m}" for m in SET_METHODS if set_aware), "agent"]
    assert list(results) == list(default.eval.selectors)
    final = load_checkpoint(best_checkpoint(straight / "run" / "checkpoints"))  # the one evaluated
    chosen = final["inference_mode"]  # chosen on the validation split, recorded with the checkpoint
    assert set(final["inference_mode_validation"]) == set(AGENT_MODES) | (set(SET_METHODS) if set_aware else set())
    assert final["inference_mode_validation"][chosen] == max(final["inference_mode_validation"].values())
    assert results["agent"]["accuracy"] == results[f"agent:{chosen}"]["accuracy"]
    # each row of the table is the share of its selector's answers that name the record's answer
    rows = [json.loads(line) for line in (straight / "run" / "eval" / "selections.jsonl").read_text().splitlines()]
    assert all(row["correct"] == float(row["predicted"] == row["answer"]) for row in rows)
    for method, r in results.items():
        correct = [row["correct"] for row in rows if row["method"] == method]
        assert r["questions"] == len(correct) > 0 and set(r["per_family"]) <= shipped
        assert r["accuracy"] == pytest.approx(sum(correct) / len(correct)), method
    assert list((straight / "run" / "eval" / "plots").glob("*.png"))

    # MLflow: one run with the config, per-step metrics, the table and the model
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{straight}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tspo-ray").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["policy.group_size"] == "4"
    assert run.data.tags["default_inference_mode"] == f"agent:{chosen}"
    for key in ("reward", "r_answer", "r_temporal", "accuracy", "clip_fraction", "approx_kl", "entropy", "tau",
                "staleness", "zero_variance_fraction", "rollout_groups_per_s", "learner_groups_per_s"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 4, key
    assert max(m.value for m in client.get_metric_history(run.info.run_id, "staleness")) <= 1
    # periodic validation on the Ray path (the coordinator's answerer pool): steps 2 and 4, the best one evaluated
    val = client.get_metric_history(run.info.run_id, "val/accuracy")
    assert [m.step for m in val] == [2, 4]
    best = best_checkpoint(straight / "run" / "checkpoints")
    assert load_checkpoint(best)["best_val"] == max(m.value for m in val)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"eval", "checkpoint", "agent"} <= artifacts
    model_files = {a.path for a in client.list_artifacts(run.info.run_id, "agent")}
    assert model_files == {"agent/agent.safetensors", "agent/agent_config.json"}  # safe formats, no pickle

    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((straight.as_uri(), f"file://{straight}"))  # beside the store, not ./mlruns


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:  # separate processes may sum in another order: equal up to float rounding
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("max_lag,answerers,coordinators", [(0, 0, 1), (1, 2, 2)])
def test_resume_on_ray_and_across_loops_gives_the_uninterrupted_weights(ray_local, tiny_world, tiny_hf_clip, tmp_path,
                                                                       max_lag, answerers, coordinators):
    """Killed at step 2 of 4 and resumed: the same question ids per step and the same final weights as a run that
    was never interrupted, on Ray, from a local checkpoint onto Ray, and from a Ray checkpoint onto the local loop.
    The uninterrupted reference is the single-process loop, so this also shows both loops train the same weights
    (with needle questions over haystacks at max_lag 1; at max_lag 0 the rollout coordinator answers in its own
    process, train.num_answerers 0; at max_lag 1, two coordinators, batches alternating between them, one answerer
    actor each; one coordinator with answerer actors trains the one-process weights in test_cluster.py)."""
    import shutil

    from mlflow.tracking import MlflowClient
    main = load_script("jobs/train.py").main

    store = tmp_path  # one feature store for every run here
    # at max_lag 1 every needle question is asked over a haystack: built alike by the coordinator and the local loop
    haystacks = ["haystack.probability=1", "haystack.chunk_frames=8", "haystack.other_chunks=3"] if max_lag else []
    opts = lambda out: job_overrides(tiny_world, tiny_hf_clip, out, store=store,  # noqa: E731
                                     extra=[f"train.max_lag={max_lag}", f"train.num_answerers={answerers}",
                                            f"train.num_coordinators={coordinators}",
                                            "eval.selectors=[agent]", *haystacks])
    straight = tmp_path / "straight"
    assert main(opts(straight) + ["--local", "--stop-after", "4"]) == 0  # all 4 steps; no evaluation needed
    reference = load_checkpoint(straight / "run" / "checkpoints")
    assert reference["step"] == 4

    def resume_and_compare(out, how):
        assert load_checkpoint(out / "run" / "checkpoints")["step"] == 2
        assert main(opts(out) + how + ["--resume", "--stop-after", "4"]) == 0, out.name
        resumed = load_checkpoint(out / "run" / "checkpoints")
        assert resumed["step"] == 4 and resumed["history"] == reference["history"], out.name
        assert resumed["data_position"] == reference["data_position"], out.name
        assert_same_weights(resumed["agent"], reference["agent"])

    ray_first = tmp_path / "ray_to_ray"
    assert main(opts(ray_first) + ["--stop-after", "2"]) == 0
    if max_lag:
        shutil.copytree(ray_first, tmp_path / "ray_to_local")
        local_first = tmp_path / "local_to_ray"
        assert main(opts(local_first) + ["--local", "--stop-after", "2"]) == 0
        resume_and_compare(local_first, [])
        resume_and_compare(tmp_path / "ray_to_local", ["--local"])
    resume_and_compare(ray_first, [])
    # the resumed job continued the interrupted job's MLflow run: one run, one metric point per step
    client = MlflowClient(f"sqlite:///{ray_first}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tspo-ray").experiment_id])
    assert len(runs) == 1 and runs[0].data.tags.get("resumed") == "true"
    assert runs[0].info.status == "KILLED"  # stopped at --stop-after, so not FINISHED, and not left RUNNING
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "reward")] == [1, 2, 3, 4]


def test_killed_answerer_is_replaced_without_losing_or_repeating_groups(ray_local, tiny_world, tiny_hf_clip):
    from tspo_ray.answerers import AnswererFactory, build_answerer
    from tspo_ray.data.records import read_records
    from tspo_ray.distributed.answerer_pool import AnswererPool
    from tspo_ray.training.scoring import ScoreJob, score_answers

    records, _ = read_records(tiny_world / "train.jsonl")
    settings = {"encoder": {"backend": "hf", "model": tiny_hf_clip}}
    jobs = [ScoreJob(r, str(tiny_world / r.video), tuple(((i, i + 4), (i / 2, i / 2 + 2)) for i in range(0, 16, 4)))
            for r in records[:12]]
    pool = AnswererPool(AnswererFactory("embedded", settings), num_actors=2, num_cpus=0.25, jobs_per_call=1)
    import ray

    ray.get([a.pid.remote() for a in pool.actors])  # both up
    slot = pool.slot_of(jobs[0].video_path)  # the actor the first video's jobs are pinned to
    victim = pool.actors[slot]
    ray.kill(victim)  # dies before its chunk arrives: the chunk must be re-run once on a replacement
    results = pool.score(jobs)
    assert pool.restarts >= 1 and pool.actors[slot] != victim
    local = build_answerer("embedded", settings)
    assert len(results) == len(jobs)
    for job, (result, texts) in zip(jobs, results):
        expected = score_answers(job, [a.option for a in local.answer(job.requests())])
        assert torch.equal(result.rewards, expected.rewards) and len(texts) == len(job.sets)
    pool.shutdown()


def test_each_video_is_answered_by_one_actor_so_frame_caches_do_not_overlap(ray_local, tiny_world, tiny_hf_clip):
    from tspo_ray.answerers import AnswererFactory
    from tspo_ray.data.records import read_records
    from tspo_ray.distributed.answerer_pool import AnswererPool
    from tspo_ray.training.scoring import ScoreJob

    records, _ = read_records(tiny_world / "train.jsonl")
    jobs = [ScoreJob(r, str(tiny_world / r.video), (((i, i + 4), (i / 2, i / 2 + 2)),)) for i, r in enumerate(records)]
    videos = {job.video_path for job in jobs}
    assert len(videos) >= 2
    settings = {"encoder": {"backend": "hf", "model": tiny_hf_clip}}
    pool = AnswererPool(AnswererFactory("embedded", settings), num_actors=2, num_cpus=0.25, jobs_per_call=1)
    pool.score(jobs)
    cached = [s["cached_videos"] for s in pool.stats()]
    assert sum(cached) == len(videos)  # no video decoded by both actors
    pool.shutdown()


def test_bad_config_is_rejected_with_the_field_name(capsys):
    main = load_script("jobs/train.py").main

    assert main(["grpo.clip_eps=1.5"]) == 2
    assert "grpo.clip_eps" in capsys.readouterr().err
    assert main(["policy.groupsize=4"]) == 2
    assert "policy.groupsize: unknown option" in capsys.readouterr().err
