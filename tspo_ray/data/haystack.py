"""Needle-in-a-haystack built online at the feature level, as the reference trainer builds it for needle questions.

The question's own candidates are cut into 1..max_target_chunks chunks, each a random sorted subset of
chunk_frames candidates (all of them when there are fewer); other_chunks chunks of chunk_frames candidates spread
evenly over a random other training video (the reference loads 50 uniform frames of a random training record) are
added; all chunks are shuffled and concatenated, so a haystack has 650-800 candidates with the defaults. Each
candidate keeps its source file, native frame index and timestamp, and a mask says which are the question's own.
R_T of a selection is the masked fraction of the selected candidates; the total reward is R_A + R_T.

The answerer watches the haystack as one clip: the selected frames in haystack order, each decoded from its own
file, at the clip's own times (candidate position x CLIP_SPACING_S). Everything is a pure function of its inputs
and the seed; tspo_ray.training.scoring turns a haystack item's sampled sets into the answerer's job.
"""
from __future__ import annotations

import zlib
from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

from tspo_ray.data.items import FeatureItem
from tspo_ray.data.records import QARecord

#: seconds between two candidates on the haystack clip the answerer watches (the reference's 1-fps grid)
CLIP_SPACING_S = 1.0
DEFAULT_FAMILIES = ("needle_attribute",)


def temporal_mask_reward(target_mask: np.ndarray, positions: Sequence[int]) -> float:
    """R_T = the fraction of the selected candidates (positions into the haystack) that are the target's. Pure."""
    pos = np.asarray(positions, dtype=np.int64)
    if pos.size == 0:
        return 0.0
    return float(np.asarray(target_mask, dtype=bool)[pos].mean())


def candidate_videos(item: FeatureItem) -> tuple[str, ...]:
    """The file of each candidate of an item."""
    if item.frame_videos is not None:
        return tuple(item.frame_videos)
    return (item.video_path,) * len(item.frame_indices)


def is_needle_question(record: QARecord, families: Sequence[str] = DEFAULT_FAMILIES) -> bool:
    """Whether a question goes into a haystack: TSPO-10K "specific" items, or a record of one of `families`."""
    meta = record.meta
    return bool(meta.get("needle_source")) or meta.get("tspo_type") == "specific" or record.family in families


def target_chunks(n: int, rng: np.random.Generator, chunk_frames: int, max_chunks: int) -> list[np.ndarray]:
    """1..max_chunks chunks of the target's n candidates: random sorted subsets of chunk_frames (all n when n is
    not more), drawn independently, so a candidate can appear in several chunks (as upstream)."""
    count = int(rng.integers(1, max_chunks + 1))
    if n <= chunk_frames:
        return [np.arange(n) for _ in range(count)]
    return [np.sort(rng.choice(n, size=chunk_frames, replace=False)) for _ in range(count)]


def spread_chunk(n: int, chunk_frames: int) -> np.ndarray:
    """chunk_frames positions evenly over n candidates, first and last included (all n when n is not more)."""
    if n <= chunk_frames:
        return np.arange(n)
    return np.linspace(0, n - 1, chunk_frames).astype(np.int64)


def build_haystack(target: FeatureItem, pool: Sequence[FeatureItem], rng: np.random.Generator,
                   chunk_frames: int = 50, max_target_chunks: int = 4, other_chunks: int = 12) -> FeatureItem:
    """The haystack item of `target`: its chunks and other_chunks chunks of pool items from other files, shuffled
    and concatenated. The question, its text feature and video_path stay the target's."""
    own = set(candidate_videos(target))
    others = [p for p in pool if not own & set(candidate_videos(p))]
    if not others:
        raise ValueError(f"{target.key}: the pool holds no item from another video to build a haystack from")
    dim = target.frame_features.shape[-1]
    chunks = [(target, pos, True) for pos in target_chunks(len(target.frame_indices), rng, chunk_frames,
                                                           max_target_chunks)]
    for _ in range(other_chunks):
        src = others[int(rng.integers(len(others)))]
        if src.frame_features.shape[-1] != dim:
            raise ValueError(f"{src.key}: feature dim {src.frame_features.shape[-1]} differs from {target.key}'s {dim}")
        chunks.append((src, spread_chunk(len(src.frame_indices), chunk_frames), False))
    chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    videos: list[str] = []
    for src, pos, _ in chunks:
        names = candidate_videos(src)
        videos += [names[p] for p in pos]
    return replace(
        target,
        frame_features=torch.cat([src.frame_features[torch.as_tensor(pos)] for src, pos, _ in chunks]),
        frame_indices=np.concatenate([np.asarray(src.frame_indices)[pos] for src, pos, _ in chunks]).astype(np.int64),
        timestamps_s=np.concatenate([np.asarray(src.timestamps_s, dtype=np.float64)[pos] for src, pos, _ in chunks]),
        frame_videos=tuple(videos),
        target_mask=np.concatenate([np.full(len(pos), mine, dtype=bool) for _, pos, mine in chunks]),
    )


def item_rng(seed: int, key: str) -> np.random.Generator:
    """The generator of one item's haystack: a function of the batch seed and the question id only."""
    return np.random.default_rng([int(seed) % 2**63, zlib.crc32(key.encode())])


def haystack_items(batch: Sequence[FeatureItem], pool: Sequence[FeatureItem], seed: int, probability: float,
                   families: Sequence[str] = DEFAULT_FAMILIES, chunk_frames: int = 50, max_target_chunks: int = 4,
                   other_chunks: int = 12) -> list[FeatureItem]:
    """The batch with each needle question (is_needle_question) replaced, with the given probability, by its
    haystack over chunks of pool items; other items (and items already in a haystack) unchanged, in order.
    Deterministic in (seed, question ids); pass a seed per batch (e.g. the training batch's seed)."""
    if not 0 <= probability <= 1:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    out = []
    for item in batch:
        rng = item_rng(seed, item.key)
        if item.target_mask is None and is_needle_question(item.record, families) and rng.random() < probability:
            item = build_haystack(item, pool, rng, chunk_frames, max_target_chunks, other_chunks)
        out.append(item)
    return out


def options(section) -> dict:
    """haystack_items' keywords from the config's haystack section (tspo_ray.config.HaystackConfig)."""
    return {"probability": section.probability, "families": tuple(section.families),
            "chunk_frames": section.chunk_frames, "max_target_chunks": section.max_target_chunks,
            "other_chunks": section.other_chunks}


def num_frames(item: FeatureItem, default: int, haystack_frames: int | None) -> int:
    """T_s of an item: haystack_frames for haystack items when set, else default."""
    return haystack_frames if item.target_mask is not None and haystack_frames else default
