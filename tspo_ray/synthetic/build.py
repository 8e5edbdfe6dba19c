"""One video of the world end to end: plan, write (or keep a complete one), questions. Runs in pool workers.

Layout under the dataset root: videos/<split>-NNNN.mp4; the split JSONLs sit in the root, so a record's `video`
("videos/test-0003.mp4") is relative to its JSONL's folder (tspo_ray.data.records.resolve_video_path).
Every video has its own seed, a function of (world seed, split, index), so the splits hold disjoint videos.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from tspo_ray.synthetic.families import families_from_manifest
from tspo_ray.synthetic.questions import make_questions
from tspo_ray.synthetic.world import WorldSettings, plan_video
from tspo_ray.synthetic.writer import fingerprint, video_is_complete, write_video

SPLITS = ("train", "val", "test")
MAX_VIDEOS_PER_SPLIT = 1_000_000


def video_seed(seed: int, split: str, index: int) -> int:
    """The seed of one video: distinct for every (world seed, split, index) with index < MAX_VIDEOS_PER_SPLIT."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {SPLITS}")
    if not 0 <= index < MAX_VIDEOS_PER_SPLIT:
        raise ValueError(f"video index {index} out of range 0..{MAX_VIDEOS_PER_SPLIT - 1}")
    return (seed * len(SPLITS) + SPLITS.index(split)) * MAX_VIDEOS_PER_SPLIT + index


@dataclass(frozen=True)
class VideoJob:
    out: str  # dataset root
    split: str
    index: int
    seed: int  # the world seed
    settings: WorldSettings
    families: tuple[dict, ...] = ()  # the question families as the manifest keeps them (Family.to_manifest)

    @property
    def video_id(self) -> str:
        return f"{self.split}-{self.index:04d}"

    @property
    def video_rel(self) -> str:
        return f"videos/{self.video_id}.mp4"


def build_video(job: VideoJob) -> dict:
    """Plan, write and question one video. Never raises for a bad video: a failure comes back as
    status "failed" with the reason (and no records), so the build quarantines it and goes on."""
    t0 = time.perf_counter()
    vseed = video_seed(job.seed, job.split, job.index)
    rng = random.Random(vseed)
    plan = plan_video(job.video_id, rng, job.settings)
    records = make_questions(plan, job.video_rel, rng, families_from_manifest(job.families))
    for r in records:
        r["meta"]["video_seed"] = vseed
    result = {"video_id": job.video_id, "split": job.split, "plan": plan.to_dict(), "records": records,
              "status": "kept", "error": None}
    path = Path(job.out) / job.video_rel
    try:
        if not video_is_complete(path, fingerprint(plan, job.settings.size, vseed), plan.num_frames):
            write_video(plan, path, size=job.settings.size, seed=vseed)
            result["status"] = "written"
    except Exception as exc:  # quarantine: one bad video must not stop the world
        result.update(status="failed", records=[], error=f"{path}: {type(exc).__name__}: {exc}")
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result
