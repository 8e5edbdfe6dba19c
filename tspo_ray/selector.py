"""The public keyframe-selector API: a CLIP encoder, an optional temporal agent, and the selection methods.

    sel = KeyframeSelector.from_pretrained("TSPO-0.4B")             # the published layout (CLIP + selector.*)
    sel = KeyframeSelector.from_pretrained("outputs/run/checkpoints")  # a tspo-ray run (encoder from its config)
    sel = KeyframeSelector.from_pretrained("clip-vit-large-patch14")   # a CLIP alone: clip:* and uniform only
    S = sel.scores(frames_uint8, "What colour is the car?")           # eq. 3, before the temperature
    out = sel.select("video.mp4", "What colour is the car?", k=64, method="agent:top-k")

Selection over precomputed features (`select_from_features`, `select_positions`) is the one code path that
evaluation, Serve and export share, so the same checkpoint picks the same frames everywhere.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from pydantic import Field

from tspo_ray.config import recorded_config
from tspo_ray.method import selection_methods
from tspo_ray.method.selection import (  # noqa: F401  (the selection functions, re-exported here)
    method_inputs,
    clip_scores,
    on_cpu,
    select_positions,
    selector_scores,
    set_policy_selection,
)
from tspo_ray.settings import Settings
from tspo_ray.video.features import FeatureSpec, VideoFeatures, compute_video_features, reference_feature_spec

#: frames decoded and encoded at a time by select(): 16k candidates of a 720p video never sit in memory at once
DECODE_CHUNK = 256
#: beside a TSPO-0.4B-layout folder exported by tspo_ray.export: the inference mode chosen on validation, heads, window
SELECTOR_CONFIG = "selector_config.json"


def selection_record(key: str, selector: str, positions: torch.Tensor, scores: torch.Tensor | None,
                     frame_indices, timestamps_s, elapsed_s: float) -> dict:
    """One selection result (docs/design.md): positions, native frame indices, timestamps, scores, timing."""
    positions = positions.tolist()
    return {
        "id": key, "method": selector, "positions": positions,
        "frame_indices": [int(frame_indices[p]) for p in positions],
        "timestamps_s": [round(float(timestamps_s[p]), 3) for p in positions],
        "scores": [round(float(scores[p]), 5) for p in positions] if scores is not None else None,
        "selection_ms": elapsed_s * 1000,
    }


def select_from_features(frame_features: torch.Tensor, text_feature: torch.Tensor, frame_indices, timestamps_s,
                         k: int, method: str = "agent", agent=None, inference_mode: str = "top-k",
                         key: str = "", **params) -> dict:
    """Select k of T candidates from their features: the selection record of `selection_record`."""
    t0 = time.perf_counter()
    positions, scores = select_positions(frame_features.float(), text_feature.float(), method, k, agent,
                                         inference_mode, **params)
    return selection_record(key, method, positions, scores, frame_indices, timestamps_s, time.perf_counter() - t0)


def agent_scores_packed(agent, frame_features: Sequence[torch.Tensor],
                        text_features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The agent's S for several videos in ONE forward pass: the videos are packed end to end along T (no padding,
    so mixed lengths waste nothing), each attending only to its own frames and positions. Equal to scoring them one
    at a time up to float rounding (tests/test_agent.py)."""
    lengths = [int(f.shape[0]) for f in frame_features]
    packed = torch.cat([f.float() for f in frame_features])
    texts = torch.stack([t.float() for t in text_features])
    with torch.no_grad():
        return list(agent(packed, texts, lengths=lengths).split(lengths))


@dataclass
class SelectionJob:
    """One selection of a batch (select_many): a video's candidate features, its question's feature, the request."""

    frame_features: torch.Tensor
    text_feature: torch.Tensor
    frame_indices: Any
    timestamps_s: Any
    k: int
    method: str = "agent"
    key: str = ""


