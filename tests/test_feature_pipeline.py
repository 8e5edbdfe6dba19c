"""The Ray Data feature pipeline: decode and encode stages, entries equal to the single-process loop's, bad videos
quarantined with the decoder's reason, known-bad videos not decoded again, stored entries reused."""
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import torch

from tspo_ray.distributed.feature_decode import DecodeSpec, decode_rows
from tspo_ray.distributed.feature_pipeline import EncodeChunks, VideoAssembler, extract_with_ray
from tspo_ray.video.encoders import load_encoder
from helpers.features import assert_same_entries
from tspo_ray.video.features import FeatureStore, StoreSpec, extract_local


def cut_stream(tmp_path, source: str) -> str:
    """An MP4 whose index survives but whose stream ends half-way: decoding fails part-way through the video."""
    import av

    path = tmp_path / "cut.mp4"
    with av.open(source) as src, av.open(str(tmp_path / "fs.mp4"), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    data = (tmp_path / "fs.mp4").read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return str(path)


def one_row(batch: dict) -> dict:
    """A numpy batch of one as the row Ray Data's iter_rows hands the driver."""
    return {k: v[0] for k, v in batch.items()}


def test_stages_write_the_single_process_entries_whatever_the_chunk_order(tiny_world, tmp_path):
    videos = sorted(str(p) for p in (tiny_world / "videos").glob("*.mp4"))[:2]
    encoder = load_encoder({"backend": "embedded"})
    spec = StoreSpec(2.0, None, 32, encoder.name)  # every native frame of the 2-fps videos: 120-160 candidates
    rows = [r for v in videos for r in decode_rows(v, spec.video_key(v), DecodeSpec.of(spec), chunk=64)]
    sizes = [r["frames"].shape[1] for r in rows]
    assert max(sizes) == 64 and len(rows) >= 2 * len(videos) and all(r["frames"].dtype == np.uint8 for r in rows)
    assert [bool(r["last"][0]) for r in rows].count(True) == len(videos)
    encode = EncodeChunks({"backend": "embedded"})
    encoded = [one_row(encode(r)) for r in rows]
    assert all("frames" not in r and r["embeddings"].shape == (n, encoder.dim) for r, n in zip(encoded, sizes))
    random.Random(0).shuffle(encoded)  # several encoder actors deliver chunks in any order
    store, local = FeatureStore(tmp_path / "stages"), FeatureStore(tmp_path / "local")
    assembler = VideoAssembler(store)
    done = [d for d in map(assembler.add, encoded) if d is not None]
    assert sorted(d[0] for d in done) == ["encoded", "encoded"] and sum(d[1]["frames"] for d in done) == sum(sizes)
    assert extract_local(videos, encoder, spec, local, progress=False)["encoded"] == 2
    assert_same_entries(videos, spec, store, local)


def test_a_video_failing_part_way_writes_nothing_and_keeps_the_decoders_reason(tiny_world, tmp_path):
    source = sorted(str(p) for p in (tiny_world / "videos").glob("*.mp4"))[0]
    cut = cut_stream(tmp_path, source)
    encoder = load_encoder({"backend": "embedded"})
    spec = StoreSpec(2.0, None, 32, encoder.name)
    rows = list(decode_rows(cut, "k", DecodeSpec.of(spec), chunk=16))
    assert len(rows) > 1 and all(not r["reason"][0] for r in rows[:-1])  # some chunks decoded before the failure
    assert rows[-1]["reason"][0].startswith(f"{cut}: truncated or corrupt") and rows[-1]["frames"].shape[1] == 0
    encode, store = EncodeChunks({"backend": "embedded"}), FeatureStore(tmp_path / "store")
    encoded = [one_row(encode(r)) for r in rows]
    assembler = VideoAssembler(store)
    done = [d for d in map(assembler.add, [encoded[-1], *encoded[:-1]]) if d is not None]  # failure first
    assert done == [("failed", {"video": cut, "key": "k", "reason": rows[-1]["reason"][0]})]
    assert not store.has("k") and not assembler.pending
    local = FeatureStore(tmp_path / "local")
    assert extract_local([cut], encoder, spec, local, progress=False)["failed"] == 1
    assert local.errors()[0]["reason"] == rows[-1]["reason"][0]


def test_the_decode_stage_does_not_import_torch():
    code = "import sys, tspo_ray.distributed.feature_decode; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pipeline_matches_the_loop_quarantines_bad_videos_and_skips_known_bad(ray_local, tiny_world, tiny_hf_clip,
                                                                               tmp_path):
    videos = sorted(str(p) for p in (tiny_world / "videos").glob("*.mp4"))[:3]
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(5000))
    cut = cut_stream(tmp_path, videos[0])
    missing = str(tmp_path / "missing.mp4")
    bad = [str(corrupt), cut, missing]
    spec_dict = {"backend": "hf", "model": tiny_hf_clip}
    encoder = load_encoder(spec_dict)
    spec = StoreSpec(2.0, 96, 32, encoder.name)  # 96 candidates: two chunk rows of at most 64 frames each
    store = FeatureStore(tmp_path / "store")
    counts = extract_with_ray(videos + bad + [videos[0]], spec_dict, spec, store, num_workers=2,
                              cpus_per_worker=0.5, progress=False, chunk=64)
    assert counts == {"encoded": 3, "cached": 0, "failed": 3, "known_bad": 0, "frames": 3 * 96}
    local = FeatureStore(tmp_path / "local")
    assert extract_local(videos + bad, encoder, spec, local, progress=False)["encoded"] == 3
    assert_same_entries(videos, spec, store, local)
    errors = {e["video"]: e["reason"] for e in store.errors()}
    assert errors == {e["video"]: e["reason"] for e in local.errors()}  # the decoder's reasons, as the loop has them
    assert "cannot decode" in errors[str(corrupt)] and "truncated" in errors[cut] and "No such file" in errors[missing]
    # a second run reuses every entry and does not decode the known-bad videos again
    again = extract_with_ray(videos + bad[:2], spec_dict, spec, store, num_workers=1, cpus_per_worker=0.5,
                             progress=False)
    assert again == {"encoded": 0, "cached": 3, "failed": 0, "known_bad": 2, "frames": 0}
    retried = extract_with_ray([cut], spec_dict, spec, store, num_workers=1, cpus_per_worker=0.5, progress=False,
                               retry_failed=True)
    assert retried == {"encoded": 0, "cached": 0, "failed": 1, "known_bad": 0, "frames": 0}


def test_store_key_changes_with_settings_and_file(tiny_world, tmp_path):
    src = sorted((tiny_world / "videos").glob("*.mp4"))[0]
    copy = tmp_path / "v.mp4"
    shutil.copy(src, copy)
    a = StoreSpec(1.0, 128, 64, "enc-a")
    assert a.video_key(copy) == a.video_key(copy)
    assert a.video_key(copy) != StoreSpec(1.0, 64, 64, "enc-a").video_key(copy)
    assert a.video_key(copy) != StoreSpec(1.0, 128, 64, "enc-b").video_key(copy)
    before = a.video_key(copy)
    os.utime(copy, ns=(1, 1))
    assert a.video_key(copy) != before
