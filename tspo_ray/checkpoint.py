"""Atomic training checkpoints: agent, optimizer, step, tau schedule, data position, RNG states, config.

Each checkpoint is one safetensors file (tensors) whose header holds the rest as JSON (tspo_ray.safe_files), written
to a temp name, fsynced, renamed and its folder fsynced; only then is `latest.json` written the same way to name it,
and older checkpoints are pruned only after that: a crash or a power loss mid-write never leaves a half checkpoint
behind or a pointer to one (docs/durability.md). Nothing is ever unpickled: checkpoints of the earlier pickle
format (.pt) are refused with the command that converts them once:

    python -m tspo_ray.checkpoint convert OLD.pt NEW.safetensors
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tspo_ray.method.agent import TemporalAgent
from tspo_ray.safe_files import (
    STRUCTURE_KEY,
    DiskFullError,
    UnsafeFileError,
    looks_like_pickle,
    read_payload,
    read_tensors,
    write_payload,
    write_text_atomic,
)

LATEST = "latest.json"
BEST = "best.json"  # the checkpoint with the best validation accuracy so far (train.eval_every)
SUFFIX = ".safetensors"


class OldFormatError(UnsafeFileError):
    """A checkpoint in the earlier pickle format: refused, with the converter command in the message."""


def rng_state() -> dict[str, Any]:
    """torch, numpy and python RNG states (a tensor, a tuple with an array, a tuple of ints: all stored exactly)."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(directory: str | Path, step: int, payload: dict[str, Any], keep: int | None = None) -> Path:
    """Write payload (tensors, state dicts, plain values) as checkpoint-<step>.safetensors; point latest.json at it.

    keep: how many of the newest checkpoints to keep (older ones are deleted once the new one is in place and
    latest.json names it); None keeps every one."""
    directory = Path(directory)
    path = directory / f"checkpoint-{step:06d}{SUFFIX}"
    try:
        write_payload(path, {"step": step, **payload})
        write_text_atomic(directory / LATEST, json.dumps({"step": step, "file": path.name}))
    except DiskFullError as exc:  # latest.json still names the previous checkpoint, which is complete
        newest = latest_checkpoint(directory)
        kept = (f"; the newest complete checkpoint is {newest.name} (free space, then resume from it)"
                if newest is not None else "; no earlier checkpoint of this run exists")
        raise DiskFullError(exc.path, kept) from exc
    if keep is not None:
        prune_checkpoints(directory, keep)
    return path


def prune_checkpoints(directory: str | Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest checkpoints (by step), never the ones latest.json and best.json name;
    returns the deleted."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    named = {p.name for p in (latest_checkpoint(directory), best_checkpoint(directory)) if p is not None}
    found = sorted(Path(directory).glob(f"checkpoint-*{SUFFIX}"))  # zero-padded steps sort by step
    doomed = [p for p in found[:-keep] if p.name not in named]
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


def mark_best(directory: str | Path, path: Path, metric: float) -> None:
    """Point best.json at a checkpoint of this folder (atomically), with its validation accuracy."""
    write_text_atomic(Path(directory) / BEST, json.dumps({"step": int(path.stem.split("-")[-1]), "file": path.name,
                                                          "val_accuracy": float(metric)}))


def best_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint best.json names (None when the run did no periodic validation)."""
    return _pointed(Path(directory), BEST)


def latest_checkpoint(directory: str | Path) -> Path | None:
    return _pointed(Path(directory), LATEST)


def latest_step(directory: str | Path) -> int:
    """The step latest.json names (0 before the first checkpoint, or while it cannot be read); the checkpoint
    itself is not read."""
    try:
        return int(json.loads((Path(directory) / LATEST).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def recommended_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint a run folder offers for use: the best on validation (best.json, the one its final table
    evaluated and whose inference mode was chosen), else the newest. Resuming uses latest_checkpoint instead."""
    return best_checkpoint(directory) or latest_checkpoint(directory)


def _pointed(directory: Path, pointer_name: str) -> Path | None:
    pointer = directory / pointer_name
    if not pointer.exists():
        return None
    try:
        name = json.loads(pointer.read_text())["file"]
    except (ValueError, KeyError, TypeError):
        raise UnsafeFileError(f"{pointer}: not a checkpoint pointer ({{\"step\": N, \"file\": NAME}})") from None
    if not isinstance(name, str) or Path(name).name != name:  # a bare file name in this folder, nothing else
        raise UnsafeFileError(f"{pointer}: names {name!r}, not a file in {directory}")
    return Path(directory) / name


def _refuse_old_format(path: Path) -> None:
    if path.suffix in (".pt", ".pth", ".bin") or looks_like_pickle(path):
        raise OldFormatError(
            f"{path}: a checkpoint in the earlier pickle format, which is no longer loaded because unpickling can run "
            f"code. Convert it once (tensors and plain values only; anything else is refused):\n"
            f"    python -m tspo_ray.checkpoint convert {path} {path.with_suffix(SUFFIX)}")


def check_resumable(directory: str | Path) -> None:
    """OldFormatError/UnsafeFileError before a job starts when the checkpoint it would resume from is refused."""
    found = latest_checkpoint(directory)
    if found is not None and found.exists():
        _refuse_old_format(found)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"{path}: no {LATEST} (no checkpoint written there yet)")
        path = found
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    _refuse_old_format(path)
    return read_payload(path)


