"""A training job on a real local Ray outlives the SIGKILL of any one of its processes: the Ray Train learner worker,
the rollout coordinator, one answerer actor, every answerer actor at once, and the driver (followed by --resume);
each run ends with the weights of an uninterrupted run. Past a restart limit the job stops with one line that says
what died, how often, the newest checkpoint and the --resume command."""
from __future__ import annotations

import pytest
from helpers.features import assert_same_entries
from helpers.jobs import job_overrides
from helpers.scripts import load_script

from tspo_ray.checkpoint import load_checkpoint
from tspo_ray.distributed.chaos import kill_at_step

STEPS = 6
KILL_AT = 2  # once the checkpoint of this step is written


def opts(world, clip, out, store, extra=()):

    return job_overrides(world, clip, out, steps=STEPS, store=store,
                         extra=["eval.selectors=[agent]", "train.max_lag=1", *extra])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("chaos_store")  # one feature store for every run here


@pytest.fixture(scope="module")
def reference(tiny_world, tiny_hf_clip, store):
    """The uninterrupted run (the single-process loop, which trains the Ray path's weights)."""
    main = load_script("jobs/train.py").main

    out = store / "reference"
    assert main(opts(tiny_world, tiny_hf_clip, out, store) + ["--local", "--stop-after", str(STEPS)]) == 0
    return load_checkpoint(out / "run" / "checkpoints")


def assert_uninterrupted(out, reference):
    import torch

    final = load_checkpoint(out / "run" / "checkpoints")
    assert final["step"] == STEPS and final["history"] == reference["history"]
    for name, value in reference["agent"].items():
        torch.testing.assert_close(final["agent"][name], value, rtol=0, atol=1e-6, msg=name)


def mlflow_runs(out):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    return client, client.search_runs([client.get_experiment_by_name("tspo-ray").experiment_id])


def run_with_kill(ray_local, world, clip, out, store, kind, how_many=1, extra=()):
    main = load_script("jobs/train.py").main

    killer = kill_at_step(out / "run" / "checkpoints", KILL_AT, kind, how_many)
    try:
        code = main(opts(world, clip, out, store, extra) + ["--stop-after", str(STEPS)])
    finally:
        killer.stop()
    assert killer.killed, f"no {kind} process was killed"
    return code


def test_killed_learner_worker_is_restarted_and_continues_the_same_run(ray_local, tiny_world, tiny_hf_clip,
                                                                        store, reference, tmp_path):
    assert run_with_kill(ray_local, tiny_world, tiny_hf_clip, tmp_path, store, "learner") == 0
    assert_uninterrupted(tmp_path, reference)
    client, runs = mlflow_runs(tmp_path)
    assert len(runs) == 1  # the restarted worker logged into the same MLflow run
    assert {m.step for m in client.get_metric_history(runs[0].info.run_id, "reward")} == set(range(1, STEPS + 1))


def test_killed_feature_workers_lose_no_entry_and_duplicate_none(ray_local, tiny_world, tmp_path):
    """Every Ray Data worker of the pipeline (decoder and encoder) SIGKILLed once the first entry is written: Ray
    Data restarts them and retries their rows; the counts and the entries are an uninterrupted run's."""

    from tspo_ray.distributed.chaos import KillWhen, kill_processes
    from tspo_ray.distributed.feature_pipeline import extract_with_ray
    from tspo_ray.video.encoders import load_encoder
    from tspo_ray.video.features import FeatureStore, StoreSpec

    videos = sorted(str(p) for p in (tiny_world / "videos").glob("*.mp4"))
    spec_dict = {"backend": "embedded"}
    spec = StoreSpec(2.0, 64, 32, load_encoder(spec_dict).name)
    kwargs = dict(num_workers=1, cpus_per_worker=0.5, decode_cpus=0.5, progress=False, chunk=16)
    straight = FeatureStore(tmp_path / "straight")
    expected = extract_with_ray(videos, spec_dict, spec, straight, **kwargs)
    assert expected["encoded"] == len(videos)

    store = FeatureStore(tmp_path / "killed")
    written = lambda: len(list((store.root / "videos").glob("*.safetensors")))  # noqa: E731
    at_kill = []
    kill_all = lambda: at_kill.append(written()) or kill_processes("feature_worker", None)  # noqa: E731
    killer = KillWhen(lambda: written() >= 1, kill_all, poll_s=0.01)
    killer.start()
    try:
        counts = extract_with_ray(videos, spec_dict, spec, store, **kwargs)
    finally:
        killer.stop()
    assert killer.killed and at_kill[-1] < len(videos), f"killed {killer.killed} with {at_kill} entries written"
    assert counts == expected
    assert written() == len(videos) and not store.errors()
    assert_same_entries(videos, spec, store, straight)