def select_many(jobs: Sequence[SelectionJob], agent=None, inference_mode: str = "top-k") -> list[dict]:
    """select_from_features for every job, with all agent scoring in one packed forward pass (agent_scores_packed);
    the records are those one-at-a-time selection gives. `selection_ms` is the batch's time up to this record."""
    t0 = time.perf_counter()
    parsed = [selection_methods.parse_selector(job.method) for job in jobs]  # a bad name fails before any scoring
    set_aware = {i for i, (_, method) in enumerate(parsed)
                 if (method or inference_mode) in selection_methods.SET_METHODS}
    by_agent = [i for i, (scorer, _) in enumerate(parsed) if scorer == "agent" and i not in set_aware]
    if by_agent and agent is None:
        selector_scores(torch.zeros(1, 1), torch.zeros(1), "agent", None)  # raises the clear error
    scores: dict[int, torch.Tensor | None] = {}
    policies: dict[int, tuple] = {}
    if set_aware and hasattr(agent, "set_policies"):  # the set-aware agent's policies in one batched pass
        order = sorted(set_aware)
        with torch.no_grad():
            parts, penalty = agent.set_policies([jobs[i].frame_features.float() for i in order],
                                                [jobs[i].text_feature.float() for i in order])
        policies = {i: (s, K, penalty) for i, (s, K) in zip(order, parts)}
    if by_agent:
        packed = agent_scores_packed(agent, [jobs[i].frame_features for i in by_agent],
                                     [jobs[i].text_feature for i in by_agent])
        scores.update(zip(by_agent, packed))
    out = []
    for i, (job, (scorer, method)) in enumerate(zip(jobs, parsed)):
        feats = job.frame_features.float()
        if i in set_aware:
            positions, s = set_policy_selection(feats, job.text_feature.float(), job.k, agent, policies.get(i))
            out.append(selection_record(job.key, job.method, positions, s, job.frame_indices, job.timestamps_s,
                                        time.perf_counter() - t0))
            continue
        s = scores[i] if i in scores else selector_scores(feats, job.text_feature.float(), scorer)
        method = method or inference_mode
        base = method_inputs(method, scorer, feats, job.text_feature.float(), agent)
        positions = selection_methods.select(method, feats.shape[0], job.k, on_cpu(s), **on_cpu(base))
        out.append(selection_record(job.key, job.method, positions, s, job.frame_indices, job.timestamps_s,
                                    time.perf_counter() - t0))
    return out


# --- loading ----------------------------------------------------------------------------------------------------

def _safetensors_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def reference_selector_state(folder: str | Path) -> dict[str, torch.Tensor]:
    """The `selector.*` tensors of a TSPO-0.4B-layout folder, read with safetensors only (no pickles)."""
    from safetensors import safe_open

    state = {}
    for file in _safetensors_files(Path(folder)):
        with safe_open(str(file), framework="pt", device="cpu") as fh:
            state.update({k: fh.get_tensor(k) for k in fh.keys() if k.startswith("selector.")})
    return state


def _is_clip_folder(folder: Path) -> bool:
    cfg = folder / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") == "clip"
    except (json.JSONDecodeError, AttributeError):
        return False


class SelectorConfig(Settings):
    """selector_config.json of an exported run (python -m tspo_ray.export): what the TSPO-0.4B layout cannot record.
    The published TSPO-0.4B has no such file: its defaults apply."""

    label: ClassVar[str] = "selector config"
    inference_mode: str = "top-k"
    """The selection method of the `agent` selector, chosen on validation."""
    anchors: int = Field(selection_methods.ANCHORS, ge=1)
    """Frames the agent places under the anchors method (the run's policy.anchors)."""
    window: int = Field(12, ge=1)
    """Attention window w."""
    heads: int = Field(8, ge=1)
    """Attention heads."""
    dim: int | None = Field(None, ge=1)
    """Feature dim of the agent (the CLIP's projection)."""
    source_checkpoint: str | None = None
    """The checkpoint the export was made from."""
    layout: str = "reference"
    """'reference' (the TSPO-0.4B tensor names) or 'tspo-ray' (selector.agent.*: a kind or setting the reference layout cannot express)."""
    kind: str = "eq3"
    """The agent kind (tspo_ray.method.kinds)."""
    position_scale: float = Field(1.0, gt=0)
    """PE scale of the agent (1: the reference's eq. 3)."""
    agent_config: dict[str, Any] | None = None
    """The agent's whole config, for the tspo-ray layout: the agent is rebuilt from it by kind."""
    step: int = Field(0, ge=0)
    """Its training step."""
    features: dict[str, Any] | None = None
    """The feature spec the agent was trained with, less the encoder (the folder's own CLIP is it): fps,
    max_candidates, min_candidates, frame_size. None (the TSPO-0.4B layout): the reference's pipeline."""


