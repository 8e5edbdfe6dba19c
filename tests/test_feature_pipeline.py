"""The Ray Data feature pipeline on a local Ray: bad videos are quarantined, the rest is stored and reused."""
import os
import shutil

import torch

from tspo_ray.distributed.feature_pipeline import extract_with_ray
from tspo_ray.encoders import load_encoder
from tspo_ray.features import FeatureSpec, FeatureStore, extract_local


def test_pipeline_quarantines_a_corrupt_video_and_goes_on(ray_local, tiny_world, tiny_hf_clip, tmp_path):
    videos = sorted(str(p) for p in (tiny_world / "videos").glob("*.mp4"))[:3]
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(5000))
    missing = str(tmp_path / "missing.mp4")
    spec_dict = {"backend": "hf", "model": tiny_hf_clip}
    encoder = load_encoder(spec_dict)
    spec = FeatureSpec(1.0, 32, 32, encoder.name)
    store = FeatureStore(tmp_path / "store")
    counts = extract_with_ray(videos + [str(corrupt), missing, videos[0]], spec_dict, spec, store, num_workers=2,
                              cpus_per_worker=0.5, progress=False)
    assert counts["encoded"] == 3 and counts["failed"] == 2 and counts["frames"] == 3 * 32
    errors = {e["video"]: e["reason"] for e in store.errors()}
    assert "cannot decode" in errors[str(corrupt)] and "No such file" in errors[missing]
    # a second run reuses every stored entry
    again = extract_with_ray(videos, spec_dict, spec, store, num_workers=1, cpus_per_worker=0.5, progress=False)
    assert again["cached"] == 3 and again["encoded"] == 0
    # the distributed features equal the single-process loop's
    local_store = FeatureStore(tmp_path / "local")
    assert extract_local(videos, encoder, spec, local_store, progress=False)["encoded"] == 3
    for v in videos:
        key = spec.video_key(v)
        a, b = store.get(key), local_store.get(key)
        torch.testing.assert_close(a.frame_features, b.frame_features)
        assert (a.frame_indices == b.frame_indices).all()


def test_store_key_changes_with_settings_and_file(tiny_world, tmp_path):
    src = sorted((tiny_world / "videos").glob("*.mp4"))[0]
    copy = tmp_path / "v.mp4"
    shutil.copy(src, copy)
    a = FeatureSpec(1.0, 128, 64, "enc-a")
    assert a.video_key(copy) == a.video_key(copy)
    assert a.video_key(copy) != FeatureSpec(1.0, 64, 64, "enc-a").video_key(copy)
    assert a.video_key(copy) != FeatureSpec(1.0, 128, 64, "enc-b").video_key(copy)
    before = a.video_key(copy)
    os.utime(copy, ns=(1, 1))
    assert a.video_key(copy) != before
