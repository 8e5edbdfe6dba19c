"""Ray Data feature pipeline: decode each distinct video once and CLIP-encode it across workers.

Each actor loads the encoder once, decodes (resized inside the worker) and encodes a video, and writes the entry to
the shared store itself; only keys, paths and status strings flow back to the driver, never pixels or embeddings.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tspo_ray.features import FeatureSpec, FeatureStore, compute_video_features, plan_extraction


def extract_kwargs(cfg) -> dict:
    """extract_with_ray's actor keywords from a Config (see placement.encoder_actor_options)."""
    from tspo_ray.distributed.placement import encoder_actor_options

    opts = encoder_actor_options(cfg)
    return {"num_workers": opts["concurrency"], "cpus_per_worker": opts["num_cpus"],
            "gpus_per_worker": opts["num_gpus"], "resources": opts.get("resources")}


class EncodeVideos:
    """A Ray Data callable class: one encoder per actor, one video per row."""

    def __init__(self, encoder_spec: dict, feature_spec: FeatureSpec, store_root: str, batch_size: int = 64):
        from tspo_ray.encoders import load_encoder

        self.encoder = load_encoder(encoder_spec)
        self.spec, self.store, self.batch_size = feature_spec, FeatureStore(store_root), batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        status, reason, frames = [], [], []
        for path, key in zip(batch["video"], batch["key"]):
            try:
                feats = compute_video_features(str(path), self.encoder, self.spec, self.batch_size)
                self.store.put(str(key), feats)
                status.append("encoded"), reason.append(""), frames.append(len(feats.frame_indices))
            except Exception as exc:  # quarantine any failure of one video; the pipeline goes on
                status.append("failed"), reason.append(str(exc)), frames.append(0)
        return {"video": batch["video"], "key": batch["key"], "status": np.array(status),
                "reason": np.array(reason), "frames": np.array(frames)}


def extract_with_ray(videos: Sequence[str], encoder_spec: dict, spec: FeatureSpec, store: FeatureStore,
                     num_workers: int = 2, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
                     resources: dict[str, float] | None = None, progress: bool = True,
                     retry_failed: bool = False) -> dict[str, int]:
    """Encode the videos not in the store yet; returns counts and records failures in the errors table.

    Each encoder actor asks Ray for cpus_per_worker CPUs, gpus_per_worker GPUs (give it one, or a fraction, when the
    encoder's device is CUDA: Ray hides the GPUs of actors that did not ask) and the custom `resources`."""
    import ray
    from tqdm import tqdm

    todo, counts, errors = plan_extraction(videos, spec, store, retry_failed)
    counts["frames"] = 0
    rows = [{"video": path, "key": key} for path, key in todo]
    if rows:
        ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 64 * num_workers)).map_batches(
            EncodeVideos,
            fn_constructor_kwargs={"encoder_spec": encoder_spec, "feature_spec": spec, "store_root": str(store.root)},
            batch_size=1, concurrency=num_workers, num_cpus=cpus_per_worker,
            **({"num_gpus": gpus_per_worker} if gpus_per_worker else {}),
            **({"resources": dict(resources)} if resources else {}),
        )
        for row in tqdm(ds.iter_rows(), total=len(rows), desc="encode videos", disable=not progress):
            if row["status"] == "encoded":
                counts["encoded"] += 1
                counts["frames"] += int(row["frames"])
            else:
                counts["failed"] += 1
                errors.append({"video": str(row["video"]), "key": str(row["key"]), "reason": str(row["reason"])})
    if errors:
        store.record_errors(errors)
    return counts
