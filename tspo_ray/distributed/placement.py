"""Where each Ray piece runs: actor options computed from the config, as pure functions (no Ray import here).

cluster.yaml gives its node types custom resources (encoder, rollout, learner); a config places the encoder actors,
the answerer actors and the learner there through features.worker_resources, train.answerer_resources and
train.learner_resources. GPUs are reserved exactly where the code runs on CUDA: the encoder actors when
features.encoder.device asks for it, the learner when train.learner_device is cuda, the answerer actors as their
settings say (answerer.settings.num_gpus).
"""
from __future__ import annotations

from typing import Any

from tspo_ray.config import Config, is_cuda


def _with_resources(options: dict[str, Any], resources: dict[str, float]) -> dict[str, Any]:
    return options | ({"resources": {k: float(v) for k, v in resources.items()}} if resources else {})


def encoder_gpus(cfg: Config) -> float:
    """GPUs per Ray Data encoder actor: the configured amount, else 1 on a CUDA device and 0 on CPU."""
    f = cfg.features
    if f.worker_gpus is not None:
        return float(f.worker_gpus)
    return 1.0 if is_cuda(f.encoder.device) else 0.0


def encoder_actor_options(cfg: Config) -> dict[str, Any]:
    """Ray Data map_batches options of the encoder actors: concurrency, num_cpus, num_gpus, custom resources."""
    f = cfg.features
    return _with_resources({"concurrency": f.workers, "num_cpus": float(f.worker_cpus), "num_gpus": encoder_gpus(cfg)},
                           f.worker_resources)


def answerer_gpus(cfg: Config) -> float:
    """GPUs per answerer actor: the model back end's settings.num_gpus (0 for the embedded answerer)."""
    from tspo_ray.answerers import parse_settings

    parsed = parse_settings(cfg.answerer.kind, cfg.answerer.settings)
    return float(getattr(parsed, "num_gpus", 0.0))


def answerer_actor_options(cfg: Config) -> dict[str, Any]:
    """Ray actor options of one answerer actor in the rollout pool."""
    return _with_resources({"num_cpus": float(cfg.train.answerer_cpus), "num_gpus": answerer_gpus(cfg)},
                           cfg.train.answerer_resources)


def coordinator_options(cfg: Config) -> dict[str, Any]:
    """Ray actor options of the rollout coordinator: a tenth of a CPU (it samples between waits), one thread per
    batch in flight plus one for validation, and train.coordinator_resources."""
    return _with_resources({"num_cpus": 0.1, "max_concurrency": cfg.train.max_lag + 2}, cfg.train.coordinator_resources)


def learner_scaling(cfg: Config) -> dict[str, Any]:
    """Ray Train ScalingConfig keywords: one worker; a GPU reserved (use_gpu) exactly when the agent trains on CUDA."""
    t = cfg.train
    use_gpu = t.learner_device == "cuda"
    per_worker = {"CPU": 1.0, **({"GPU": float(t.learner_gpus)} if use_gpu else {}),
                  **{k: float(v) for k, v in t.learner_resources.items()}}
    return {"num_workers": t.num_learners, "use_gpu": use_gpu, "resources_per_worker": per_worker}
