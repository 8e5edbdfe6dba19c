"""`tspo_select`: an lmms-eval model that selects its own frames, then asks another lmms-eval video model.

Registered through lmms-eval's own mechanism for models outside its tree: the `lmms_eval.models` entry-point group
(pyproject.toml), whose payload is a ModelManifest (lmms-eval 0.7.0, `uv sync --group lmms`). Used as

    lmms-eval --model tspo_select --tasks longvideobench_val_v --model_args \\
        inner=qwen2_5_vl,selector=/models/TSPO-0.4B,num_frames=64,method=agent,store=/shared/features,\\
        inner_pretrained=Qwen/Qwen2.5-VL-7B-Instruct,inner_max_num_frames=64

Arguments prefixed `inner_` go to the inner model, unprefixed (and `--batch_size` too); `device` is the selector's.
For every request the video's candidates are scored with KeyframeSelector under the selector's own feature spec
(rate, cap, frame size, encoder: recorded with its checkpoint or export; TSPO-0.4B: the reference's pipeline), with
features from the feature store `store` when it has them, written to it when not, so a second run does not encode
again. `fps` and `max_candidates` may be given only as the spec has them: other values are refused, since the
selector would pick other frames here than on every other path. Each video is scored against the question without
its options (the document's `question_field`, else the first line of the prompt), and the inner model is handed a
clip of exactly the selected frames at their own times (tspo_ray.video.clips) in place of the video. `selections` (a JSON-lines file) receives
one record per request: the task, the document, the frame indices, timestamps and the clip.

Frames are chosen as `jobs/evaluate.py --benchmark` chooses them (KeyframeSelector.select_from_features on the same
candidates). The inner model decides what it does with a clip: lmms-eval's qwen2_5_vl reads every frame of it when
its max_num_frames is at least num_frames (and its reader, qwen-vl-utils, is told to use decord:
FORCE_QWENVL_VIDEO_READER=decord); it sees the clip's mean frame rate, not each frame's own time.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest

from tspo_ray.selector import KeyframeSelector
from tspo_ray.video.clips import write_selection_clip
from tspo_ray.config import ConfigError
from tspo_ray.video.features import FeatureSpec, FeatureStore, compute_video_features
from tspo_ray.video.info import VideoError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def manifest() -> ModelManifest:
    """The entry point's payload: lmms-eval finds `tspo_select` here."""
    return ModelManifest(model_id="tspo_select", simple_class_path="tspo_ray.lmms_eval_model.TSPOSelect")


def question_of(doc: dict, context: str, field: str) -> str:
    """The question without its options: the document's field when it has one, else the prompt's first line."""
    value = doc.get(field) if isinstance(doc, dict) else None
    if isinstance(value, str) and value.strip():
        return value.strip()
    return next((line.strip() for line in str(context).splitlines() if line.strip()), str(context))


def check_candidate_args(spec: FeatureSpec, fps, max_candidates, source: str) -> None:
    """ValueError when model_args give a candidate rate or cap other than the selector's feature spec has."""
    given = {}
    if fps not in (None, ""):
        given["fps"] = float(fps)
    if max_candidates not in (None, ""):
        given["max_candidates"] = None if str(max_candidates).lower() in ("none", "all") else int(max_candidates)
    try:
        spec.adopt(FeatureSpec.load(given, "tspo_select"), "tspo_select", source)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


class FrameChooser:
    """The plug-in's selection: a KeyframeSelector, its feature spec, the feature store; one record per request."""

    def __init__(self, selector: str, num_frames: int = 64, method: str = "agent", fps=None, max_candidates=None,
                 store: str = "outputs/lmms_features", device: str = "cpu"):
        self.selector = KeyframeSelector.from_pretrained(selector, device=device)
        self.num_frames, self.method = int(num_frames), str(method)
        check_candidate_args(self.selector.feature_spec, fps, max_candidates, selector)
        self.spec = self.selector.feature_spec.store_spec(self.selector.encoder.name)
        self.store = FeatureStore(store)

    def features(self, video: str):
        key = self.spec.video_key(video)
        if self.store.has(key):
            return self.store.get(key)
        feats = compute_video_features(video, self.selector.encoder, self.spec)
        self.store.put(key, feats)
        return feats

    def choose(self, video: str, question: str) -> dict:
        """The selection record of num_frames frames of a video for a question."""
        feats = self.features(video)
        text = self.selector.encoder.encode_text([question])[0].float()
        return self.selector.select_from_features(feats.frame_features.float(), text, feats.frame_indices,
                                                  feats.timestamps_s, self.num_frames, self.method, key=video)


