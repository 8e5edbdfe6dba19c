"""Ray Data feature pipeline: decode and encode as separate stages, entries assembled and written by the driver.

    videos ─► DecodeChunks (CPU actors: candidates, uint8 frames, <= `chunk` frames a row)
           ─► EncodeChunks (encoder actors, model loaded once; CPU or GPU by the encoder's device)
           ─► VideoAssembler (driver: a video's chunks in order -> one store entry, or its failure reason)

Splitting the stages lets decoding of the next video overlap encoding of this one, each on its own core, and puts
GPUs only where the model runs. Only paths, keys, candidate indices and times, uint8 frames (between the two
stages) and embeddings cross the object store. A long video becomes many rows, so memory holds a few chunks, not a
video. Entries are built by `tspo_ray.video.features.assemble_features` from the same chunks and batches as the single-process
loop (`tspo_ray.video.features.extract_local`), so both write the same features.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tspo_ray.distributed.feature_decode import DecodeChunks, DecodeSpec
from tspo_ray.video.features import FeatureStore, StoreSpec, assemble_features, plan_extraction


def extract_kwargs(cfg) -> dict:
    """extract_with_ray's actor keywords from a Config (see placement.encoder_actor_options)."""
    from tspo_ray.distributed.placement import encoder_actor_options

    opts = encoder_actor_options(cfg)
    return {"num_workers": opts["concurrency"], "cpus_per_worker": opts["num_cpus"],
            "gpus_per_worker": opts["num_gpus"], "resources": opts.get("resources")}


def choose_engine(engine: str, videos: int, cpus: float, placed: bool, min_cpus: int,
                  min_videos: int) -> tuple[str, str]:
    """("ray" or "local", why) for `videos` still to encode on `cpus` CPUs. Pure.

    engine 'ray' or 'local' is taken as set. 'auto' picks Ray Data when the encoder actors must go where the config
    places them (`placed`: a GPU encoder or custom worker_resources), or when there are at least `min_cpus` CPUs and
    `min_videos` videos: its start-up (actors, model loads; ~30 s to the first entry on 2 CPUs) is paid once, and
    on fewer CPUs its stages share the cores the one-process loop would use alone."""
    if engine not in ("auto", "ray", "local"):
        raise ValueError(f"features.engine must be auto, ray or local, got {engine!r}")
    if videos < 0 or cpus < 0:
        raise ValueError(f"videos and cpus must be >= 0, got {videos} and {cpus}")
    if engine != "auto":
        return engine, f"features.engine={engine}"
    rule = f"Ray Data pays off from {min_cpus} CPUs and {min_videos} videos"
    if placed:
        return "ray", "the encoder actors are placed by the config (a GPU or features.worker_resources)"
    if cpus >= min_cpus and videos >= min_videos:
        return "ray", rule
    return "local", f"{rule}; features.engine=ray forces it"


def engine_line(engine: str, why: str, videos: int, cpus: float) -> str:
    """The job's one log line on who extracts the features."""
    path = "Ray Data" if engine == "ray" else "one-process path"
    return f"features: {videos} videos on {cpus:g} CPUs: {path} ({why})"


def available_cpus() -> float:
    """CPUs of the connected Ray: the cluster's, but at most this machine's cores on a one-node Ray (a local Ray may
    declare more logical CPUs than there are cores)."""
    import os

    import ray

    cpus = float(ray.cluster_resources().get("CPU", 0))
    return min(cpus, float(os.cpu_count() or 1)) if len(ray.nodes()) == 1 else cpus