def read_selector_config(folder: Path, **defaults: Any) -> SelectorConfig:
    """A TSPO-0.4B-layout folder's selector_config.json read through its declaration (defaults: none there)."""
    file = folder / SELECTOR_CONFIG
    if not file.is_file():
        return SelectorConfig(**defaults)
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: not a selector config ({exc})") from None
    try:
        return SelectorConfig.load({**defaults, **raw} if isinstance(raw, dict) else raw)
    except ValueError as exc:
        raise ValueError(f"{file}: {exc}") from None


def layout_settings(folder: Path, window: int, heads: int) -> tuple[str, int, int]:
    """(inference mode, window, heads) of a TSPO-0.4B-layout folder: its selector_config.json where it has one (an
    exported run), else top-k and the given window and heads (the published TSPO-0.4B has no such file)."""
    cfg = read_selector_config(folder, window=window, heads=heads)
    return cfg.inference_mode, cfg.window, cfg.heads


def layout_feature_spec(folder: Path) -> FeatureSpec:
    """The features a TSPO-0.4B-layout folder's selector scores: those its selector_config.json records, through the
    folder's own CLIP, else the reference's pipeline (reference_feature_spec)."""
    spec = reference_feature_spec(folder)
    recorded = read_selector_config(folder).features
    if recorded is None:
        return spec
    if "encoder" in recorded:
        raise ValueError(f"{folder / SELECTOR_CONFIG}: features.encoder: the folder's own CLIP is the encoder")
    return FeatureSpec.load({**recorded, "encoder": spec.encoder.to_dict()}, f"{folder / SELECTOR_CONFIG}: features")


def selector_feature_spec(path: str | Path) -> FeatureSpec | None:
    """The feature spec a selector records: a TSPO-0.4B-layout folder's (layout_feature_spec), or the features
    section of the config a tspo-ray checkpoint (file or run folder) recorded; None when it recorded none."""
    from tspo_ray.checkpoint import is_own_checkpoint_file, load_checkpoint, recommended_checkpoint

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint or model folder")
    if path.is_dir() and _is_clip_folder(path):
        return layout_feature_spec(path)
    if path.is_dir():
        path = recommended_checkpoint(path) or path
    if path.suffix == ".safetensors" and not is_own_checkpoint_file(path):
        return None  # a bare TSPO-0.4B state dict: no record beside it
    config = recorded_config(load_checkpoint(path))
    return config.features.spec() if config else None


def layout_anchors(folder: Path) -> int:
    """Frames the agent places under the anchors method: its selector_config.json's `anchors` (an exported run),
    else selection_methods.ANCHORS."""
    return read_selector_config(folder).anchors


#: selector tensors of an agent the TSPO-0.4B layout cannot express: selector.agent.<the agent's own state-dict name>
OWN_LAYOUT_PREFIX = "selector.agent."


