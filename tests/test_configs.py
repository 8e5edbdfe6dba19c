"""Shipped configs load and validate and can run where cluster.yaml puts them; the cluster launcher file passes
Ray's own schema. The Ray options are checked as computed (tspo_ray.distributed.placement), so no GPU is needed."""
from pathlib import Path

import pytest
import yaml

from tspo_ray.answerers import accepted_frames, check_config
from tspo_ray.config import ConfigError, is_cuda, load_config
from tspo_ray.distributed.placement import answerer_actor_options, encoder_actor_options, learner_scaling

ROOT = Path(__file__).resolve().parents[1]
JOB_CONFIGS = [p for p in sorted((ROOT / "configs").glob("*.yaml")) if p.name != "serve.yaml"]  # serve: Ray Serve's
BENCH_CONFIGS = [p for p in JOB_CONFIGS if p.name.startswith("bench_")]  # jobs/evaluate.py --benchmark: no training
REAL_MODEL_CONFIGS = [p for p in JOB_CONFIGS if not p.name.startswith("embedded") and p not in BENCH_CONFIGS]
NODE_TYPES = yaml.safe_load((ROOT / "cluster.yaml").read_text())["available_node_types"]


def fits_a_node(cpus: float, gpus: float, custom: dict) -> list[str]:
    """The cluster.yaml node types that offer an actor's CPUs, GPUs and custom resources."""
    return [name for name, t in NODE_TYPES.items()
            if t["resources"].get("CPU", 0) >= cpus and t["resources"].get("GPU", 0) >= gpus
            and all(t["resources"].get(k, 0) >= v for k, v in custom.items())]


@pytest.mark.parametrize("path", JOB_CONFIGS, ids=lambda p: p.name)
def test_configs_validate(path):
    """Each shipped config loads, and every value its file sets is the value the job gets."""
    assert not differences(yaml.safe_load(path.read_text()), load_config(path).to_dict()), path.name


def differences(written, loaded, where: str = "") -> list[str]:
    """Where a value written in a config file is not the loaded one (the loaded side also holds the defaults)."""
    if isinstance(written, dict):
        if not isinstance(loaded, dict):
            return [f"{where}: {loaded!r}"]
        return [d for k, v in written.items() for d in differences(v, loaded.get(k), f"{where}.{k}".lstrip("."))]
    if isinstance(written, list) and isinstance(loaded, (list, tuple)):
        return [] if list(loaded) == written else [f"{where}: {loaded!r} != {written!r}"]
    return [] if loaded == written else [f"{where}: {loaded!r} != {written!r}"]


def test_the_config_comparison_names_each_difference():
    loaded = {"policy": {"group_size": 8, "tau_start": 0.3}, "features": {"encoder": {"backend": "hf", "x": 1}}}
    assert differences({"policy": {"group_size": 8}, "features": {"encoder": {"backend": "hf"}}}, loaded) == []
    assert differences({"policy": {"group_size": 4}, "features": {"encoder": {"backend": "embedded"}}}, loaded) == [
        "policy.group_size: 8 != 4", "features.encoder.backend: 'hf' != 'embedded'"]


def test_cluster_yaml_matches_ray_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(cfg))
    types = cfg["available_node_types"]
    assert types["rollout"]["resources"]["rollout"] >= 1 and types["learner"]["resources"]["learner"] == 1


def test_overrides_and_errors(tmp_path):
    cfg = load_config(overrides=["grpo.lr=3e-3", "eval.selectors=[uniform, agent]", "features.frame_size=null"])
    assert cfg.grpo.lr == 0.003 and cfg.eval.selectors == ["uniform", "agent"] and cfg.features.frame_size is None
    assert cfg.flat()["policy.group_size"] == 8
    for bad, field in [("grpo.clip_eps=0", "grpo.clip_eps"), ("policy.likelihood=exact", "policy.likelihood"),
                       ("train.steps=1.5", "train.steps"), ("grpo.filter_zero_variance=maybe", "grpo.filter_zero_variance"),
                       ("eval.selectors=[best]", "eval.selectors[0]"), ("nosuch.key=1", "nosuch"),
                       ("policy.group_size=1", "policy.group_size")]:
        with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
            load_config(overrides=[bad])
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("path", JOB_CONFIGS, ids=lambda p: p.name)
def test_config_frames_devices_and_resources(path):
    cfg = load_config(path)
    limit = accepted_frames(cfg.answerer.kind, cfg.answerer.settings)
    if limit is not None:
        assert cfg.eval.num_frames <= limit and cfg.policy.num_frames <= limit
    enc = encoder_actor_options(cfg)
    assert (enc["num_gpus"] > 0) == is_cuda(cfg.features.encoder.device)
    learner = learner_scaling(cfg)
    assert learner["num_workers"] == 1
    assert learner["use_gpu"] == (cfg.train.learner_device == "cuda") == ("GPU" in learner["resources_per_worker"])
    ans = answerer_actor_options(cfg)
    if path.name.startswith("embedded"):  # runs on a laptop: no GPU, no custom resource anywhere
        assert enc["num_gpus"] == ans["num_gpus"] == 0 and not learner["use_gpu"]
        assert "resources" not in enc and "resources" not in ans and set(learner["resources_per_worker"]) == {"CPU"}


