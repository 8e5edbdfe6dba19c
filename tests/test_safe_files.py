"""Checkpoints and the feature store: safetensors + JSON only, exact round trips, 0644 files, pickles refused."""
from __future__ import annotations

import pickle
import random
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from tspo_ray.checkpoint import (
    OldFormatError,
    convert,
    load_agent,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from tspo_ray.checkpoint import main as checkpoint_cli
from tspo_ray.method.agent import TemporalAgent
from tspo_ray.safe_files import UnsafeFileError, join_payload, looks_like_pickle, split_payload
from tspo_ray.splits import load_items
from tspo_ray.video.features import FeatureStore, VideoFeatures


class WritesMarker:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def evil_pickle(path: Path, marker: Path, legacy: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if legacy:
        path.write_bytes(pickle.dumps({"agent": WritesMarker(marker)}, protocol=2))
    else:
        torch.save({"agent": WritesMarker(marker)}, path)
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def trained_optimizer():
    torch.manual_seed(0)
    agent = TemporalAgent(16, heads=4)
    opt = torch.optim.Adam(agent.parameters(), lr=1e-3, betas=(0.8, 0.95))
    for _ in range(2):
        agent(torch.randn(10, 16), torch.randn(16)).sum().backward()
        opt.step()
    return agent, opt


def test_payload_round_trip_is_exact_for_optimizer_and_rng_states():
    _, opt = trained_optimizer()
    random.random(), np.random.rand(), torch.rand(1)
    payload = {"optimizer": opt.state_dict(), "rng": rng_state(), "nested": {3: (1, 2.5, None), "s": [np.int64(4)]}}
    structure, tensors = split_payload(payload)
    back = join_payload(structure, tensors)
    sd, got = opt.state_dict(), back["optimizer"]
    assert got["param_groups"] == sd["param_groups"] and got["param_groups"][0]["betas"] == (0.8, 0.95)
    assert set(got["state"]) == set(sd["state"]) == set(range(len(sd["state"])))
    for i, st in sd["state"].items():
        assert all(torch.equal(st[k], got["state"][i][k]) for k in st)
    assert back["nested"] == {3: (1, 2.5, None), "s": [4]}
    want = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng(back["rng"])
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert want[:2] == again[:2] and torch.equal(want[2], again[2])
    with pytest.raises(TypeError, match="payload.x: cannot store a object"):
        split_payload({"x": object()})


def test_checkpoint_resumes_an_optimizer_exactly_and_files_are_0644(tmp_path):
    agent, opt = trained_optimizer()
    path = save_checkpoint(tmp_path / "ck", 3, {"agent": agent.state_dict(), "agent_config": agent.config(),
                                                "optimizer": opt.state_dict(), "history": [["a", "b"]]})
    assert path.name == "checkpoint-000003.safetensors" and mode(path) == 0o644
    assert mode(tmp_path / "ck" / "latest.json") == 0o644
    state = load_checkpoint(tmp_path / "ck")
    clone = load_agent(tmp_path / "ck")
    opt2 = torch.optim.Adam(clone.parameters(), lr=1e-3)
    opt2.load_state_dict(state["optimizer"])
    x, q = torch.randn(10, 16), torch.randn(16)
    for a, o in ((agent, opt), (clone, opt2)):
        o.zero_grad()
        a(x, q).sum().backward()
        o.step()
    assert all(torch.equal(p, r) for p, r in zip(agent.parameters(), clone.parameters()))
    assert state["step"] == 3 and state["history"] == [["a", "b"]]


@pytest.mark.parametrize("legacy", [False, True], ids=["torch-zip", "raw-pickle"])
def test_crafted_pickles_in_the_checkpoint_folder_are_refused(tmp_path, legacy):
    marker = tmp_path / "marker"
    ck = tmp_path / "ck"
    evil = evil_pickle(ck / "checkpoint-000009.pt", marker, legacy)
    (ck / "latest.json").write_text('{"step": 9, "file": "checkpoint-000009.pt"}')
    with pytest.raises(OldFormatError, match=r"earlier pickle format.*\n.*python -m tspo_ray.checkpoint convert"):
        load_checkpoint(ck)
    with pytest.raises(OldFormatError):
        load_agent(ck)
    disguised = evil_pickle(ck / "checkpoint-000010.safetensors", marker, legacy)
    (ck / "latest.json").write_text('{"step": 10, "file": "checkpoint-000010.safetensors"}')
    with pytest.raises(UnsafeFileError, match="checkpoint-000010.safetensors"):
        load_checkpoint(ck)
    with pytest.raises(UnsafeFileError):
        load_agent(disguised)
    # the converter reads with weights_only=True: refused with a reason, not run
    assert checkpoint_cli(["convert", str(evil), str(tmp_path / "out.safetensors")]) == 1
    with pytest.raises(UnsafeFileError, match="refused: it holds objects other than tensors"):
        convert(evil, tmp_path / "out.safetensors")
    (ck / "latest.json").write_text('{"step": 10, "file": "../../etc/passwd"}')
    with pytest.raises(UnsafeFileError, match="not a file in"):
        load_checkpoint(ck)
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_an_earlier_checkpoint_converts_once_and_loads_equal(tmp_path):
    agent, opt = trained_optimizer()
    old = tmp_path / "checkpoint-000002.pt"
    torch.save({"step": 2, "agent": agent.state_dict(), "agent_config": agent.config(),
                "optimizer": opt.state_dict(), "sampler_rng": torch.get_rng_state()}, old)
    assert checkpoint_cli(["convert", str(old), str(tmp_path / "new.safetensors")]) == 0
    clone = load_agent(tmp_path / "new.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(agent.state_dict().values(), clone.state_dict().values()))
    assert load_checkpoint(tmp_path / "new.safetensors")["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.95)


def test_published_weights_load_from_safetensors_only(tmp_path):
    from safetensors.torch import save_file

    agent, _ = trained_optimizer()
    ref = {k: v.to(torch.bfloat16) for k, v in agent.to_reference_state_dict().items()}
    ref["text_model.embeddings.position_ids"] = torch.arange(4)  # the bundled CLIP: not read
    folder = tmp_path / "TSPO-0.4B"
    folder.mkdir()
    save_file(ref, folder / "model.safetensors")
    for source in (folder, folder / "model.safetensors"):
        got = load_agent(source, heads=4)
        pairs = zip(agent.state_dict().values(), got.state_dict().values())
        assert all(torch.allclose(a, b, atol=1e-2) for a, b in pairs)
    torch.save(ref, tmp_path / "pytorch_model.bin")
    with pytest.raises(OldFormatError, match="convert"):
        load_agent(tmp_path / "pytorch_model.bin")


def feats() -> VideoFeatures:
    return VideoFeatures(torch.randn(5, 8), np.arange(5, dtype=np.int64) * 30, np.arange(5, dtype=np.float64),
                         5.0, "v.mp4")


class TinyEncoder:
    name, dim = "tiny", 8

    def encode_text(self, texts):
        return torch.stack([torch.full((8,), float(len(t))) for t in texts])


def test_feature_store_round_trip_and_crafted_pickles_refused(tmp_path):
    from tspo_ray.data.records import QARecord
    from tspo_ray.video.features import StoreSpec

    store = FeatureStore(tmp_path / "fs")
    f = feats()
    store.put("good", f)
    got = store.get("good")
    assert mode(store.video_path("good")) == 0o644 and got.duration_s == 5.0 and got.video == "v.mp4"
    assert torch.equal(got.frame_features, f.frame_features.half())
    assert np.array_equal(got.frame_indices, f.frame_indices)
    text = store.text_features(TinyEncoder(), ["ab", "abc"])
    assert float(store.text_features(TinyEncoder(), ["abc", "x"])["abc"][0]) == 3.0 and len(text) == 2

    marker = tmp_path / "marker"
    video = tmp_path / "v.mp4"
    video.write_bytes(b"0" * 100)
    spec = StoreSpec(1.0, 8, None, "tiny")
    key = spec.video_key(video)
    evil_pickle(store.root / "videos" / f"{key}.pt", marker)  # an earlier-format name: never looked at
    assert not store.has(key)
    evil_pickle(store.video_path(key), marker)  # the current name, pickle contents
    with pytest.raises(UnsafeFileError, match="a pickle, which is never loaded"):
        store.get(key)
    rec = QARecord("q1", "v.mp4", "ab", ["x", "y"], "A")
    items, skipped = load_items([rec], tmp_path, store, spec, TinyEncoder())
    assert items == [] and "a pickle, which is never loaded" in skipped[0]["reason"]
    evil_pickle(store._text_path("tiny"), marker, legacy=True)
    with pytest.raises(UnsafeFileError, match="a pickle"):
        store.text_features(TinyEncoder(), ["ab"])
    assert not marker.exists()


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    from tspo_ray.checkpoint import latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint

    for step in (5, 10, 15, 20):
        save_checkpoint(tmp_path, step, {"agent_config": {"dim": 4}}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == [
        "checkpoint-000015.safetensors", "checkpoint-000020.safetensors"]
    assert latest_checkpoint(tmp_path).name == "checkpoint-000020.safetensors" and load_checkpoint(tmp_path)["step"] == 20
    save_checkpoint(tmp_path, 25, {"agent_config": {"dim": 4}})  # keep=None: nothing deleted
    assert len(list(tmp_path.glob("checkpoint-*"))) == 3
    assert [p.name for p in prune_checkpoints(tmp_path, 1)] == ["checkpoint-000015.safetensors",
                                                                "checkpoint-000020.safetensors"]
    with pytest.raises(ValueError, match="keep must be >= 1"):
        prune_checkpoints(tmp_path, 0)


def test_a_checkpoint_whose_header_length_begins_like_a_pickle_still_loads(tmp_path):
    """A safetensors file starts with its header's length (u64, little-endian); when its low byte is 0x80 (1 file
    in 256), the file's first byte is a raw pickle's. Such a checkpoint is ours and loads."""
    ck = tmp_path / "ck"
    for pad in range(512):
        path = save_checkpoint(ck, 1, {"agent": {"w": torch.ones(2)}, "note": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    else:
        raise AssertionError("no padding gave a header length with low byte 0x80")
    assert load_checkpoint(ck)["note"] == "x" * pad
    assert not looks_like_pickle(path)
