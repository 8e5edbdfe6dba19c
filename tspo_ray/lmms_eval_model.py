"""`tspo_select`: an lmms-eval model that selects its own frames, then asks another lmms-eval video model.

Registered through lmms-eval's own mechanism for models outside its tree: the `lmms_eval.models` entry-point group
(pyproject.toml), whose payload is a ModelManifest (lmms-eval 0.7.0, `uv sync --group lmms`). Used as

    lmms-eval --model tspo_select --tasks longvideobench_val_v --model_args \\
        inner=qwen2_5_vl,selector=/models/TSPO-0.4B,num_frames=64,method=agent,store=/shared/features,\\
        inner_pretrained=Qwen/Qwen2.5-VL-7B-Instruct,inner_max_num_frames=64

Arguments prefixed `inner_` go to the inner model, unprefixed (and `--batch_size` too); `device` is the selector's. For every request the video's candidates on the
`fps` grid are scored with KeyframeSelector (features from the feature store `store` when it has them, written to
it when not, so a second run does not encode again) against the question without its options (the document's
`question_field`, else the first line of the prompt), and the inner model is handed a clip of exactly the selected
frames at their own times (tspo_ray.video.clips) in place of the video. `selections` (a JSON-lines file) receives
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
from tspo_ray.video.features import StoreSpec, FeatureStore, compute_video_features
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


class TSPOSelect(lmms):
    """Selects num_frames frames per request with a KeyframeSelector, then delegates to the inner model."""

    is_simple = True

    def __init__(self, inner: str, selector: str, num_frames: int = 64, method: str = "agent", fps: float = 1.0,
                 max_candidates: int | None = None, store: str = "outputs/lmms_features",
                 clips: str = "outputs/lmms_clips", selections: str = "", question_field: str = "question",
                 device: str = "cpu", batch_size: int | str = 1, max_batch_size: int | None = None,
                 **kwargs) -> None:
        super().__init__()
        from lmms_eval.models import get_model

        unknown = sorted(k for k in kwargs if not k.startswith("inner_"))
        if unknown:
            raise ValueError(f"tspo_select: unknown arguments {unknown}; arguments for the inner model start with "
                             f"inner_ (inner_pretrained=...)")
        self.selector = KeyframeSelector.from_pretrained(selector, device=device)
        self.num_frames, self.method, self.question_field = int(num_frames), str(method), str(question_field)
        self.spec = StoreSpec(float(fps), None if max_candidates in (None, "None", "") else int(max_candidates),
                                None, self.selector.encoder.name)
        self.store, self.clips = FeatureStore(store), Path(clips)
        self.selections = Path(selections) if selections else None
        inner_args = {k[len("inner_"):]: v for k, v in kwargs.items()}
        inner_args.setdefault("batch_size", batch_size)  # lmms-eval's --batch_size reaches the model that batches
        self.inner = get_model(str(inner), force_simple=True)(**inner_args)

    def _features(self, video: str):
        key = self.spec.video_key(video)
        if self.store.has(key):
            return self.store.get(key)
        feats = compute_video_features(video, self.selector.encoder, self.spec)
        self.store.put(key, feats)
        return feats

    def select(self, video: str, question: str, name: str) -> dict:
        """The selection record for one video and question, and the clip of its frames at clips/<name>.mp4."""
        feats = self._features(video)
        text = self.selector.encoder.encode_text([question])[0].float()
        record = self.selector.select_from_features(feats.frame_features.float(), text, feats.frame_indices,
                                                    feats.timestamps_s, self.num_frames, self.method, key=video)
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
