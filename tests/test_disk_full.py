"""A full disk (ENOSPC) while writing a checkpoint or a feature-store entry: a clear error naming the file, no temp
file left behind, and every earlier file still loads.

The disk is real: a 1 MiB tmpfs mounted for the test and filled to the last byte before the write, so each writer
(the safetensors binding in Rust, Python's own file writes) fails as it does on a full disk, with its own error."""
from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
import torch

from tspo_ray import safe_files
from tspo_ray.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from tspo_ray.safe_files import DiskFullError, is_disk_full
from tspo_ray.video.features import FeatureStore, VideoFeatures


@pytest.fixture
def full_disk(tmp_path):
    """(folder on a small tmpfs of its own, fill): fill() writes a file until the file system refuses with ENOSPC."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a small tmpfs cannot be mounted here (needs CAP_SYS_ADMIN): {mounted.stderr.strip()}")

    def fill():
        with open(folder / "filler", "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError as err:
                assert err.errno == errno.ENOSPC
        with open(folder / "filler", "ab", buffering=0) as fh:  # the last partial page too
            try:
                while True:
                    fh.write(b"\0")
            except OSError:
                pass

    yield folder, fill
    subprocess.run(["umount", "-l", str(folder)], check=False)


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_disk_full_is_recognised_in_each_form(full_disk):
    from safetensors.torch import save_file

    folder, fill = full_disk
    fill()
    with pytest.raises(Exception) as rust:  # the safetensors binding's own error on a full disk
        save_file({"w": torch.zeros(1024)}, str(folder / "x.safetensors"))
    with pytest.raises(OSError) as python:
        with open(folder / "y.txt", "w") as fh:
            fh.write("x" * 65536)
    assert is_disk_full(rust.value) and is_disk_full(python.value)
    assert is_disk_full(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)))
    assert not is_disk_full(OSError(errno.EACCES, os.strerror(errno.EACCES)))
    assert not isinstance(DiskFullError("x"), OSError)  # per-input OSError handlers must not swallow it


def test_checkpoint_on_a_full_disk_names_the_file_and_keeps_the_newest_complete_one(full_disk):
    folder, fill = full_disk
    run = folder / "checkpoints"
    for step in (1, 2):
        save_checkpoint(run, step, {"w": torch.full((256,), float(step))}, keep=3)
    fill()
    with pytest.raises(DiskFullError) as err:
        save_checkpoint(run, 3, {"w": torch.full((256,), 3.0)}, keep=3)
    message = str(err.value)
    assert "checkpoint-000003.safetensors: cannot be written: no space left on the device" in message
    assert "the newest complete checkpoint is checkpoint-000002.safetensors" in message
    assert latest_checkpoint(run).name == "checkpoint-000002.safetensors"
    assert torch.equal(load_checkpoint(latest_checkpoint(run))["w"], torch.full((256,), 2.0))
    assert not (run / "checkpoint-000003.safetensors").exists() and leftovers(run) == []


def test_checkpoint_pointer_on_a_full_disk_keeps_pointing_at_the_previous_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "checkpoints"
    save_checkpoint(run, 1, {"w": torch.ones(4)})

    real_fsync = os.fsync

    def enospc(fd):  # the checkpoint is written; latest.json's data cannot be
        if os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1].startswith(".latest.json."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(safe_files.os, "fsync", enospc)
    with pytest.raises(DiskFullError, match=r"latest\.json: cannot be written: no space left on the device"):
        save_checkpoint(run, 2, {"w": torch.full((4,), 2.0)})
    assert latest_checkpoint(run).name == "checkpoint-000001.safetensors"
    assert torch.equal(load_checkpoint(latest_checkpoint(run))["w"], torch.ones(4))
    assert leftovers(run) == []


def _features(seed: int) -> VideoFeatures:
    import numpy as np

    g = torch.Generator().manual_seed(seed)
    return VideoFeatures(torch.randn(6, 8, generator=g).half(), np.arange(6, dtype=np.int64) * 30,
                         np.arange(6, dtype=np.float64), 6.0, f"video_{seed}.mp4")


def test_feature_entry_on_a_full_disk_names_the_file_and_finished_entries_stay_readable(full_disk):
    folder, fill = full_disk
    store = FeatureStore(folder / "features")
    done = {key: _features(i) for i, key in enumerate(["a" * 16, "b" * 16])}
    for key, feats in done.items():
        store.put(key, feats)
    fill()
    with pytest.raises(DiskFullError, match=r"videos/c{16}\.safetensors: cannot be written: no space left on the device"):
        store.put("c" * 16, _features(9))
    assert not store.has("c" * 16) and leftovers(store.root) == []
    for key, feats in done.items():
        assert torch.equal(store.get(key).frame_features, feats.frame_features)


def test_extraction_on_a_full_disk_stops_instead_of_marking_videos_bad(tiny_world, full_disk):
    """The single-process extraction loop skips a video it cannot read (OSError); a full disk is no such video."""
    from tspo_ray.video.encoders import load_encoder
    from tspo_ray.video.features import StoreSpec, extract_local

    videos = sorted(str(p) for p in tiny_world.rglob("*.mp4"))[:2]
    folder, fill = full_disk
    store = FeatureStore(folder / "features")
    spec = StoreSpec(1.0, 16, 32, "embedded", None)
    encoder = load_encoder({"backend": "embedded"})
    extract_local(videos[:1], encoder, spec, store, progress=False)
    fill()
    with pytest.raises(DiskFullError, match="no space left on the device"):
        extract_local(videos, encoder, spec, store, progress=False)
    assert store.errors() == [] and leftovers(store.root) == []
    assert store.get(spec.video_key(videos[0])).frame_features.shape[0] == 16