def published_selector_weights(path: Path) -> dict[str, torch.Tensor]:
    """The `selector.*` tensors of TSPO-0.4B-layout weights: a .safetensors file, or a save_pretrained folder of
    them (the bundled CLIP's tensors are not read)."""
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    state: dict[str, torch.Tensor] = {}
    for f in files:
        _refuse_old_format(f)
        state.update(read_tensors(f, keep=lambda k: k.startswith("selector."))[0])
    return state


def is_own_checkpoint_file(path: Path) -> bool:
    """A safetensors file written by save_checkpoint (its header holds the JSON structure), not published weights."""
    return path.is_file() and path.suffix == SUFFIX and STRUCTURE_KEY in read_tensors(path, keep=lambda k: False)[1]


def load_agent(path: str | Path, window: int = 12, heads: int = 8) -> TemporalAgent:
    """An agent from one of our checkpoints (file or run dir), or from TSPO-0.4B-layout weights (safetensors only).

    Our checkpoints hold {"agent": state_dict, "agent_config": {...}}; published weights are a flat state dict
    whose selector keys start with "selector." (a .safetensors file or a save_pretrained folder).
    """
    path = Path(path)
    is_run_dir = path.is_dir() and (path / LATEST).exists()
    if not is_run_dir and (path.is_dir() or path.suffix == SUFFIX):
        if is_own_checkpoint_file(path):
            ckpt = load_checkpoint(path)  # one of ours, addressed by file
        else:
            state = published_selector_weights(path)
            if not state:
                raise ValueError(f"{path}: no checkpoint ({LATEST}) and no TSPO-0.4B selector.* weights")
            return TemporalAgent.from_reference_state_dict(state, window=window, heads=heads)
    else:
        ckpt = load_checkpoint(path)
    if "agent" in ckpt and "agent_config" in ckpt:
        from tspo_ray.method.kinds import agent_from_config

        agent = agent_from_config(ckpt["agent_config"])
        agent.load_state_dict(ckpt["agent"])
        return agent
    if any(k.startswith("selector.") for k in ckpt):
        return TemporalAgent.from_reference_state_dict(ckpt, window=window, heads=heads)
    raise ValueError(f"{path}: neither a tspo-ray checkpoint nor a TSPO-0.4B state dict")


def convert(old: str | Path, new: str | Path) -> Path:
    """Rewrite an earlier .pt checkpoint (or a flat .pt/.bin state dict) as safetensors + JSON. Loads with
    weights_only=True, so a file holding anything but tensors and plain containers is refused, never run."""
    import pickle

    old, new = Path(old), Path(new)
    if new.suffix != SUFFIX:
        raise ValueError(f"{new}: the converted file must end in {SUFFIX}")
    try:
        payload = torch.load(old, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeFileError(
            f"{old}: refused: it holds objects other than tensors and plain containers, which could only be read by "
            f"running code from the file ({first}). Re-create it from its source instead.") from None
    write_payload(new, payload)
    return new


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tspo_ray.checkpoint", description="checkpoint utilities")
    sub = ap.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="rewrite an earlier pickle (.pt) checkpoint as safetensors + JSON, once")
    conv.add_argument("old")
    conv.add_argument("new")
    args = ap.parse_args(argv)
    try:
        out = convert(args.old, args.new)
    except (UnsafeFileError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    if (Path(args.old).parent / LATEST).exists():
        print(f"(a run folder's {LATEST} still names the old file: point it at {out.name} to resume from it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
