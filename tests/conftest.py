"""Shared fixtures: a tiny synthetic world (real video files), tiny CLIP models built locally, a local Ray."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pipelines"))
sys.path.insert(0, str(ROOT / "jobs"))
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """Three short haystack videos per split (60-80 s) with their QA records."""
    from tspo_ray.synthetic.dataset import build_world

    out = tmp_path_factory.mktemp("world")
    build_world(out, {"train": 3, "val": 1, "test": 2}, seed=7, min_s=60, max_s=80, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_hf_clip(tmp_path_factory) -> str:
    """A randomly initialised transformers CLIP with the world's word-level tokenizer, saved locally."""
    import torch

    from tspo_ray.synthetic.tiny_clip import build_model, build_tokenizer

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny_clip")
    tok = build_tokenizer()
    model = build_model(len(tok.get_vocab()), width=32, layers=1, projection=16)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def ray_local():
    """The suite's shared local Ray, started on a module's first use and again after a module that ran its own
    (tests/local_ray.py) shut it down; left running for the next test."""
    import ray

    from tspo_ray.distributed import init_ray

    if not ray.is_initialized():
        init_ray("local", num_cpus=4, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    return ray
