"""`jobs/evaluate.py --benchmark`: a benchmark in its own format, evaluated as the reference does it.

1. The questions come from the benchmark's own annotation file (tspo_ray.data.benchmarks.load).
2. Ray Data encodes the candidates of every distinct video into the shared feature store under the selector's
   feature spec (the one recorded with its checkpoint or export; TSPO-0.4B: every candidate of the 1-fps grid at
   native size through its CLIP processor, as the reference scores them; no selector record: the config's, with no
   cap), through the extractor the caller passes (jobs pass
   tspo_ray.distributed.feature_pipeline.ray_extractor); without one, the same extraction runs in this process
   (tests, one-box runs).
3. Each selector picks eval.num_frames of them through the selector API's feature-level path
   (tspo_ray.selector.select_from_features), the one that evaluation, Serve and export share.
4. Optionally the config's answerer answers; then the run (tspo_ray.evaluation.benchmark) writes the frame_idx export,
   the accuracy breakdown and resumes where a killed run stopped.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import torch

from tspo_ray.config import Config, ConfigError, with_selector_features
from tspo_ray.data.frame_idx_export import MAX_EXPORTED_FRAMES
from tspo_ray.data.records import QARecord, resolve_video
from tspo_ray.evaluation.benchmark import AnswerFn, BenchmarkRun, load_benchmark_records, run_benchmark
from tspo_ray.method.selection_methods import parse_selector
from tspo_ray.safe_files import UnsafeFileError
from tspo_ray.selector import select_from_features
from tspo_ray.splits import Extractor, fill_store
from tspo_ray.video.features import FeatureStore, StoreSpec, VideoFeatures


def benchmark_features(cfg: Config, checkpoint: str | Path | None) -> Config:
    """The config with the features the run selects from: those the checkpoint's selector records (every path
    selects with them), or, with no selector record, the config's with every candidate of the grid (no cap), as
    the reference scores them."""
    from tspo_ray.selector import selector_feature_spec

    spec = selector_feature_spec(checkpoint) if checkpoint else None
    if spec is None:
        return cfg.model_copy(update={"features": cfg.features.model_copy(update={"max_candidates": None})})
    return with_selector_features(cfg, spec, str(checkpoint))


class StoreSelection:
    """The SelectFn of a benchmark run: a record's video features from the store (a few videos kept in memory, since
    one video has up to 16k candidates), its question stem's text feature, and select_from_features."""

    def __init__(self, store: FeatureStore, spec: StoreSpec, text: dict[str, torch.Tensor], root: str | Path,
                 k: int, agent=None, inference_mode: str = "top-k", aks: dict | None = None, cache_videos: int = 4):
        self.store, self.spec, self.text, self.root, self.k = store, spec, text, root, k
        self.agent, self.inference_mode, self.aks = agent, inference_mode, dict(aks or {})
        # why a video has no features: the decoder's reason, by feature key (same file, same settings) or by path
        self.failed = store.failed_keys()
        self.errors = {e["video"]: e["reason"] for e in store.errors()}
        self._cache: OrderedDict[str, VideoFeatures] = OrderedDict()
        self.cache_videos = cache_videos

    def features(self, path: str) -> VideoFeatures:
        """The store entry of a video, or ValueError saying why there is none."""
        try:
            key = self.spec.video_key(path)
        except OSError as exc:
            raise ValueError(f"{path}: {exc.strerror or exc}") from None
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if not self.store.has(key):
            reason = self.failed.get(key) or self.errors.get(path) or f"{path}: no features (see the store's errors table)"
            raise ValueError(reason if reason.startswith(path) else f"{path}: {reason}")
        try:
            feats = self.store.get(key)
        except UnsafeFileError as exc:
            raise ValueError(str(exc)) from None
        self._cache[key] = feats
        if len(self._cache) > self.cache_videos:
            self._cache.popitem(last=False)
        return feats

    def __call__(self, record: QARecord, selector: str) -> dict:
        path = resolve_video(record, self.root)
        feats = self.features(path)
        _, method = parse_selector(selector)
        params = self.aks if (method or self.inference_mode) == "aks" else {}
        out = select_from_features(feats.frame_features, self.text[record.question], feats.frame_indices,
                                   feats.timestamps_s, self.k, selector, self.agent, self.inference_mode,
                                   key=record.id, **params)
        return out | {"video": path, "num_candidates": len(feats.frame_indices)}