def ray_extractor(cfg, progress: bool = True, log=print, encoder=None):
    """An extractor for tspo_ray.splits.prepare_split and the benchmark job: extract_with_ray with the config's
    encoder and actor placement, on the cluster at RAY_ADDRESS or a local Ray (started here when none is), or the
    one-process loop (with `encoder`, else the config's, loaded here, on features.worker_cpus torch threads as an
    encoder actor) where features.engine says Ray Data does not pay (choose_engine); `log` gets the line saying
    which."""
    import os

    from tspo_ray.config import is_cuda
    from tspo_ray.distributed import init_ray
    from tspo_ray.video.features import extract_local

    f = cfg.features
    placed = is_cuda(f.encoder.device) or bool(f.worker_resources) or bool(f.worker_gpus)

    def extract(videos: Sequence[str], spec: StoreSpec, store: FeatureStore) -> dict[str, int]:
        todo = plan_extraction(videos, spec, store, f.retry_failed)[0]
        cpus = float(os.cpu_count() or 1)
        if todo and f.engine != "local":
            init_ray()  # a no-op when already connected
            cpus = available_cpus()
        engine, why = choose_engine(f.engine, len(todo), cpus, placed, f.ray_min_cpus, f.ray_min_videos)
        extract.engine = engine  # for the job's summary (evaluation.benchmark_job.pipeline_of)
        if todo:
            log(engine_line(engine, why, len(todo), cpus))
        if engine == "local":
            import torch

            from tspo_ray.threads import use_torch_threads
            from tspo_ray.video.encoders import load_encoder

            # the threads one encoder actor would run: torch's default (one per core) encoded 5-7x slower on a
            # loaded 2-core machine (docs/results.md, feature extraction)
            before = use_torch_threads(max(1, int(f.worker_cpus)))
            try:
                return extract_local(videos, encoder or load_encoder(f.encoder), spec, store, progress=progress,
                                     retry_failed=f.retry_failed)
            finally:
                torch.set_num_threads(before)
        return extract_with_ray(videos, f.encoder.to_dict(), spec, store, progress=progress,
                                retry_failed=f.retry_failed, **extract_kwargs(cfg))

    return extract


class EncodeChunks:
    """Ray Data callable class: one encoder per actor (torch intra-op threads = its CPUs); frames in, embeddings out.

    Each row's frames are encoded batch_size at a time from the row's start, as the single-process loop encodes a
    chunk, so the features are the same."""

    def __init__(self, encoder_spec: dict, batch_size: int = 64, threads: int | None = None):
        import torch

        from tspo_ray.video.encoders import load_encoder

        if threads:
            torch.set_num_threads(threads)
        self.encoder = load_encoder(encoder_spec)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {k: v for k, v in batch.items() if k != "frames"}
        embeddings, reasons = [], list(batch["reason"])
        for i, frames in enumerate(batch["frames"]):
            emb = np.zeros((0, self.encoder.dim), np.float32)
            if not reasons[i]:
                try:
                    emb = self.encoder.encode_frames(np.asarray(frames), batch_size=self.batch_size).numpy()
                except Exception as exc:  # a chunk the encoder rejects fails its video, not the pipeline
                    reasons[i] = f"{batch['video'][i]}: cannot encode ({type(exc).__name__}: {exc})"
            embeddings.append(emb)
        out["embeddings"] = _stack(embeddings)
        out["reason"] = np.array(reasons)
        return out


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """[B, ...] when the shapes agree, else an object array of B arrays (Ray Data stores it as a ragged tensor)."""
    if len({a.shape for a in arrays}) == 1:
        return np.stack(arrays)
    ragged = np.empty(len(arrays), dtype=object)
    ragged[:] = arrays
    return ragged


class VideoAssembler:
    """The driver's end of the pipeline: collects each video's encoded chunks (which may arrive in any order from
    several encoder actors) and, once all have arrived, writes the store entry; a failed chunk fails its video."""

    def __init__(self, store: FeatureStore):
        self.store = store
        self.pending: dict[str, dict[int, dict]] = {}
        self.finished: set[str] = set()

    def add(self, row: dict) -> tuple[str, dict] | None:
        """Take one encoded row; returns ("encoded", {frames}) or ("failed", error row) when a video finishes."""
        key, chunk = str(row["key"]), int(row["chunk"])
        if key in self.finished:
            return None  # an earlier chunk of a video that already failed
        if str(row["reason"]):
            self.finished.add(key)
            self.pending.pop(key, None)
            return "failed", {"video": str(row["video"]), "key": key, "reason": str(row["reason"])}
        parts = self.pending.setdefault(key, {})
        parts[chunk] = row
        last = next((c for c, r in parts.items() if bool(r["last"])), None)
        if last is None or len(parts) != last + 1:
            return None
        rows = [parts[c] for c in range(last + 1)]
        feats = assemble_features(
            [_tensor(r["embeddings"]) for r in rows], np.concatenate([r["frame_indices"] for r in rows]),
            np.concatenate([r["timestamps_s"] for r in rows]), float(rows[0]["duration_s"]), str(row["video"]))
        self.finished.add(key)
        del self.pending[key]
        try:
            self.store.put(key, feats)
        except OSError as exc:  # as the single-process loop: a video whose entry cannot be written fails alone
            return "failed", {"video": str(row["video"]), "key": key, "reason": str(exc)}
        return "encoded", {"frames": len(feats.frame_indices)}