class TSPOSelect(lmms):
    """Selects num_frames frames per request with a KeyframeSelector, then delegates to the inner model."""

    is_simple = True

    def __init__(self, inner: str, selector: str, num_frames: int = 64, method: str = "agent",
                 fps: float | None = None, max_candidates: int | str | None = None,
                 store: str = "outputs/lmms_features", clips: str = "outputs/lmms_clips", selections: str = "",
                 question_field: str = "question",
                 device: str = "cpu", batch_size: int | str = 1, max_batch_size: int | None = None,
                 **kwargs) -> None:
        super().__init__()
        from lmms_eval.models import get_model

        unknown = sorted(k for k in kwargs if not k.startswith("inner_"))
        if unknown:
            raise ValueError(f"tspo_select: unknown arguments {unknown}; arguments for the inner model start with "
                             f"inner_ (inner_pretrained=...)")
        self.chooser = FrameChooser(selector, num_frames, method, fps, max_candidates, store, device)
        self.selector, self.question_field, self.clips = self.chooser.selector, str(question_field), Path(clips)
        self.selections = Path(selections) if selections else None
        inner_args = {k[len("inner_"):]: v for k, v in kwargs.items()}
        inner_args.setdefault("batch_size", batch_size)  # lmms-eval's --batch_size reaches the model that batches
        self.inner = get_model(str(inner), force_simple=True)(**inner_args)

    def select(self, video: str, question: str, name: str) -> dict:
        """The selection record for one video and question, and the clip of its frames at clips/<name>.mp4."""
        record = self.chooser.choose(video, question)
        clip = write_selection_clip(video, record["frame_indices"], record["timestamps_s"], self.clips / f"{name}.mp4")
        return {**record, "clip": str(clip), "question": question}

    def _with_selected_clip(self, request: Instance) -> Instance:
        context, gen_kwargs, doc_to_visual, doc_id, task, split = request.arguments
        doc = self.task_dict[task][split][doc_id]
        visuals = doc_to_visual(doc)
        visuals = visuals if isinstance(visuals, list) else [visuals]
        videos = [v for v in visuals if isinstance(v, str) and v.lower().endswith(VIDEO_SUFFIXES)]
        if len(videos) != 1:
            raise ValueError(f"tspo_select: {task} document {doc_id} has {len(videos)} videos; it selects frames "
                             f"of exactly one")
        question = question_of(doc, context, self.question_field)
        name = hashlib.sha1(f"{task}|{split}|{doc_id}|{videos[0]}|{question}".encode()).hexdigest()[:16]
        try:
            record = self.select(videos[0], question, name)
        except (VideoError, OSError) as exc:  # one line naming the document and the reason, not a decoder trace
            raise ValueError(f"tspo_select: {task} document {doc_id}: {videos[0]}: {exc}") from None
        if self.selections is not None:
            self.selections.parent.mkdir(parents=True, exist_ok=True)
            with self.selections.open("a") as f:
                f.write(json.dumps({"task": task, "split": split, "doc_id": doc_id, "video": videos[0],
                                    **{k: record[k] for k in ("question", "frame_indices", "timestamps_s", "clip",
                                                              "method")}}) + "\n")
        clip = record["clip"]
        swapped = [clip if v == videos[0] else v for v in visuals]
        args = (context, gen_kwargs, lambda _doc, out=swapped: list(out), doc_id, task, split)
        return dataclasses.replace(request, arguments=args)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        self.inner.task_dict = self.task_dict
        return self.inner.generate_until([self._with_selected_clip(r) for r in requests])

    def loglikelihood(self, requests: list[Instance]):
        self.inner.task_dict = self.task_dict
        return self.inner.loglikelihood([self._with_selected_clip(r) for r in requests])

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("tspo_select answers single-round requests")
