"""The main job on a local Ray: decoupled rollouts, Ray Train learner, MLflow, checkpoints, exact resume."""
import json
import pytest
import torch

from tspo_ray.checkpoint import load_checkpoint


def job_overrides(world, clip, out, steps=4, extra=()):
    enc = f"{{backend: hf, model: {clip}}}"
    return [
        f"data.root={world}", f"features.encoder={enc}", f"features.store={out}/features",
        f"answerer.settings={{encoder: {enc}}}", "features.max_candidates=32", "policy.num_frames=4",
        "policy.group_size=4", f"train.steps={steps}", "train.questions_per_step=4", "train.checkpoint_every=1",
        "train.num_answerers=2", "train.answerer_cpus=0.25", f"train.output_dir={out}/run", "agent.heads=4",
        "eval.num_plots=1", f"tracking.tracking_uri=sqlite:///{out}/mlflow.db", *extra,
    ]


def test_train_job_end_to_end_and_exact_resume(ray_local, tiny_world, tiny_hf_clip, tmp_path):
    from train import main

    straight = tmp_path / "straight"
    assert main(job_overrides(tiny_world, tiny_hf_clip, straight) + ["--results", str(straight / "results.json")]) == 0
    results = json.loads((straight / "results.json").read_text())["results"]
    assert set(results) == {"uniform", "clip-top-k", "agent"}
    for r in results.values():
        assert r["questions"] > 0 and 0 <= r["accuracy"] <= 1 and set(r["per_family"]) <= {
            "needle_attribute", "relation", "position", "counting"}
    assert list((straight / "run" / "eval" / "plots").glob("*.png"))

    # MLflow: one run with the config, per-step metrics, the table and the model
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{straight}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tspo-ray").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["policy.group_size"] == "4"
    for key in ("reward", "r_answer", "r_temporal", "accuracy", "clip_fraction", "approx_kl", "entropy", "tau",
                "staleness", "zero_variance_fraction", "rollout_groups_per_s", "learner_groups_per_s"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 4, key
    assert max(m.value for m in client.get_metric_history(run.info.run_id, "staleness")) <= 1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"eval", "checkpoint", "agent"} <= artifacts
    model_files = {a.path for a in client.list_artifacts(run.info.run_id, "agent")}
    assert model_files == {"agent/agent.safetensors", "agent/agent_config.json"}  # safe formats, no pickle

    # interrupted after 2 steps, then resumed: same data order, same step count
    broken = tmp_path / "broken"
    assert main(job_overrides(tiny_world, tiny_hf_clip, broken) + ["--stop-after", "2"]) == 0
    assert load_checkpoint(broken / "run" / "checkpoints")["step"] == 2
    assert main(job_overrides(tiny_world, tiny_hf_clip, broken) + ["--resume"]) == 0
    a = load_checkpoint(straight / "run" / "checkpoints")
    b = load_checkpoint(broken / "run" / "checkpoints")
    assert a["step"] == b["step"] == 4
    assert a["history"] == b["history"] and a["data_position"] == b["data_position"]


def test_killed_answerer_is_replaced_without_losing_or_repeating_groups(ray_local, tiny_world, tiny_hf_clip):
    from tspo_ray.answerers import AnswererFactory, build_answerer
    from tspo_ray.data.records import read_records
    from tspo_ray.distributed.answerer_pool import AnswererPool, ScoreJob, score_answers

    records, _ = read_records(tiny_world / "train.jsonl")
    settings = {"encoder": {"backend": "hf", "model": tiny_hf_clip}}
    jobs = [ScoreJob(r, str(tiny_world / r.video), tuple(((i, i + 4), (i / 2, i / 2 + 2)) for i in range(0, 16, 4)))
            for r in records[:12]]
    pool = AnswererPool(AnswererFactory("embedded", settings), num_actors=2, num_cpus=0.25, jobs_per_call=1)
    import ray

    ray.get([a.pid.remote() for a in pool.actors])  # both up
    victim = pool.actors[0]
    ray.kill(victim)  # dies before its chunk arrives: the chunk must be re-run once on a replacement
    results = pool.score(jobs)
    assert pool.restarts >= 1 and pool.actors[0] != victim
    local = build_answerer("embedded", settings)
    assert len(results) == len(jobs)
    for job, (result, texts) in zip(jobs, results):
        expected = score_answers(job, [a.option for a in local.answer(job.requests())])
        assert torch.equal(result.rewards, expected.rewards) and len(texts) == len(job.sets)
    pool.shutdown()


def test_bad_config_is_rejected_with_the_field_name(capsys):
    from train import main

    assert main(["grpo.clip_eps=1.5"]) == 2
    assert "grpo.clip_eps" in capsys.readouterr().err
    assert main(["policy.groupsize=4"]) == 2
    assert "policy.groupsize: unknown option" in capsys.readouterr().err