def _tensor(embeddings):
    import torch

    return torch.from_numpy(np.array(embeddings, dtype=np.float32))  # a writable copy


def _pool(most: int):
    from ray.data import ActorPoolStrategy

    return ActorPoolStrategy(min_size=1, max_size=max(1, most))


def build_dataset(todo: Sequence[tuple[str, str]], encoder_spec: dict, spec: StoreSpec, num_workers: int = 2,
                  cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0, resources: dict[str, float] | None = None,
                  decode_workers: int = 1, decode_cpus: float = 1.0, chunk: int = 256, batch_size: int = 64):
    """The lazy Ray Data dataset of encoded chunk rows for (path, key) pairs.

    One input block per video, so a video streams through as soon as it is decoded. The actor pools start with one
    actor and grow to decode_workers / num_workers while the cluster has room (a 2-CPU machine: one of each)."""
    import ray

    if chunk < 1 or decode_workers < 1 or num_workers < 1:
        raise ValueError(f"chunk, decode_workers and num_workers must be >= 1, got {chunk}, {decode_workers}, "
                         f"{num_workers}")
    rows = [{"video": path, "key": key} for path, key in todo]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    ds = ds.map_batches(DecodeChunks, fn_constructor_kwargs={"spec": DecodeSpec.of(spec), "chunk": chunk},
                        batch_size=1, compute=_pool(decode_workers), num_cpus=decode_cpus)
    threads = max(1, int(cpus_per_worker)) if not gpus_per_worker else None
    return ds.map_batches(
        EncodeChunks,
        fn_constructor_kwargs={"encoder_spec": encoder_spec, "batch_size": batch_size, "threads": threads},
        batch_size=1, compute=_pool(num_workers), num_cpus=cpus_per_worker,
        **({"num_gpus": gpus_per_worker} if gpus_per_worker else {}),
        **({"resources": dict(resources)} if resources else {}),
    )


def extract_with_ray(videos: Sequence[str], encoder_spec: dict, spec: StoreSpec, store: FeatureStore,
                     num_workers: int = 2, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
                     resources: dict[str, float] | None = None, progress: bool = True, retry_failed: bool = False,
                     decode_workers: int = 1, decode_cpus: float = 1.0, chunk: int = 256) -> dict[str, int]:
    """Encode the videos not in the store yet; returns counts and records failures in the errors table.

    Each encoder actor asks Ray for cpus_per_worker CPUs (its torch threads), gpus_per_worker GPUs (give it one, or
    a fraction, when the encoder's device is CUDA: Ray hides the GPUs of actors that did not ask) and the custom
    `resources`; each decode actor for decode_cpus CPUs. Known-bad videos are skipped unless retry_failed."""
    from tqdm import tqdm

    todo, counts, errors = plan_extraction(videos, spec, store, retry_failed)
    counts["frames"] = 0
    if todo:
        ds = build_dataset(todo, encoder_spec, spec, num_workers, cpus_per_worker, gpus_per_worker, resources,
                           decode_workers, decode_cpus, chunk)
        assembler = VideoAssembler(store)
        with tqdm(total=len(todo), desc="encode videos", disable=not progress) as bar:
            for row in ds.iter_rows():
                done = assembler.add(row)
                if done is None:
                    continue
                status, info = done
                bar.update()
                if status == "encoded":
                    counts["encoded"] += 1
                    counts["frames"] += info["frames"]
                else:
                    counts["failed"] += 1
                    errors.append(info)
    if errors:
        store.record_errors(errors)
    return counts
