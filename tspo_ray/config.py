"""One typed, validated config for every job: loaded from YAML, overridden from the command line (`a.b=value`).

Each section is declared once (tspo_ray.settings.Settings, pydantic): every field has a type, its range or choices,
and a one-line docstring under it. An unknown key or a bad value raises ConfigError naming the field, e.g.
`grpo.clip_eps: must be < 1, got 1.5`. `python -m tspo_ray.config_reference` writes docs/config.md from the
declarations.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field, field_validator

from tspo_ray.method.sampling import TAU_END, TAU_START
from tspo_ray.method.selection_methods import AKS_DEFAULTS, ANCHORS
from tspo_ray.settings import ConfigError, Settings
from tspo_ray.video.encoders import EncoderSpec
from tspo_ray.video.features import SPEC_FIELDS, FeatureSpec

__all__ = ["Config", "ConfigError", "load_config", "parse_job_args", "is_cuda"]


#: features.encoder: declared once, beside the encoders it builds
EncoderConfig = EncoderSpec


class DataConfig(Settings):
    """Where the QA records are, and what to do with bad ones."""

    root: str = "data/synthetic"
    """Folder holding the split JSONLs (video paths inside are relative to it)."""
    train: str = "train.jsonl"
    """Split file names under root: training."""
    val: str = "val.jsonl"
    """Validation split file name under root."""
    test: str = "test.jsonl"
    """Test split file name under root."""
    train_format: str = "records"
    """The training split's file format: 'records' (this project's QA JSONL) or a benchmark format of tspo_ray.data.benchmarks, e.g. 'tspo10k' (TSPO-10K jsonl, such as pipelines/difficulty_filter.py writes)."""
    max_train_questions: int | None = None
    """Use at most this many training questions (None: all)."""
    max_eval_questions: int | None = None
    """Evaluate on at most this many questions per split (None: all)."""
    on_bad_record: Literal["stop", "skip"] = "stop"
    """A malformed record: 'stop' lists every bad line and fails the job; 'skip' lists them and goes on without them."""
    allow_outside_root: bool = False
    """Allow split files and video paths outside data.root (absolute paths, `..`, symlinks leading out)."""
    min_video_candidates: int = Field(2, ge=1)
    """Questions on a video with fewer candidate frames are skipped (with the reason); fewer than T_s only warns."""


class FeatureConfig(FeatureSpec):
    """The candidate frames (rate, cap, size) and their CLIP features, computed by Ray Data and stored: the feature
    spec the run trains with (recorded with its checkpoints), and where and how the features are computed."""

    label: ClassVar[str] = ""
    section: ClassVar[str] = ""
    store: str = "outputs/features"
    """Where the feature store lives; runs with the same (video, fps, T_c, encoder) share entries."""
    retry_failed: bool = False
    """Decode videos that failed before (same file, same settings) again; by default their earlier reason stands."""
    engine: Literal["auto", "ray", "local"] = "auto"
    """Who extracts features in a Ray job: 'ray' (the Ray Data pipeline), 'local' (the one-process loop in the driver), or 'auto': Ray Data where it pays for its start-up (the encoder on a GPU, custom worker_resources, or at least ray_min_cpus CPUs and ray_min_videos videos to encode), else the one-process loop; the job logs which and why."""
    ray_min_cpus: int = Field(4, ge=1)
    """engine auto: the fewest CPUs (the cluster's; this machine's cores for a one-node Ray) on which Ray Data is chosen (on 2 CPUs it held 3.8x the one-process loop's memory, docs/scaling.md)."""
    ray_min_videos: int = Field(1000, ge=0)
    """engine auto: the fewest videos still to encode for which Ray Data is chosen (its start-up, 49 s to the first entry on 2 CPUs, is about 500 videos of the one-process loop)."""
    workers: int = Field(2, ge=1)
    """Ray Data encoder actors (each loads the encoder once)."""
    worker_cpus: float = Field(1.0, gt=0)
    """CPUs per encoder actor."""
    worker_gpus: float | None = None
    """GPUs per encoder actor, fractions allowed (None: 1 when features.encoder.device is CUDA, else 0)."""
    worker_resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources per encoder actor, e.g. {encoder: 0.5} to land on cluster.yaml's head node ({}: none)."""


class AgentConfig(Settings):
    """The temporal agent (eq. 3 or another registered kind) and the selection method it is used with."""

    kind: str = "eq3"
    """The agent kind, by registered name (tspo_ray.method.kinds): 'eq3' (the reference's eq. 3, the TSPO-0.4B layout) or 'scan' (eq. 3 + an event-boundary scan read by the question, with a set-aware sequential policy whose greedy decode is the 'greedy' inference mode)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Settings of the kind beyond the ones below (e.g. for scan: max_count, offsets, positions, head_hidden, penalty; tspo_ray/method/scan_agent.py), passed to its constructor and recorded in the checkpoint."""
    window: int = Field(12, ge=1)
    """Attention window w (frames)."""
    heads: int = Field(8, ge=1)
    """Attention heads."""
    hidden: int | None = None
    """MLP hidden width (None: the feature dim)."""
    query_conditioned: bool = False
    """Modulate the attended features by the question before the MLP (FiLM; not in TSPO's eq. 3, off by default)."""
    position_scale: float = Field(1.0, gt=0)
    """PE is multiplied by this before it is added to the frame features (1: the reference's eq. 3)."""
    init_checkpoint: str | None = None
    """Start from this checkpoint (ours or the published TSPO-0.4B layout); None: random init."""
    inference_mode: str = "top-k"
    """The selection method the 'agent' selector uses with this agent (saved with every checkpoint's config): top-k (the reference's default), bin-max (its Video-MME choice), aks, top-k+edges or events."""


class PolicyConfig(Settings):
    """The training policy: T_s, G, the temperature schedule, the set likelihood, how sets are drawn."""

    num_frames: int = Field(8, ge=1)
    """T_s for training rollouts: frames per sampled keyframe set."""
    group_size: int = Field(8, ge=2)
    """G: keyframe sets sampled per question."""
    tau_start: float = Field(TAU_START, gt=0)
    """Temperature at the first step."""
    tau_end: float = Field(TAU_END, gt=0)
    """Temperature at the last step (linear annealing)."""
    likelihood: str = "plackett_luce"
    """Set likelihood: 'plackett_luce' (exact, ratio per set) or 'per_frame' (the reference's per-frame ratios)."""
    sampling: Literal["top-k", "anchors"] = "top-k"
    """How a training set is drawn: 'top-k' (the paper: T_s frames by Gumbel-top-k) or 'anchors' (the agent draws `anchors` frames and the anchors method fills the rest of the T_s budget around them: training then samples the sets the anchors inference mode selects, selection_methods.select_anchors)."""
    anchors: int = Field(ANCHORS, ge=1)
    """Frames the agent draws per set under sampling=anchors; recorded with the checkpoint (and the export), so the
    anchors inference method places as many of the agent's best frames."""


class GRPOConfig(Settings):
    """The GRPO update: learning rate, clipping, epochs, KL."""

    lr: float = Field(5e-4, gt=0)
    """Adam learning rate."""
    clip_eps: float = Field(0.2, gt=0, lt=1)
    """PPO clip epsilon of the importance ratio."""
    epochs: int = Field(2, ge=1)
    """Optimisation epochs over each batch of groups."""
    kl_coef: float = Field(0.0, ge=0)
    """Weight of the k3 KL penalty to the initial agent (0: off)."""
    filter_zero_variance: bool = True
    """Drop groups whose G rewards are all equal (they carry no signal)."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip (0: off)."""
    advantage_norm: Literal["group", "family"] = "group"
    """Advantage scale: 'group' (GRPO: each group's own reward std) or 'family' (the std of all the batch's sets of the group's question family; grpo.family_advantages)."""
    temporal_weight: float = Field(1.0, ge=0)
    """Weight w of R_T in the reward the update learns from, R_A + w * R_T for needle items (1: the paper's totals; general items score R_A + 1, a constant GRPO's centring drops). R_T counts frames inside any target span, so it pays a set that piles onto one span as much as one that covers them all: where a question needs several spans, w < 1 keeps the answer the goal (grpo.learning_rewards)."""


class AnswererConfig(Settings):
    """The frozen Video-MLLM that answers from the selected frames (its settings: below, by kind)."""

    kind: str = "embedded"
    """'embedded' (tiny-CLIP answerer), 'vllm', 'hf', or 'simulated' (another back end's answers after a modelled Video-MLLM latency; tspo_ray/answerers/simulated.py)."""
    settings: dict[str, Any] = Field(default_factory=dict)
    """Back-end settings passed to the answerer factory (model path, engine limits, resources...)."""


class TrainConfig(Settings):
    """The run: steps, decoupling, Ray resources, checkpoints, restarts."""

    steps: int = Field(60, ge=1)
    """Learner steps; each consumes `questions_per_step` groups."""
    questions_per_step: int = Field(32, ge=1)
    """Questions (groups) per learner step."""
    seed: int = 0
    """Seed for data order, sampling and init."""
    max_lag: int = Field(1, ge=0)
    """Decoupling: the learner accepts groups sampled by a policy at most this many versions old (0: synchronous)."""
    num_answerers: int = Field(2, ge=0)
    """Answerer actors in the rollout pool; 0: the rollout coordinator answers in its own process (an answerer that needs no GPU, such as the embedded one, on a small machine: docs/scaling.md)."""
    answerer_cpus: float = Field(0.5, gt=0)
    """CPUs per answerer actor (its GPUs are answerer.settings.num_gpus)."""
    answerer_resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources per answerer actor, e.g. {rollout: 1} for cluster.yaml's rollout nodes ({}: none)."""
    jobs_per_call: int = Field(4, ge=0)
    """Questions (all their G sets) per batched answerer call; 0: each batch spread over its share of the answerers (num_answerers // (max_lag + 1) calls), an idle answerer taking work pinned to a busy one."""
    num_coordinators: int = Field(1, ge=0)
    """Rollout coordinator actors. Batch b goes to coordinator b mod N, so up to N batches are sampled at once (at most max_lag + 1 are ever in flight), and the answerer actors are shared out among them, each coordinator cutting its batch over its own; 0: one per batch in flight (max_lag + 1), but no more than the answerer actors. Two at max_lag 1 took the embedded loop from 1.11x to 1.31x the one-process loop and 64 simulated answerers from 49% to 80% efficiency (docs/scaling.md)."""
    coordinator_resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources for each rollout coordinator, e.g. {coordinator: 1} for cluster.yaml's head, which has one unit ({coordinator: 0.5} for two coordinators there; {}: none)."""
    num_learners: int = 1
    """Learner workers (Ray Train); only 1 is supported (no data-parallel learner)."""
    learner_device: Literal["cpu", "cuda"] = "cpu"
    """Torch device of the agent in the learner: 'cpu', or 'cuda' (the GPU Ray Train assigns; needs learner_gpus > 0)."""
    learner_gpus: float = Field(0.0, ge=0)
    """GPUs reserved for the learner worker (> 0 exactly when learner_device is cuda)."""
    learner_resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources for the learner worker, e.g. {learner: 1} for cluster.yaml's learner node ({}: none)."""
    checkpoint_every: int = Field(10, ge=1)
    """Write a checkpoint every N steps (and at the end)."""
    eval_every: int = Field(0, ge=0)
    """Every this many steps (and at the last), the agent's top-k accuracy on the validation split (MLflow val/accuracy), with a checkpoint; the best one so far is kept beside the newest keep_checkpoints, and the final evaluation uses it (0: no periodic validation; the final checkpoint is evaluated)."""
    eval_selector: str = "agent:top-k"
    """The selector of that validation (an agent:METHOD), whose accuracy picks the best checkpoint."""
    keep_checkpoints: int = Field(3, ge=1)
    """Checkpoints kept in the run's folder: the newest N, plus the best on validation (train.eval_every)."""
    max_failures: int = Field(3, ge=0)
    """Restarts allowed to the Ray Train learner worker and to the rollout coordinator actor, each continuing the run."""
    torch_threads: int = Field(1, ge=0)
    """torch intra-op threads in every training process: the single-process loop, the Ray learner, the rollout coordinator and the answerer actors, so both loops run with the same count (0: torch's default, one per core; Ray sets a worker's to its CPU share)."""
    answerer_max_restarts: int = Field(10, ge=0)
    """Replacements allowed to the answerer actors of one rollout coordinator (a replacement that fails counts too)."""
    output_dir: str = "outputs/run"
    """Where checkpoints, results and plots go."""

    def coordinators(self) -> int:
        """The rollout coordinators a run starts: num_coordinators, or for 0 one per batch in flight (max_lag + 1),
        no more than the answerer actors."""
        if self.num_coordinators:
            return self.num_coordinators
        return min(self.max_lag + 1, self.num_answerers) if self.num_answerers else self.max_lag + 1


class HaystackConfig(Settings):
    """Needle-in-a-haystack items built online, as the reference trains its needle questions."""

    probability: float = Field(0.0, ge=0, le=1)
    """Needle-in-a-haystack built online, as the reference trains its 'specific' questions: the chance that a needle question of a training batch is asked over a haystack of chunks of its own and other videos (0: off; 1: always)."""
    families: list[str] = Field(default_factory=lambda: ["needle_attribute"])
    """Question families that are needle questions besides TSPO-10K's 'specific' items (the embedded world's needle_attribute questions: answerable from one short event wherever it sits)."""
    chunk_frames: int = Field(50, ge=1)
    """Candidates per chunk (the reference: 50)."""
    max_target_chunks: int = Field(4, ge=1)
    """Chunks of the question's own video: 1..max_target_chunks, each a random sorted subset (the reference: 4)."""
    other_chunks: int = Field(12, ge=1)
    """Chunks from other training videos (the reference: 12)."""
    num_frames: int | None = Field(None, ge=1)
    """T_s of haystack items (None: policy.num_frames; the reference draws 16 for needle items, 8 for general ones)."""


class TrackingConfig(Settings):
    """MLflow tracking."""

    tracking_uri: str | None = None
    """MLflow tracking URI (None: $MLFLOW_TRACKING_URI, else a SQLite store ./mlflow.db)."""
    artifact_location: str | None = None
    """Where a new experiment keeps its artifacts (None: beside a SQLite or file store, in its folder's mlartifacts/; for a tracking server, the server's default)."""
    experiment: str = "tspo-ray"
    """MLflow experiment name."""
    run_name: str | None = None
    """Run name (None: generated)."""
    enabled: bool = True
    """Log to MLflow at all."""


class AKSConfig(Settings):
    """Adaptive Keyframe Sampling (the aks selection method)."""

    t1: float = AKS_DEFAULTS["t1"]
    """Adaptive Keyframe Sampling (the aks selection method). Split a segment further unless the mean of its top scores exceeds its mean by more than t1 (on min-max normalised scores)..."""
    t2: float = AKS_DEFAULTS["t2"]
    """... and its score std exceeds t2 (-100: the reference's 'never binding')."""
    all_depth: int = Field(AKS_DEFAULTS["all_depth"], ge=0)
    """The deepest split. The reference: t1 0.2 / depth 3 on LongVideoBench, t1 0.8 / depth 5 on Video-MME."""


#: the training-free baselines every results table carries
BASELINE_SELECTORS = ("uniform", "clip:top-k", "clip:bin-max", "clip:aks", "clip:top-k+edges", "clip:events",
                      "clip:anchors", "clip:chain")
#: the baselines, the agent under each selection method, and `agent` (its default mode)
FULL_SUITE = BASELINE_SELECTORS + ("agent:top-k", "agent:bin-max", "agent:aks", "agent:top-k+edges", "agent:events",
                                   "agent:anchors", "agent:chain", "agent")


class EvalConfig(Settings):
    """Evaluation: T_s, the selectors compared, the inference mode chosen on validation, plots."""

    num_frames: int = Field(8, ge=1)
    """T_s at evaluation."""
    selectors: list[str] = Field(default_factory=lambda: list(FULL_SUITE))
    """Selectors compared in the final table (jobs/evaluate.py --benchmark: the default --selectors): by default every training-free baseline, every inference mode of the agent, and `agent`, its default mode."""
    choose_inference_mode: bool = True
    """After training, choose the agent's default inference mode (`agent`) on the validation split and record it in the checkpoint (false: keep agent.inference_mode)."""
    num_plots: int = Field(4, ge=0)
    """Score-curve pictures to emit."""
    aks: AKSConfig = Field(default_factory=AKSConfig)
    """Settings of the aks selection method."""


class Config(Settings):
    """The job config: every section, loaded from YAML with `section.key=value` overrides."""

    data: DataConfig = Field(default_factory=DataConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    answerer: AnswererConfig = Field(default_factory=AnswererConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    haystack: HaystackConfig = Field(default_factory=HaystackConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @classmethod
    def load(cls, raw: Any = None, where: str = "") -> "Config":
        """A config from a mapping (a YAML file's, or one recorded in a checkpoint), checked field by field and
        across fields (validate)."""
        return validate(super().load(raw, where))

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




# --- checks across fields ---------------------------------------------------------------------------------------

def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {message}")


def validate(cfg: Config) -> Config:
    """What one field's declaration cannot say: choices held by registries and checks across fields."""
    from tspo_ray.data.benchmarks import FORMATS
    from tspo_ray.method.kinds import agent_kinds
    from tspo_ray.method.sampling import LIKELIHOODS
    from tspo_ray.method.selection_methods import SELECTION_METHODS, SELECTORS, SET_METHODS

    _check(cfg.data.train_format == "records" or cfg.data.train_format in FORMATS, "data.train_format",
           f"must be records or one of {', '.join(sorted(FORMATS))}, got {cfg.data.train_format!r}")
    _check(cfg.agent.kind in agent_kinds(), "agent.kind",
           f"must be one of {', '.join(agent_kinds())}, got {cfg.agent.kind!r}")
    modes = [m for m in SELECTION_METHODS if m != "uniform"] + list(SET_METHODS)
    _check(cfg.agent.inference_mode in modes, "agent.inference_mode",
           f"must be one of {', '.join(modes)}, got {cfg.agent.inference_mode!r}")
    _check(cfg.policy.likelihood in LIKELIHOODS, "policy.likelihood",
           f"must be one of {', '.join(LIKELIHOODS)}, got {cfg.policy.likelihood!r}")
    _check(cfg.policy.anchors <= cfg.policy.num_frames, "policy.anchors",
           f"must be in 1..policy.num_frames ({cfg.policy.num_frames}), got {cfg.policy.anchors}")
    eval_scorer, eval_method = _parse_selector_or_none(cfg.train.eval_selector)
    _check(eval_scorer == "agent" and eval_method is not None, "train.eval_selector",
           f"must be agent:METHOD (e.g. agent:events), got {cfg.train.eval_selector!r}")
    h = cfg.haystack
    _check(h.num_frames in (None, cfg.policy.num_frames) or cfg.policy.likelihood == "plackett_luce",
           "haystack.num_frames", "a T_s other than policy.num_frames needs policy.likelihood plackett_luce (one term "
           "per set; per-frame terms of sets of different sizes cannot share a batch)")
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
    _check(t.num_coordinators <= t.max_lag + 1, "train.num_coordinators",
           f"must be at most train.max_lag + 1 = {t.max_lag + 1} (the batches ever in flight; 0: that many), got "
           f"{t.num_coordinators}")
    _check(t.num_answerers == 0 or t.num_answerers >= t.coordinators(), "train.num_answerers",
           f"must be 0 or at least train.num_coordinators ({t.coordinators()}): each coordinator needs its own "
           f"answerer actors, got {t.num_answerers}")
    _check(t.num_learners == 1, "train.num_learners", "must be 1: the learner is a single Ray Train worker "
           f"(data-parallel learners are not implemented), got {t.num_learners}")
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
    """selection_methods.parse_selector, with (None, None) for an unknown name (validate reports it)."""
    from tspo_ray.method.selection_methods import parse_selector

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
    return Config.load(raw)


def with_selector_features(cfg: Config, spec: FeatureSpec | None, source: str) -> Config:
    """The config with a selector's feature spec in its features section (the store, the workers and the encoder's
    device and batch size stay the config's). A spec field the config sets explicitly (its YAML file or an
    override) to other features is refused by name (FeatureSpec.adopt says why). spec None: the config as is."""
    if spec is None:
        return cfg
    adopted = spec.adopt(cfg.features, "features", source)
    features = cfg.features.model_copy(update={name: getattr(adopted, name) for name in SPEC_FIELDS})
    return cfg.model_copy(update={"features": features})


def recorded_config(meta: dict[str, Any]) -> Config | None:
    """The config a checkpoint recorded (its metadata's `config`), read through today's declarations, so a
    checkpoint of an earlier version gets today's defaults for fields it predates; None when it recorded none."""
    raw = meta.get("config")
    if not raw:
        return None
    try:
        return Config.load(raw)
    except ConfigError as e:
        raise ConfigError(f"the checkpoint's recorded config: {e}") from None