def layout_agent(folder: Path, state: dict[str, torch.Tensor], window: int, heads: int):
    """(agent, inference mode) of an exported folder's selector tensors: the reference's names, or, where its
    selector_config.json records an agent config (a kind or setting the TSPO-0.4B layout cannot express), that
    agent rebuilt by kind and loaded from selector.agent.* (tspo_ray.export)."""
    from tspo_ray.method.agent import TemporalAgent
    from tspo_ray.method.kinds import agent_from_config

    mode, window, heads = layout_settings(folder, window, heads)
    recorded = read_selector_config(folder).agent_config
    if recorded is None:
        return TemporalAgent.from_reference_state_dict(state, window=window, heads=heads), mode
    agent = agent_from_config(recorded)
    own = {k[len(OWN_LAYOUT_PREFIX):]: v.float() for k, v in state.items() if k.startswith(OWN_LAYOUT_PREFIX)}
    missing = sorted(set(agent.state_dict()) - set(own))
    if missing:
        raise ValueError(f"{folder}: its {SELECTOR_CONFIG} records a {recorded.get('kind', 'eq3')} agent but "
                         f"{OWN_LAYOUT_PREFIX}{missing[0]} (and {len(missing) - 1} more) are not in its weights")
    agent.load_state_dict(own)
    return agent, mode


def load_selector_agent(path: str | Path, window: int = 12, heads: int = 8):
    """(agent in eval mode, its inference mode) from a TSPO-0.4B-layout folder, a TSPO-0.4B state dict file or a
    tspo-ray checkpoint (file or run folder; the mode is the one its config recorded, top-k when absent). A run
    folder gives its best checkpoint on validation when it has one, else its newest (recommended_checkpoint)."""
    from tspo_ray.checkpoint import is_own_checkpoint_file, load_agent, load_checkpoint, recommended_checkpoint

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint or model folder")
    if path.is_dir() and _is_clip_folder(path):
        state = reference_selector_state(path)
        if not state:
            raise ValueError(f"{path}: a CLIP folder without selector.* weights; the agent scorer is unavailable")
        agent, mode = layout_agent(path, state, window, heads)
        agent.anchors = layout_anchors(path)
        return agent.eval(), mode
    if path.is_dir():
        path = recommended_checkpoint(path) or path  # no pointer: load_checkpoint says so below
    meta: dict = {}
    if path.suffix != ".safetensors" or is_own_checkpoint_file(path):
        try:
            meta = load_checkpoint(path)
        except (EOFError, RuntimeError) as exc:
            raise ValueError(f"{path}: not a tspo-ray checkpoint, CLIP or TSPO-0.4B folder ({exc})") from None
    config = recorded_config(meta)
    mode = meta.get("inference_mode") or (config.agent.inference_mode if config else "top-k")
    agent = load_agent(path, window=window, heads=heads).eval()
    # frames it places under the anchors method
    agent.anchors = config.policy.anchors if config else selection_methods.ANCHORS
    return agent, mode


