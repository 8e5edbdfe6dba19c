"""One typed, validated config for every job: loaded from YAML, overridden from the command line (`a.b=value`).

Each field carries a one-line docstring (the comment above it). An unknown key or a bad value raises ConfigError
naming the field, e.g. `grpo.clip_eps: must be in (0, 1), got 1.5`.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """An invalid config value; the message starts with the dotted field name."""


@dataclass
class EncoderConfig:
    # CLIP back end: "embedded" (the shipped tiny CLIP), "hf" (transformers CLIPModel) or "open_clip".
    backend: str = "embedded"
    # Model name or local dir (hf: dir or hub id; open_clip: architecture name).
    model: str | None = None
    # open_clip pretrained tag or local checkpoint path.
    pretrained: str | None = None
    # Torch device for encoding ("cpu", "cuda", "cuda:1").
    device: str = "cpu"
    # Frames encoded per forward pass.
    batch_size: int = 64
    # hf: preprocess with the folder's saved CLIPProcessor itself (PIL resize and crop), as the reference does;
    # slower than the batched tensor resize, which matches it only approximately.
    exact_processor: bool = False


@dataclass
class DataConfig:
    # Folder holding the split JSONLs (video paths inside are relative to it).
    root: str = "data/synthetic"
    # Split file names under root.
    train: str = "train.jsonl"
    val: str = "val.jsonl"
    test: str = "test.jsonl"
    # The training split's file format: "records" (this project's QA JSONL) or a benchmark format of
    # tspo_ray.data.benchmarks, e.g. "tspo10k" (TSPO-10K jsonl, such as pipelines/difficulty_filter.py writes).
    train_format: str = "records"
    # Use at most this many training questions (None: all).
    max_train_questions: int | None = None
    # Evaluate on at most this many questions per split (None: all).
    max_eval_questions: int | None = None
    # A malformed record: "stop" lists every bad line and fails the job; "skip" lists them and goes on without them.
    on_bad_record: str = "stop"
    # Allow split files and video paths outside data.root (absolute paths, `..`, symlinks leading out).
    allow_outside_root: bool = False
    # Questions on a video with fewer candidate frames are skipped (with the reason); fewer than T_s only warns.
    min_video_candidates: int = 2


@dataclass
class FeatureConfig:
    # Candidate sampling rate: every round(native_fps / fps)-th native frame (fps 1 = the reference's 1-fps grid).
    fps: float = 1.0
    # T_c: the most candidate frames per video (re-sampled evenly over the video beyond); null = the whole grid.
    max_candidates: int | None = 128
    # With max_candidates: grids shorter than this are re-sampled to max_candidates too (the reference trains with 50).
    min_candidates: int | None = None
    # Frames are resized to size x size inside the decoding worker (None: native size).
    frame_size: int | None = 64
    # Where the feature store lives; runs with the same (video, fps, T_c, encoder) share entries.
    store: str = "outputs/features"
    # The CLIP encoder that produces F_f and F_t.
    # Decode videos that failed before (same file, same settings) again; by default their earlier reason stands.
    retry_failed: bool = False
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    # Ray Data encoder actors (each loads the encoder once).
    workers: int = 2
    # CPUs per encoder actor.
    worker_cpus: float = 1.0
    # GPUs per encoder actor, fractions allowed (None: 1 when features.encoder.device is CUDA, else 0).
    worker_gpus: float | None = None
    # Custom Ray resources per encoder actor, e.g. {encoder: 0.5} to land on cluster.yaml's head node ({}: none).
    worker_resources: dict[str, float] = field(default_factory=dict)


@dataclass
class AgentConfig:
    # The agent kind, by registered name (tspo_ray.method.kinds): "eq3" (the reference's eq. 3, the TSPO-0.4B layout)
    # or "scan" (eq. 3 + an event-boundary scan read by the question, with a set-aware sequential policy whose
    # greedy decode is the "greedy" inference mode).
    kind: str = "eq3"
    # Settings of the kind beyond the ones below (e.g. for scan: max_count, offsets, positions, head_hidden,
    # penalty; tspo_ray/method/scan_agent.py), passed to its constructor and recorded in the checkpoint.
    options: dict = field(default_factory=dict)
    # Attention window w (frames).
    window: int = 12
    # Attention heads.
    heads: int = 8
    # MLP hidden width (None: the feature dim).
    hidden: int | None = None
    # Modulate the attended features by the question before the MLP (FiLM; not in TSPO's eq. 3, off by default).
    query_conditioned: bool = False
    # PE is multiplied by this before it is added to the frame features (1: the reference's eq. 3).
    position_scale: float = 1.0
    # Start from this checkpoint (ours or the published TSPO-0.4B layout); None: random init.
    init_checkpoint: str | None = None
    # The selection method the "agent" selector uses with this agent (saved with every checkpoint's config):
    # top-k (the reference's default), bin-max (its Video-MME choice), aks, top-k+edges or events.
    inference_mode: str = "top-k"


@dataclass
class PolicyConfig:
    # T_s for training rollouts: frames per sampled keyframe set.
    num_frames: int = 8
    # G: keyframe sets sampled per question.
    group_size: int = 8
    # Temperature at the first step.
    tau_start: float = 0.025
    # Temperature at the last step (linear annealing).
    tau_end: float = 0.01
    # Set likelihood: "plackett_luce" (exact, ratio per set) or "per_frame" (the reference's per-frame ratios).
    likelihood: str = "plackett_luce"
    # How a training set is drawn: "top-k" (the paper: T_s frames by Gumbel-top-k) or "anchors" (the agent draws
    # `anchors` frames and the anchors method fills the rest of the T_s budget around them: training then samples
    # the sets the anchors inference mode selects, policy.select_anchors).
    sampling: str = "top-k"
    # Frames the agent draws per set under sampling=anchors (the anchors inference method places policy.ANCHORS = 2;
    # keep this at 2 for training and inference to match).
    anchors: int = 2


@dataclass
class GRPOConfig:
    # Adam learning rate.
    lr: float = 5e-4
    # PPO clip epsilon of the importance ratio.
    clip_eps: float = 0.2
    # Optimisation epochs over each batch of groups.
    epochs: int = 2
    # Weight of the k3 KL penalty to the initial agent (0: off).
    kl_coef: float = 0.0
    # Drop groups whose G rewards are all equal (they carry no signal).
    filter_zero_variance: bool = True
    # Gradient-norm clip (0: off).
    max_grad_norm: float = 1.0
    # Advantage scale: "group" (GRPO: each group's own reward std) or "family" (the std of all the batch's sets of
    # the group's question family; grpo.family_advantages).
    advantage_norm: str = "group"


@dataclass
class AnswererConfig:
    # "embedded" (tiny-CLIP answerer), "vllm", "hf", or "simulated" (another back end's answers after a modelled
    # Video-MLLM latency; tspo_ray/answerers/simulated.py).
    kind: str = "embedded"
    # Back-end settings passed to the answerer factory (model path, engine limits, resources...).
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    # Learner steps; each consumes `questions_per_step` groups.
    steps: int = 60
    # Questions (groups) per learner step.
    questions_per_step: int = 32
    # Seed for data order, sampling and init.
    seed: int = 0
    # Decoupling: the learner accepts groups sampled by a policy at most this many versions old (0: synchronous).
    max_lag: int = 1
    # Answerer actors in the rollout pool.
    num_answerers: int = 2
    # CPUs per answerer actor (its GPUs are answerer.settings.num_gpus).
    answerer_cpus: float = 0.5
    # Custom Ray resources per answerer actor, e.g. {rollout: 1} for cluster.yaml's rollout nodes ({}: none).
    answerer_resources: dict[str, float] = field(default_factory=dict)
    # Questions (all their G sets) per batched answerer call; 0: each batch spread over its share of the answerers
    # (num_answerers // (max_lag + 1) calls), an idle answerer taking work pinned to a busy one.
    jobs_per_call: int = 4
    # Custom Ray resources for the rollout coordinator, e.g. {coordinator: 1} for cluster.yaml's head ({}: none).
    coordinator_resources: dict[str, float] = field(default_factory=dict)
    # Learner workers (Ray Train); only 1 is supported (no data-parallel learner).
    num_learners: int = 1
    # Torch device of the agent in the learner: "cpu", or "cuda" (the GPU Ray Train assigns; needs learner_gpus > 0).
    learner_device: str = "cpu"
    # GPUs reserved for the learner worker (> 0 exactly when learner_device is cuda).
    learner_gpus: float = 0.0
    # Custom Ray resources for the learner worker, e.g. {learner: 1} for cluster.yaml's learner node ({}: none).
    learner_resources: dict[str, float] = field(default_factory=dict)
    # Write a checkpoint every N steps (and at the end).
    checkpoint_every: int = 10
    # Every this many steps (and at the last), the agent's top-k accuracy on the validation split (MLflow
    # val/accuracy), with a checkpoint; the best one so far is kept beside the newest keep_checkpoints, and the
    # final evaluation uses it (0: no periodic validation; the final checkpoint is evaluated).
    eval_every: int = 0
    # The selector of that validation (an agent:METHOD), whose accuracy picks the best checkpoint.
    eval_selector: str = "agent:top-k"
    # Checkpoints kept in the run's folder: the newest N, plus the best on validation (train.eval_every).
    keep_checkpoints: int = 3
    # Restarts allowed to the Ray Train learner worker and to the rollout coordinator actor, each continuing the run.
    max_failures: int = 3
    # Replacements allowed to the answerer actors of one rollout coordinator (a replacement that fails counts too).
    answerer_max_restarts: int = 10
    # Where checkpoints, results and plots go.
    output_dir: str = "outputs/run"


@dataclass
class HaystackConfig:
    # Needle-in-a-haystack built online, as the reference trains its "specific" questions: the chance that a needle
    # question of a training batch is asked over a haystack of chunks of its own and other videos (0: off; 1: always).
    probability: float = 0.0
    # Question families that are needle questions besides TSPO-10K's "specific" items (the embedded world's
    # needle_attribute questions: answerable from one short event wherever it sits).
    families: list[str] = field(default_factory=lambda: ["needle_attribute"])
    # Candidates per chunk (the reference: 50).
    chunk_frames: int = 50
    # Chunks of the question's own video: 1..max_target_chunks, each a random sorted subset (the reference: 4).
    max_target_chunks: int = 4
    # Chunks from other training videos (the reference: 12).
    other_chunks: int = 12
    # T_s of haystack items (None: policy.num_frames; the reference draws 16 for needle items, 8 for general ones).
    num_frames: int | None = None


@dataclass
class TrackingConfig:
    # MLflow tracking URI (None: $MLFLOW_TRACKING_URI, else a SQLite store ./mlflow.db).
    tracking_uri: str | None = None
    # Where a new experiment keeps its artifacts (None: beside a SQLite or file store, in its folder's mlartifacts/;
    # for a tracking server, the server's default).
    artifact_location: str | None = None
    # MLflow experiment name.
    experiment: str = "tspo-ray"
    # Run name (None: generated).
    run_name: str | None = None
    # Log to MLflow at all.
    enabled: bool = True


@dataclass
class AKSConfig:
    # Adaptive Keyframe Sampling (the aks selection method). Split a segment further unless the mean of its top
    # scores exceeds its mean by more than t1 (on min-max normalised scores)...
    t1: float = 0.2
    # ... and its score std exceeds t2 (-100: the reference's "never binding").
    t2: float = -100.0
    # The deepest split. The reference: t1 0.2 / depth 3 on LongVideoBench, t1 0.8 / depth 5 on Video-MME.
    all_depth: int = 3


#: the answerer back ends (tspo_ray.answerers builds them)
ANSWERER_KINDS = ("embedded", "vllm", "hf", "simulated")

#: the training-free baselines every results table carries
BASELINE_SELECTORS = ("uniform", "clip:top-k", "clip:bin-max", "clip:aks", "clip:top-k+edges", "clip:events",
                      "clip:anchors")
#: the baselines, the agent under each selection method, and `agent` (its default mode)
FULL_SUITE = BASELINE_SELECTORS + ("agent:top-k", "agent:bin-max", "agent:aks", "agent:top-k+edges", "agent:events",
                                   "agent:anchors", "agent")


@dataclass
class EvalConfig:
    # T_s at evaluation.
    num_frames: int = 8
    # Selectors compared in the final table (jobs/evaluate.py --benchmark: the default --selectors): by default
    # every training-free baseline, every inference mode of the agent, and `agent`, its default mode.
    selectors: list[str] = field(default_factory=lambda: list(FULL_SUITE))
    # After training, choose the agent's default inference mode (`agent`) on the validation split and record it
    # in the checkpoint (false: keep agent.inference_mode).
    choose_inference_mode: bool = True
    # Score-curve pictures to emit.
    num_plots: int = 4
    # Settings of the aks selection method.
    aks: AKSConfig = field(default_factory=AKSConfig)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    answerer: AnswererConfig = field(default_factory=AnswererConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    haystack: HaystackConfig = field(default_factory=HaystackConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values, e.g. for MLflow params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict) and value and prefix not in ("answerer.settings",):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = value

        walk("", self.to_dict())
        return out


# --- building and validating ---------------------------------------------------------------------------------------

def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if hint is Any:
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, str):  # YAML 1.1 reads "3e-3" as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if hint is int and float(value) != int(value):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"{key}: unknown option (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in raw.items()}
    return cls(**kwargs)


def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {message}")


def validate(cfg: Config) -> Config:
    from tspo_ray.method.policy import LIKELIHOODS, SELECTION_METHODS, SELECTORS, SET_METHODS

    _check(cfg.features.encoder.backend in ("embedded", "hf", "open_clip"), "features.encoder.backend",
           f"must be one of embedded, hf, open_clip, got {cfg.features.encoder.backend!r}")
    _check(cfg.data.on_bad_record in ("stop", "skip"), "data.on_bad_record",
           f"must be one of stop, skip, got {cfg.data.on_bad_record!r}")
    from tspo_ray.data.benchmarks import FORMATS

    _check(cfg.data.train_format == "records" or cfg.data.train_format in FORMATS, "data.train_format",
           f"must be records or one of {', '.join(sorted(FORMATS))}, got {cfg.data.train_format!r}")
    _check(cfg.data.min_video_candidates >= 1, "data.min_video_candidates",
           f"must be >= 1, got {cfg.data.min_video_candidates}")
    _check(cfg.features.fps > 0, "features.fps", f"must be > 0, got {cfg.features.fps}")
    _check(cfg.features.max_candidates is None or cfg.features.max_candidates >= 1, "features.max_candidates",
           "must be >= 1 or null (no cap)")
    _check(cfg.features.min_candidates is None or cfg.features.min_candidates >= 1, "features.min_candidates",
           "must be >= 1 or null")
    _check(cfg.features.frame_size is None or cfg.features.frame_size >= 8, "features.frame_size", "must be >= 8")
    _check((cfg.agent.inference_mode in SELECTION_METHODS and cfg.agent.inference_mode != "uniform")
           or cfg.agent.inference_mode in SET_METHODS, "agent.inference_mode",
           f"must be one of top-k, bin-max, aks, top-k+edges, events, anchors, greedy, got {cfg.agent.inference_mode!r}")
    from tspo_ray.method.kinds import agent_kinds

    _check(cfg.agent.kind in agent_kinds(), "agent.kind",
           f"must be one of {', '.join(agent_kinds())}, got {cfg.agent.kind!r}")
    _check(cfg.agent.window >= 1, "agent.window", f"must be >= 1, got {cfg.agent.window}")
    _check(cfg.agent.heads >= 1, "agent.heads", f"must be >= 1, got {cfg.agent.heads}")
    _check(cfg.agent.position_scale > 0, "agent.position_scale", f"must be > 0, got {cfg.agent.position_scale}")
    _check(cfg.policy.num_frames >= 1, "policy.num_frames", f"must be >= 1, got {cfg.policy.num_frames}")
    _check(cfg.policy.group_size >= 2, "policy.group_size", f"GRPO needs G >= 2, got {cfg.policy.group_size}")
    _check(cfg.policy.tau_start > 0 and cfg.policy.tau_end > 0, "policy.tau_start", "temperatures must be > 0")
    _check(cfg.policy.likelihood in LIKELIHOODS, "policy.likelihood",
           f"must be one of {', '.join(LIKELIHOODS)}, got {cfg.policy.likelihood!r}")
    _check(cfg.policy.sampling in ("top-k", "anchors"), "policy.sampling",
           f"must be top-k or anchors, got {cfg.policy.sampling!r}")
    _check(1 <= cfg.policy.anchors <= cfg.policy.num_frames, "policy.anchors",
           f"must be in 1..policy.num_frames ({cfg.policy.num_frames}), got {cfg.policy.anchors}")
    _check(cfg.grpo.lr > 0, "grpo.lr", f"must be > 0, got {cfg.grpo.lr}")
    _check(0 < cfg.grpo.clip_eps < 1, "grpo.clip_eps", f"must be in (0, 1), got {cfg.grpo.clip_eps}")
    _check(cfg.grpo.epochs >= 1, "grpo.epochs", f"must be >= 1, got {cfg.grpo.epochs}")
    _check(cfg.grpo.kl_coef >= 0, "grpo.kl_coef", "must be >= 0")
    _check(cfg.grpo.advantage_norm in ("group", "family"), "grpo.advantage_norm",
           f"must be group or family, got {cfg.grpo.advantage_norm!r}")
    _check(cfg.answerer.kind in ANSWERER_KINDS, "answerer.kind",
           f"must be one of {', '.join(ANSWERER_KINDS)}, got {cfg.answerer.kind!r}")
    _check(cfg.train.steps >= 1, "train.steps", f"must be >= 1, got {cfg.train.steps}")
    _check(cfg.train.questions_per_step >= 1, "train.questions_per_step", "must be >= 1")
    _check(cfg.train.max_lag >= 0, "train.max_lag", f"must be >= 0, got {cfg.train.max_lag}")
    _check(cfg.train.num_answerers >= 1, "train.num_answerers", "must be >= 1")
    _check(cfg.train.checkpoint_every >= 1, "train.checkpoint_every", "must be >= 1")
    _check(cfg.train.eval_every >= 0, "train.eval_every", "must be >= 0 (0: no periodic validation)")
    eval_scorer, eval_method = _parse_selector_or_none(cfg.train.eval_selector)
    _check(eval_scorer == "agent" and eval_method is not None, "train.eval_selector",
           f"must be agent:METHOD (e.g. agent:events), got {cfg.train.eval_selector!r}")
    _check(cfg.train.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1")
    _check(cfg.train.max_failures >= 0, "train.max_failures", f"must be >= 0, got {cfg.train.max_failures}")
    _check(cfg.train.answerer_max_restarts >= 0, "train.answerer_max_restarts",
           f"must be >= 0, got {cfg.train.answerer_max_restarts}")
    h = cfg.haystack
    _check(0 <= h.probability <= 1, "haystack.probability", f"must be in [0, 1], got {h.probability}")
    _check(h.chunk_frames >= 1, "haystack.chunk_frames", f"must be >= 1, got {h.chunk_frames}")
    _check(h.max_target_chunks >= 1, "haystack.max_target_chunks", f"must be >= 1, got {h.max_target_chunks}")
    _check(h.other_chunks >= 1, "haystack.other_chunks", f"must be >= 1, got {h.other_chunks}")
    _check(h.num_frames is None or h.num_frames >= 1, "haystack.num_frames", f"must be >= 1, got {h.num_frames}")
    _check(h.num_frames in (None, cfg.policy.num_frames) or cfg.policy.likelihood == "plackett_luce",
           "haystack.num_frames", "a T_s other than policy.num_frames needs policy.likelihood plackett_luce (one term "
           "per set; per-frame terms of sets of different sizes cannot share a batch)")
    _check(cfg.eval.num_frames >= 1, "eval.num_frames", "must be >= 1")
    _check(cfg.eval.aks.all_depth >= 0, "eval.aks.all_depth", f"must be >= 0, got {cfg.eval.aks.all_depth}")
    for i, s in enumerate(cfg.eval.selectors):
        _check(s in SELECTORS, f"eval.selectors[{i}]", f"unknown selector {s!r}; choose from {', '.join(SELECTORS)}")
    _validate_placement(cfg)
    return cfg


def is_cuda(device: str) -> bool:
    """Whether a torch device string names a CUDA device ("cuda", "cuda:1")."""
    return device == "cuda" or device.startswith("cuda:")


def _check_resources(mapping: dict, where: str) -> None:
    for name, amount in mapping.items():
        _check(isinstance(name, str) and name not in ("CPU", "GPU", "memory", "object_store_memory"), where,
               f"custom resource names only (CPU and GPU have their own fields), got {name!r}")
        _check(isinstance(amount, (int, float)) and not isinstance(amount, bool) and amount > 0, f"{where}.{name}",
               f"must be a number > 0, got {amount!r}")


def _validate_placement(cfg: Config) -> None:
    """Ray resources: every reservation is used (a GPU is reserved exactly where the code runs on CUDA)."""
    f, t = cfg.features, cfg.train
    _check(f.workers >= 1, "features.workers", f"must be >= 1, got {f.workers}")
    _check(f.worker_cpus > 0, "features.worker_cpus", f"must be > 0, got {f.worker_cpus}")
    if f.worker_gpus is not None:
        if is_cuda(f.encoder.device):
            _check(f.worker_gpus > 0, "features.worker_gpus", f"must be > 0 when features.encoder.device is "
                   f"{f.encoder.device!r} (the encoder actors need a GPU), got {f.worker_gpus}")
        else:
            _check(f.worker_gpus == 0, "features.worker_gpus", f"reserves GPUs that the encoder does not use: "
                   f"features.encoder.device is {f.encoder.device!r}; set it to cuda or worker_gpus to 0")
    _check_resources(f.worker_resources, "features.worker_resources")
    _check_resources(t.answerer_resources, "train.answerer_resources")
    _check_resources(t.learner_resources, "train.learner_resources")
    _check_resources(t.coordinator_resources, "train.coordinator_resources")
    _check(t.jobs_per_call >= 0, "train.jobs_per_call", f"must be >= 0 (0: spread), got {t.jobs_per_call}")
    _check(t.answerer_cpus > 0, "train.answerer_cpus", f"must be > 0, got {t.answerer_cpus}")
    _check(t.num_learners == 1, "train.num_learners", "must be 1: the learner is a single Ray Train worker "
           f"(data-parallel learners are not implemented), got {t.num_learners}")
    _check(t.learner_device in ("cpu", "cuda"), "train.learner_device",
           f"must be cpu or cuda (Ray Train picks the GPU), got {t.learner_device!r}")
    _check(t.learner_gpus >= 0, "train.learner_gpus", f"must be >= 0, got {t.learner_gpus}")
    if t.learner_device == "cuda":
        _check(t.learner_gpus > 0, "train.learner_gpus", "must be > 0 when train.learner_device is cuda, got "
               f"{t.learner_gpus}")
    else:
        _check(t.learner_gpus == 0, "train.learner_gpus", f"reserves {t.learner_gpus} GPU(s) that the learner does "
               "not use: train.learner_device is cpu; set train.learner_device=cuda or train.learner_gpus=0")


#: a config override on a command line: section.key[.key...]=value
OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+=")


def parse_job_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """parser.parse_args with config overrides (section.key=value) anywhere on the line: before, between and after
    the options, also right after an option of several values (`--selectors a b train.steps=3`), which argparse
    alone cannot do. They come back as args.overrides, in order; any other stray positional is refused by name."""
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    overrides = [a for a in argv if OVERRIDE.match(a)]
    args = parser.parse_args([a for a in argv if not OVERRIDE.match(a)])
    stray = getattr(args, "overrides", None)
    if stray:
        parser.error(f"{stray[0]}: an override must look like section.key=value")
    args.overrides = overrides
    return args


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"{text}: an override must look like section.key=value")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def _parse_selector_or_none(name: str) -> tuple[str | None, str | None]:
    """policy.parse_selector, with (None, None) for an unknown name (validate reports it)."""
    from tspo_ray.method.policy import parse_selector

    try:
        return parse_selector(name)
    except ValueError:
        return None, None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """The default config, updated by a YAML file, then by `a.b=value` overrides (values parsed as YAML)."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config: no such file {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config: {path} must hold a mapping")
        raw = loaded
    for text in overrides or []:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{'.'.join(keys)}: {k} is not a section")
        node[keys[-1]] = value
    return validate(_build(Config, raw, ""))