@pytest.mark.parametrize("kind,how_many,extra", [("coordinator", 1, ()), ("coordinator", 1, ("train.num_coordinators=1",)),
                                                 ("answerer", 1, ()), ("answerer", None, ())],
                         ids=["one_of_two_coordinators", "the_only_coordinator", "one_answerer", "all_answerers"])
def test_killed_rollout_process_is_replaced_and_the_run_ends_with_the_uninterrupted_weights(
        ray_local, tiny_world, tiny_hf_clip, store, reference, tmp_path, kind, how_many, extra):
    assert run_with_kill(ray_local, tiny_world, tiny_hf_clip, tmp_path, store, kind, how_many, extra) == 0
    assert_uninterrupted(tmp_path, reference)
    client, runs = mlflow_runs(tmp_path)
    metric = "coordinator_restarts" if kind == "coordinator" else "answerer_restarts"
    restarts = max(m.value for m in client.get_metric_history(runs[0].info.run_id, metric))
    # it did die: a killed coordinator, or every answerer killed, must be replaced. One answerer of two may be sent
    # nothing after the kill (each video's jobs go to the actor its path hashes to, and the tiny world's three
    # training videos need not cover both), so the pool may finish without meeting it; the weights above are the
    # uninterrupted run's either way.
    assert restarts >= 1 or (kind, how_many) == ("answerer", 1), restarts


def test_killed_driver_then_resume_ends_with_the_uninterrupted_weights(ray_local, tiny_world, tiny_hf_clip, store,
                                                                       reference, tmp_path):
    """The driver process (jobs/train.py) SIGKILLed: nothing restarts it; `--resume` continues the run."""
    import os
    import signal
    import subprocess
    import sys

    main = load_script("jobs/train.py").main

    from tspo_ray.checkpoint import latest_step
    from tspo_ray.distributed.chaos import KillWhen

    job = [sys.executable, "jobs/train.py", *opts(tiny_world, tiny_hf_clip, tmp_path, store), "--stop-after",
           str(STEPS)]
    # its own session, so that the Ray it starts can be cleaned up after the kill
    proc = subprocess.Popen(job, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = tmp_path / "run" / "checkpoints"
    killer = KillWhen(lambda: latest_step(ckpt) >= KILL_AT or proc.poll() is not None,
                      lambda: [proc.pid] if proc.poll() is None and not os.kill(proc.pid, signal.SIGKILL) else [-1])
    killer.run()  # in this thread: returns once it killed (or the job ended first)
    proc.wait(timeout=60)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # what the driver's local Ray left behind
    except ProcessLookupError:
        pass
    assert killer.killed == [proc.pid] and proc.returncode == -signal.SIGKILL
    assert KILL_AT <= latest_step(ckpt) < STEPS
    assert main(opts(tiny_world, tiny_hf_clip, tmp_path, store) + ["--resume", "--stop-after", str(STEPS)]) == 0
    assert_uninterrupted(tmp_path, reference)
    client, runs = mlflow_runs(tmp_path)
    assert len(runs) == 1  # the resumed job continued the killed job's MLflow run


@pytest.mark.parametrize("kind,limit,said", [
    ("learner", "train.max_failures=0", "the Ray Train learner worker died once (train.max_failures=0)"),
    ("answerer", "train.answerer_max_restarts=0", "answerer actors died once; giving up (max_restarts 0)"),
], ids=["learner", "answerer"])
def test_past_the_restart_limit_the_job_ends_with_one_line_saying_what_died(ray_local, tiny_world, tiny_hf_clip,
                                                                            store, tmp_path, capsys, kind, limit,
                                                                            said):
    code = run_with_kill(ray_local, tiny_world, tiny_hf_clip, tmp_path, store, kind, extra=[limit])
    assert code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and said in last, last
    assert f"newest checkpoint {tmp_path / 'run' / 'checkpoints'}" in last and "resume with: python jobs/train.py " \
        "--resume " in last, last
