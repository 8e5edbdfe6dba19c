"""Durable writes: a checkpoint, a feature entry or latest.json is on the disk before any name or pointer reaches it.

A power loss keeps what was fsynced: a file's data once the file is fsynced, a folder's entries (renames, unlinks)
once the folder is. PowerLoss records every fsync, rename and unlink of a writer and, after each of them, checks the
two states a crash may leave: the folder's last synced entries (nothing since kept) and its current entries (every
rename kept, but file data only where fsynced). In both, every published name must hold synced data and latest.json
must name a checkpoint that is there. A writer stopped between the steps of a publication (the process dies) leaves
the old state or the new one.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from tspo_ray import safe_files
from tspo_ray.checkpoint import LATEST, latest_checkpoint, load_checkpoint, save_checkpoint
from tspo_ray.video.features import FeatureStore, VideoFeatures


def _listing(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in folder.iterdir() if p.is_file()}


class PowerLoss:
    def __init__(self, folder: Path, monkeypatch):
        os.sync()
        self.folder = folder
        self.synced_entries = _listing(folder)  # what the folder holds after a power loss, at worst
        self.synced_data = set(self.synced_entries.values())  # inodes whose data is on the disk
        self.pointers: dict[int, str] = {}  # inode of a synced latest.json -> the file it names
        for name, ino in self.synced_entries.items():
            if name == LATEST:
                self.pointers[ino] = json.loads((folder / name).read_text())["file"]
        self.ops: list[str] = []
        self.violations: list[str] = []
        real_fsync, real_replace, real_unlink = os.fsync, os.replace, os.unlink

        def fsync(fd):
            real_fsync(fd)
            target = os.readlink(f"/proc/self/fd/{fd}")
            if Path(target) == folder:
                self.synced_entries = _listing(folder)
            elif Path(target).parent == folder:
                ino = os.fstat(fd).st_ino
                self.synced_data.add(ino)
                if Path(target).name.startswith(f".{LATEST}."):
                    self.pointers[ino] = json.loads(Path(target).read_text())["file"]
            self._crash_here(f"fsync {Path(target).name}")

        def replace(src, dst, *a, **kw):
            real_replace(src, dst, *a, **kw)
            self._crash_here(f"rename {Path(src).name} -> {Path(dst).name}")

        def unlink(path, *a, **kw):
            real_unlink(path, *a, **kw)
            self._crash_here(f"unlink {Path(path).name}")

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "unlink", unlink)

    def _crash_here(self, op: str) -> None:
        self.ops.append(op)
        for kind, entries in (("synced entries", self.synced_entries), ("current entries", _listing(self.folder))):
            published = {n: i for n, i in entries.items() if not n.startswith(".")}
            for name, ino in published.items():
                if ino not in self.synced_data:
                    self.violations.append(f"after {op} ({kind}): {name} may be empty after a power loss")
            if LATEST in published:
                named = self.pointers.get(published[LATEST])
                if named is not None and named not in published:
                    self.violations.append(f"after {op} ({kind}): {LATEST} names {named}, which is not there")


def test_a_checkpoint_and_its_pointer_survive_a_power_loss_at_every_step(tmp_path, monkeypatch):
    run = tmp_path / "run"
    save_checkpoint(run, 1, {"w": torch.ones(8)})
    save_checkpoint(run, 2, {"w": torch.full((8,), 2.0)})
    model = PowerLoss(run, monkeypatch)
    save_checkpoint(run, 3, {"w": torch.full((8,), 3.0)}, keep=1)  # prunes steps 1 and 2
    assert any(op.startswith("unlink checkpoint-000001") for op in model.ops)
    assert model.violations == []
    # the prune came after the pointer was durable: the folder was synced between latest.json's rename and it
    renamed = next(i for i, op in enumerate(model.ops) if op.endswith(f"-> {LATEST}"))
    pruned = next(i for i, op in enumerate(model.ops) if op.startswith("unlink checkpoint-"))
    assert any(op == f"fsync {run.name}" for op in model.ops[renamed:pruned])


def test_a_feature_entry_is_durable_before_its_name(tmp_path, monkeypatch):
    store = FeatureStore(tmp_path / "store")
    entry = VideoFeatures(torch.ones(3, 4), torch.arange(3).numpy(), torch.arange(3).double().numpy(), 3.0, "v.mp4")
    store.put("first", entry)
    model = PowerLoss(store.video_path("x").parent, monkeypatch)
    store.put("second", entry)
    assert model.violations == []


@pytest.mark.parametrize("step", ["written", "synced", "renamed", "published"])
@pytest.mark.parametrize("target", ["checkpoint", LATEST])
def test_a_writer_killed_between_the_steps_leaves_the_old_state_or_the_new(tmp_path, step, target):
    """A forked writer SIGKILLs itself at one step of one file's publication; the folder then holds a pointer to a
    whole checkpoint (the old one or the new one), and nothing was pruned before the new pointer was published."""
    run = tmp_path / "run"
    save_checkpoint(run, 1, {"w": torch.ones(4)})
    pid = os.fork()
    if pid == 0:  # the writer
        def hook(name, path):
            if name == step and (path.name == LATEST) == (target == LATEST):
                os.kill(os.getpid(), signal.SIGKILL)

        safe_files._step_hook = hook
        try:
            save_checkpoint(run, 2, {"w": torch.full((4,), 2.0)}, keep=1)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    newest = latest_checkpoint(run)
    assert newest is not None and newest.exists()
    step_read = load_checkpoint(newest)["step"]
    assert step_read == (2 if target == LATEST and step in ("renamed", "published") else 1)
    assert (run / "checkpoint-000001.safetensors").exists()