@pytest.mark.parametrize("path", REAL_MODEL_CONFIGS, ids=lambda p: p.name)
def test_real_model_configs_land_on_their_cluster_yaml_nodes(path):
    cfg = load_config(path)
    assert cfg.eval.num_frames == 64 and accepted_frames(cfg.answerer.kind, cfg.answerer.settings) >= 64
    assert cfg.features.encoder.device == "cuda" and cfg.train.learner_device == "cuda"
    enc, ans, learner = encoder_actor_options(cfg), answerer_actor_options(cfg), learner_scaling(cfg)
    assert 0 < enc["num_gpus"] <= 1 and learner["use_gpu"] and ans["num_gpus"] >= 1
    assert fits_a_node(enc["num_cpus"], enc["num_gpus"], enc["resources"]) == ["head"]
    assert fits_a_node(ans["num_cpus"], ans["num_gpus"], ans["resources"]) == ["rollout"]
    per = dict(learner["resources_per_worker"])
    assert fits_a_node(per.pop("CPU"), per.pop("GPU"), per) == ["learner"]
    # the encoder actors share the head's GPU and its encoder label without one waiting on the other
    head = NODE_TYPES["head"]["resources"]
    assert enc["concurrency"] * enc["num_gpus"] <= head["GPU"]
    assert enc["concurrency"] * enc["resources"]["encoder"] <= head["encoder"]
    rollout = NODE_TYPES["rollout"]["resources"]
    assert rollout["rollout"] // ans["resources"]["rollout"] == rollout["GPU"] // ans["num_gpus"]


def job_config(path=None, overrides=None):
    """A config as the jobs load it: the answerer back end checks its own settings and frame budget."""
    return check_config(load_config(path, overrides))


def test_answerer_must_accept_the_frame_counts():
    mismatch = ["answerer.kind=vllm", "answerer.settings={model: Qwen/Qwen2.5-VL-7B-Instruct, num_frames: 16}",
                "eval.num_frames=64", "policy.num_frames=16"]
    with pytest.raises(ConfigError, match=r"^eval.num_frames: 64 frames.*answerer.settings.num_frames=16"):
        job_config(overrides=mismatch)
    with pytest.raises(ConfigError, match=r"^policy.num_frames: 32 frames.*answerer.settings.num_frames=16"):
        job_config(overrides=mismatch[:2] + ["eval.num_frames=8", "policy.num_frames=32"])
    with pytest.raises(ConfigError, match=r"^eval.num_frames: 64 .*answerer.settings.num_frames=16"):  # default 16
        job_config(overrides=["answerer.kind=hf", "answerer.settings={model: m}", "eval.num_frames=64"])
    with pytest.raises(ConfigError, match=r"^eval.num_frames: 64 .*answerer.settings.num_frames=32"):
        job_config(ROOT / "configs" / "clip_l14_qwen2_5_vl_7b.yaml", ["answerer.settings.num_frames=32"])
    with pytest.raises(ConfigError, match=r"^answerer.settings.bogus: unknown vllm"):  # settings checked at load
        job_config(overrides=["answerer.kind=vllm", "answerer.settings={model: m, bogus: 1}"])
    assert job_config(overrides=mismatch[:2] + ["eval.num_frames=16"]).eval.num_frames == 16
    assert job_config(overrides=["eval.num_frames=500"]).eval.num_frames == 500  # the embedded answerer: no limit
    # config.py itself knows nothing of answerer back ends: the same bad config loads, and only the check refuses it
    assert load_config(overrides=mismatch).eval.num_frames == 64


def test_coordinators_default_to_one_per_batch_in_flight_but_no_more_than_the_answerers():
    def count(*overrides):
        return load_config(overrides=list(overrides)).train.coordinators()

    assert count("train.num_coordinators=0", "train.max_lag=1", "train.num_answerers=0") == 2
    assert count("train.num_coordinators=0", "train.max_lag=2", "train.num_answerers=0") == 3
    assert count("train.num_coordinators=0", "train.max_lag=0", "train.num_answerers=0") == 1
    assert count("train.num_coordinators=0", "train.max_lag=2", "train.num_answerers=2") == 2
    assert count("train.num_coordinators=1", "train.max_lag=2", "train.num_answerers=8") == 1


