"""Building the embedded world: every video of every split (in a process pool), the split JSONLs, the manifest.

pipelines/make_synthetic.py is the command line over build_world; the main job builds the default world through it.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

from tspo_ray.safe_files import write_jsonl_atomic, write_text_atomic
from tspo_ray.synthetic.build import SPLITS, VideoJob, build_video
from tspo_ray.synthetic.families import Family, families_from_manifest, load_families, shipped_family_files
from tspo_ray.synthetic.stats import balance, uniform_coverage
from tspo_ray.synthetic.tiny_clip import shipped_vocabulary
from tspo_ray.synthetic.world import WorldSettings
from tspo_ray.synthetic.writer import CODEC

#: the main job's default world: videos per split
DEFAULT_COUNTS = {"train": 130, "val": 18, "test": 45}


def run_jobs(jobs: list[VideoJob], workers: int, progress: bool) -> list[dict]:
    """build_video over the jobs (in a process pool when workers > 1), results in job order."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="videos", unit="video", disable=not progress)
    results = []
    if workers <= 1:
        for job in jobs:
            results.append(build_video(job))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(build_video, jobs):
                results.append(result)
                bar.update()
    bar.close()
    return results


def build_world(out: str | Path, counts: dict[str, int], seed: int = 0, min_s: float = 120, max_s: float = 480,
                fps: int = 2, size: int = 128, workers: int = 2, progress: bool = True,
                settings: WorldSettings | None = None, families: Sequence[str | Path] | None = None) -> dict:
    """Build (or complete) the world under `out` with counts[split] videos per split; returns the manifest.

    `settings` overrides min_s/max_s/fps/size when given. `families`: the question family files (default: the
    shipped ones, tspo_ray/synthetic/families/); each is checked against the tiny CLIP's vocabulary, and the
    manifest keeps a copy of every one, which the embedded answerer reads its question grammar from.
    """
    out = Path(out)
    unknown = set(counts) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; known: {SPLITS}")
    settings = settings or WorldSettings(fps=fps, size=size, min_s=min_s, max_s=max_s)
    kept = tuple(f.to_manifest() for f in load_families(families, vocabulary=shipped_vocabulary()))
    t0 = time.time()
    jobs = [VideoJob(str(out), split, i, seed, settings, kept) for split in SPLITS
            for i in range(counts.get(split, 0))]
    results = run_jobs(jobs, workers, progress)
    manifest = {"seed": seed, "settings": settings.to_dict(), "codec": CODEC, "pix_fmt": "yuv420p",
                "video_seed": "(seed * 3 + split index [train, val, test]) * 1e6 + video index",
                "families": list(kept), "splits": {}}
    quarantined = [{"video": r["video_id"], "reason": r["error"]} for r in results if r["status"] == "failed"]
    for split in SPLITS:
        rows = [r for r in results if r["split"] == split]
        if split not in counts:
            continue
        records = [q for r in rows for q in r["records"]]
        write_jsonl_atomic(out / "plans" / f"{split}.jsonl", [r["plan"] for r in rows if r["status"] != "failed"])
        write_jsonl_atomic(out / f"{split}.jsonl", records)
        durations = [r["plan"]["duration_s"] for r in rows]
        manifest["splits"][split] = {
            "videos": sum(r["status"] != "failed" for r in rows), "failed": sum(r["status"] == "failed" for r in rows),
            "questions": len(records), "hours": round(sum(durations) / 3600, 2),
            **balance(records), "uniform_8_of_128": uniform_coverage(records, settings.fps, k=8),
        }
    write_jsonl_atomic(out / "quarantine.jsonl", quarantined)
    manifest["videos_written"] = sum(r["status"] == "written" for r in results)
    manifest["videos_kept"] = sum(r["status"] == "kept" for r in results)
    manifest["build_seconds"] = round(time.time() - t0, 1)
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def format_table(manifest: dict) -> str:
    """Counts per split and family, and the share of questions uniform 8-of-128 sampling sees any target of."""
    families = sorted({f for s in manifest["splits"].values() for f in s["families"]})
    head = f"{'split':<6} {'videos':>6} {'failed':>6} {'hours':>6} {'questions':>9} " + " ".join(
        f"{f:>16}" for f in families)
    lines = [head, "-" * len(head)]
    for split, s in manifest["splits"].items():
        lines.append(f"{split:<6} {s['videos']:>6} {s['failed']:>6} {s['hours']:>6} {s['questions']:>9} "
                     + " ".join(f"{s['families'].get(f, 0):>16}" for f in families))
    for split, s in manifest["splits"].items():
        cov = s["uniform_8_of_128"]
        lines.append(f"{split}: uniform 8-of-128 hits a target span in "
                     + ", ".join(f"{f} {v['hit_rate']:.0%}" for f, v in cov.items()))
    return "\n".join(lines)


def world_families(root: str | Path) -> list[Family]:
    """The question families a world was built with (the copies in its manifest); the shipped ones for a world
    whose manifest keeps none. The embedded answerer reads its question grammar from these."""
    try:
        manifest = json.loads((Path(root) / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = {}
    entries = manifest.get("families")
    return families_from_manifest(entries) if entries else load_families()


def _built_with_shipped_families(root: Path) -> bool:
    try:
        kept = json.loads((root / "manifest.json").read_text()).get("families") or []
    except (OSError, ValueError):
        return False
    return sorted(e["text"] for e in kept) == sorted(p.read_text(encoding="utf-8") for p in shipped_family_files())


def ensure_world(cfg) -> None:
    """The embedded default builds its synthetic world on first use, and its questions again when the shipped
    families changed (the videos are kept); any other data.root must exist already."""
    from tspo_ray.config import ConfigError, DataConfig

    root = Path(cfg.data.root)
    default = cfg.data.root == DataConfig().root
    if (root / cfg.data.train).exists() and (not default or _built_with_shipped_families(root)):
        return
    if not default:
        raise ConfigError(f"data.root: {root / cfg.data.train} does not exist")
    print(f"building the embedded synthetic world in {root} (videos already there are kept)")
    build_world(root, DEFAULT_COUNTS)
