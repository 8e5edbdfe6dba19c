"""Atomic training checkpoints: agent, optimizer, step, tau schedule, data position, RNG states, config.

Each checkpoint is one file written to a temp name and renamed; `latest.json` (also written atomically) names the
newest, so a crash mid-write never leaves a half checkpoint behind or a pointer to one.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tspo_ray.agent import TemporalAgent
from tspo_ray.data.records import write_text_atomic

LATEST = "latest.json"


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(directory: str | Path, step: int, payload: dict[str, Any]) -> Path:
    """Write payload (tensors, state dicts, plain values) as checkpoint-<step>.pt and point latest.json at it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"checkpoint-{step:06d}.pt"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"step": step, **payload}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    write_text_atomic(directory / LATEST, json.dumps({"step": step, "file": path.name}))
    return path


def latest_checkpoint(directory: str | Path) -> Path | None:
    pointer = Path(directory) / LATEST
    if not pointer.exists():
        return None
    return Path(directory) / json.loads(pointer.read_text())["file"]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"{path}: no {LATEST} (no checkpoint written there yet)")
        path = found
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    return torch.load(path, map_location="cpu", weights_only=False)


def load_agent(path: str | Path, window: int = 12, heads: int = 8) -> TemporalAgent:
    """An agent from one of our checkpoints (file or run dir), or from a TSPO-0.4B-layout state dict.

    Our checkpoints hold {"agent": state_dict, "agent_config": {...}}; a published checkpoint is a flat state dict
    (.pt/.bin/.safetensors) whose selector keys start with "selector.".
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return TemporalAgent.from_reference_state_dict(load_file(str(path)), window=window, heads=heads)
    ckpt = load_checkpoint(path)
    if "agent" in ckpt and "agent_config" in ckpt:
        agent = TemporalAgent(**ckpt["agent_config"])
        agent.load_state_dict(ckpt["agent"])
        return agent
    if any(k.startswith("selector.") for k in ckpt):
        return TemporalAgent.from_reference_state_dict(ckpt, window=window, heads=heads)
    raise ValueError(f"{path}: neither a tspo-ray checkpoint nor a TSPO-0.4B state dict")