def test_placement_fields_are_checked():
    for bad, field in [
        (["train.learner_gpus=1"], "train.learner_gpus: reserves 1.0 GPU"),
        (["train.learner_device=cuda"], "train.learner_gpus: must be > 0 when train.learner_device is cuda"),
        (["train.learner_device=gpu"], "train.learner_device"),
        (["train.num_learners=2"], "train.num_learners: must be 1"),
        (["features.worker_gpus=0.5"], "features.worker_gpus: reserves GPUs"),
        (["features.encoder.device=cuda", "features.worker_gpus=0"], "features.worker_gpus: must be > 0"),
        (["features.worker_resources={GPU: 1}"], "features.worker_resources: custom resource names only"),
        (["train.answerer_resources={rollout: 0}"], "train.answerer_resources.rollout: must be a number > 0"),
        (["train.learner_resources={learner: yes}"], "train.learner_resources.learner"),
        (["train.max_lag=1", "train.num_coordinators=3"], r"train.num_coordinators: must be at most train.max_lag \+ 1 = 2"),
        (["train.max_lag=1", "train.num_coordinators=2", "train.num_answerers=1"],
         r"train.num_answerers: must be 0 or at least train.num_coordinators \(2\)"),
    ]:
        with pytest.raises(ConfigError, match="^" + field):
            load_config(overrides=bad)
    cfg = load_config(overrides=["features.encoder.device=cuda:1", "features.workers=3",
                                 "train.answerer_resources={rollout: 1}", "train.learner_device=cuda",
                                 "train.learner_gpus=0.25", "train.learner_resources={learner: 1}"])
    assert encoder_actor_options(cfg) == {"concurrency": 3, "num_cpus": 1.0, "num_gpus": 1.0}  # CUDA: 1 by default
    assert answerer_actor_options(cfg) == {"num_cpus": 0.5, "num_gpus": 0.0, "resources": {"rollout": 1.0}}
    assert learner_scaling(cfg) == {"num_workers": 1, "use_gpu": True,
                                    "resources_per_worker": {"CPU": 1.0, "GPU": 0.25, "learner": 1.0}}


#: the reference's evaluation per benchmark: its default selector and AKS's published settings (t1, all_depth)
BENCH_SETTINGS = {"longvideobench": ("agent:top-k", 0.2, 3), "videomme": ("agent:bin-max", 0.8, 5),
                  "mlvu": ("agent:top-k", 0.8, 5), "lvbench": ("agent:top-k", 0.8, 5)}


def test_benchmark_configs_follow_the_reference_and_can_run():
    from tspo_ray.method.selection_methods import AKS_SETTINGS

    for name, settings in AKS_SETTINGS.items():  # the published ones agree with the policy's table
        assert BENCH_SETTINGS[name][1:] == (settings["t1"], settings["all_depth"]) and settings["t2"] == -100.0
    assert sorted(p.stem.removeprefix("bench_") for p in BENCH_CONFIGS) == sorted(BENCH_SETTINGS)
    for path in BENCH_CONFIGS:
        cfg = load_config(path)
        selector, t1, depth = BENCH_SETTINGS[path.stem.removeprefix("bench_")]
        assert cfg.eval.num_frames == 64 and cfg.eval.selectors[0] == selector, path.name
        assert (cfg.eval.aks.t1, cfg.eval.aks.t2, cfg.eval.aks.all_depth) == (t1, -100.0, depth), path.name
        assert cfg.features.max_candidates is None  # every 1-fps candidate, as the reference evaluates
        # TSPO-0.4B: its CLIP encodes, its selector.* weights score
        assert "TSPO-0.4B" in cfg.features.encoder.model and cfg.agent.init_checkpoint == cfg.features.encoder.model
        assert cfg.answerer.kind == "vllm" and accepted_frames(cfg.answerer.kind, cfg.answerer.settings) >= 64
        assert any(m in cfg.answerer.settings["model"].lower() for m in ("qwen2.5-vl-7b", "llava-video-7b"))
        enc = encoder_actor_options(cfg)
        assert cfg.features.encoder.device == "cuda" and 0 < enc["num_gpus"] <= 1
        assert fits_a_node(enc["num_cpus"], enc["num_gpus"], enc["resources"]) == ["head"]