class KeyframeSelector:
    """CLIP encoder + (optional) temporal agent: scores candidates and selects keyframes (see the module doc)."""

    def __init__(self, encoder, agent=None, inference_mode: str = "top-k", source: str = "",
                 feature_spec: FeatureSpec | None = None):
        if agent is not None and agent.dim != encoder.dim:
            raise ValueError(f"agent feature dim {agent.dim} does not match the encoder's {encoder.dim}")
        self.encoder, self.agent = encoder, agent.eval() if agent is not None else None
        self.inference_mode, self.source = inference_mode, source
        #: the features it scores (rate, cap, frame size, encoder): recorded with its weights, used on every path
        self.feature_spec = feature_spec or FeatureSpec()

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", encoder: Any = None, window: int = 12,
                        heads: int = 8) -> "KeyframeSelector":
        """A TSPO-0.4B-layout folder (CLIPModel + selector.* keys + CLIPProcessor files), a CLIP folder alone, or a
        tspo-ray checkpoint (run folder or file; its encoder comes from `encoder` or the checkpoint's config)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such checkpoint or model folder")
        if path.is_dir() and _is_clip_folder(path):
            from tspo_ray.video.encoders.hf_clip import HFClipEncoder

            spec = layout_feature_spec(path)
            spec = spec.model_copy(update={"encoder": spec.encoder.model_copy(update={"device": device})})
            clip = HFClipEncoder(str(path), device=device, exact_processor=spec.encoder.exact_processor)
            state = reference_selector_state(path)
            if not state:
                return cls(clip, None, source=f"CLIP {path} (no selector weights)", feature_spec=spec)
            agent, mode = layout_agent(path, state, window, heads)
            agent.anchors = layout_anchors(path)
            layout = "tspo-ray layout" if any(k.startswith(OWN_LAYOUT_PREFIX) for k in state) else "TSPO-0.4B layout"
            return cls(clip, agent, inference_mode=mode, source=f"{layout} {path}", feature_spec=spec)
        return cls._from_checkpoint(path, device, encoder, window, heads)

    @classmethod
    def _from_checkpoint(cls, path: Path, device: str, encoder: Any, window: int, heads: int) -> "KeyframeSelector":
        from tspo_ray.video.encoders import load_encoder

        agent, mode = load_selector_agent(path, window, heads)
        spec = selector_feature_spec(path)
        if encoder is None and spec is not None:
            encoder = spec.encoder.to_dict()
        if encoder is None:
            raise ValueError(f"{path}: the checkpoint names no encoder; pass encoder={{'backend': ..., 'model': ...}}")
        if isinstance(encoder, dict) or not hasattr(encoder, "encode_frames"):
            # an encoder given here replaces the recorded one in the spec: it is what the features come from
            given = {**FeatureSpec.load({"encoder": encoder}).encoder.to_dict(), "device": device}
            spec = (spec or FeatureSpec()).model_copy(update={"encoder": FeatureSpec.load({"encoder": given}).encoder})
            encoder = load_encoder(given)
        return cls(encoder, agent, inference_mode=mode, source=f"tspo-ray checkpoint {path}", feature_spec=spec)

    # --- scoring and selection ---------------------------------------------------------------------------------
    def features(self, frames: np.ndarray, question: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw F_f [T, D], raw F_t [D]) of uint8 frames [T, H, W, 3] and a question stem (no options)."""
        return self.encoder.encode_frames(frames).float(), self.encoder.encode_text([question])[0].float()

    def scores(self, frames: np.ndarray, question: str, scorer: str = "agent") -> torch.Tensor:
        """S of eq. 3 before the temperature (scorer "agent"), or cos(F_f, F_t) (scorer "clip"): [T]."""
        if scorer == "agent" and self.agent is None:
            selector_scores(torch.zeros(1, 1), torch.zeros(1), "agent", None)  # raises the clear error
        return selector_scores(*self.features(frames, question), scorer, self.agent)

    def select_from_features(self, frame_features: torch.Tensor, text_feature: torch.Tensor, frame_indices,
                             timestamps_s, k: int, method: str = "agent", key: str = "", **params) -> dict:
        """select_from_features with this selector's agent and inference mode."""
        return select_from_features(frame_features, text_feature, frame_indices, timestamps_s, k, method,
                                    self.agent, self.inference_mode, key, **params)

    def encode_video(self, video: str | Path) -> VideoFeatures:
        """The features of a video's candidates under this selector's feature spec, as the feature store holds
        them (decoded and encoded DECODE_CHUNK frames at a time)."""
        return compute_video_features(video, self.encoder, self.feature_spec.store_spec(self.encoder.name),
                                      chunk=DECODE_CHUNK)

    def select(self, video: str | Path, question: str, k: int, method: str = "agent", **params) -> dict:
        """Keyframes of a video file for a question: native frame_indices, timestamps_s and scores of the k frames
        (in temporal order), chosen among the candidates its feature spec gives."""
        selection_methods.parse_selector(method)  # a bad name fails before any decoding
        feats = self.encode_video(video)
        text = self.encoder.encode_text([question])[0].float()
        out = self.select_from_features(feats.frame_features.float(), text, feats.frame_indices, feats.timestamps_s,
                                        k, method, key=str(video), **params)
        return {**out, "num_candidates": len(feats.frame_indices)}