def answer_fn(answerer) -> AnswerFn:
    """The AnswerFn of a run: one AnswerRequest per (record, selection), answered in one call."""
    from tspo_ray.answerers.base import AnswerRequest

    def answer(pairs: Sequence[tuple[QARecord, dict]]) -> list[dict]:
        requests = [AnswerRequest.for_record(rec, row["video"], row["frame_indices"], row["timestamps_s"],
                                             row["selector"]) for rec, row in pairs]
        return [{"predicted": a.option, "output": a.text, "error": a.extra.get("error")}
                for a in answerer.answer(requests)]

    return answer


def _load_agent(cfg: Config, selectors: Sequence[str], checkpoint: str | None):
    """(agent or None, its inference mode): needed when a selector scores with the agent."""
    if not any(parse_selector(s)[0] == "agent" for s in selectors):
        return None, cfg.agent.inference_mode
    if not checkpoint:
        raise ConfigError("selectors: the agent scorer needs --checkpoint or agent.init_checkpoint (a run folder, "
                          "checkpoint file or TSPO-0.4B folder)")
    from tspo_ray.selector import load_selector_agent

    return load_selector_agent(checkpoint, window=cfg.agent.window, heads=cfg.agent.heads)


def run_benchmark_job(cfg: Config, name: str, annotations: str | Path, videos: str | Path | None,
                      selectors: Sequence[str], out_dir: str | Path, checkpoint: str | None = None,
                      answer: bool = False, extract: Extractor | None = None, progress: bool = True,
                      chunk_size: int = 16, on_chunk=None) -> dict:
    """Records, features of the selector's candidates, selection by each selector, optional answers, the frame_idx
    export and the breakdown table; resumable in out_dir. Returns the run's summary."""
    from tspo_ray.video.encoders import load_encoder

    k = cfg.eval.num_frames
    if k > MAX_EXPORTED_FRAMES:
        raise ConfigError(f"eval.num_frames: the frame_idx export holds at most {MAX_EXPORTED_FRAMES} frames, got {k}")
    for s in selectors:
        parse_selector(s)  # a bad name fails before any work
    checkpoint = checkpoint or cfg.agent.init_checkpoint
    root = (Path(videos) if videos else Path(annotations).parent).absolute()  # absolute: Ray workers find the files
    records = load_benchmark_records(name, annotations, root, answer=answer)
    agent, inference_mode = _load_agent(cfg, selectors, checkpoint)
    cfg = benchmark_features(cfg, checkpoint)
    # the driver encodes only question stems: on the CPU, leaving the GPUs to the encoder actors
    encoder = load_encoder({**cfg.features.encoder.to_dict(), "device": "cpu"})
    spec = cfg.features.store_spec(encoder.name)
    store = FeatureStore(cfg.features.store)
    paths = list(dict.fromkeys(resolve_video(r, root) for r in records))
    counts = fill_store(cfg, paths, spec, store, encoder, extract, progress)
    text = store.text_features(encoder, (r.question for r in records))
    aks = cfg.eval.aks.to_dict()
    select = StoreSelection(store, spec, text, root, k, agent, inference_mode, aks)
    settings: dict[str, Any] = {"checkpoint": str(checkpoint) if checkpoint else None, "inference_mode": inference_mode,
                                "encoder": cfg.features.encoder.to_dict(), "fps": cfg.features.fps,
                                "max_candidates": cfg.features.max_candidates, "frame_size": cfg.features.frame_size,
                                "aks": aks}
    if cfg.features.min_candidates is not None:
        settings["min_candidates"] = cfg.features.min_candidates
    answer_with = None
    if answer:
        from tspo_ray.answerers import build_answerer, settings_for

        answer_with = answer_fn(build_answerer(cfg.answerer.kind, settings_for(cfg)))
        settings["answerer"] = {"kind": cfg.answerer.kind, "settings": cfg.answerer.settings}
    run = BenchmarkRun(name, Path(annotations), Path(out_dir), list(selectors), k, settings)
    return run_benchmark(run, records, select, answer_with, chunk_size=chunk_size, progress=progress,
                         on_chunk=on_chunk, notes={"features": {"pipeline": pipeline_of(extract), **counts}})


def pipeline_of(extract) -> str:
    """Which path extracted the features: "local" without an extractor, else the one it chose (a Ray job's
    extractor records its features.engine choice as `engine`; "ray" when it records none)."""
    return "local" if extract is None else getattr(extract, "engine", "ray")
