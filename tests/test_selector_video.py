"""A realistic video end to end: H.264 720p clips at 30 and 29.97 fps written here with PyAV, candidates on the
reference's 1-fps grid (every round(native_fps)-th frame), KeyframeSelector.select from the file."""
from fractions import Fraction

import numpy as np
import pytest
import torch

from helpers.tiny_models import build_tspo_layout
from tspo_ray import KeyframeSelector
from tspo_ray.video import frames as video_io


def level(i: int) -> int:
    """The grey level of frame i: neighbouring frames are 53 levels apart, so a decoded frame names its index."""
    return 16 + (i * 53) % 224


def write_h264_720p(path, seconds: int, rate: Fraction):
    import av

    n = int(seconds * rate)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "12"}
        for i in range(n):
            img = np.full((720, 1280, 3), level(i), np.uint8)
            img[200:400, 300:600] = (255, 40, 40) if (i // 30) % 2 else (40, 40, 255)  # a block: colour by second
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path, n


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("h264")
    return {"30": write_h264_720p(d / "clip30.mp4", 4, Fraction(30)),
            "29.97": write_h264_720p(d / "clip2997.mp4", 4, Fraction(30000, 1001))}


@pytest.mark.parametrize("rate", ["30", "29.97"])
def test_candidates_on_the_reference_grid(clips, rate):
    path, n = clips[rate]
    info = video_io.probe(path)
    assert info.num_frames == n and info.native_fps == pytest.approx(float(Fraction(rate)), abs=1e-3)
    frames, cands = video_io.decode_candidates(path)  # 1 fps, no cap: the evaluation grid
    assert cands.frame_indices.tolist() == list(range(0, n, 30))  # round(29.97) = 30 as well
    np.testing.assert_allclose(cands.timestamps_s, cands.frame_indices / info.native_fps)
    assert frames.shape == (len(range(0, n, 30)), 720, 1280, 3)
    # the decoded pixels are those very frames (the grey corner names the frame index)
    corner = frames[:, :100, :100].reshape(len(frames), -1).mean(-1)
    np.testing.assert_allclose(corner, [level(i) for i in cands.frame_indices], atol=4)


def test_select_end_to_end_on_the_720p_clip(clips, tmp_path):
    path, n = clips["29.97"]
    sel = KeyframeSelector.from_pretrained(build_tspo_layout(tmp_path / "tspo", seed=1))
    grid = list(range(0, n, 30))
    out = sel.select(path, "What is on the table?", k=2, method="agent")
    assert out["num_candidates"] == len(grid) == 4
    assert set(out["frame_indices"]) <= set(grid) and out["frame_indices"] == sorted(out["frame_indices"])
    assert out["timestamps_s"] == [round(i / (30000 / 1001), 3) for i in out["frame_indices"]]
    # the scores are S of the selected candidates, as scoring the decoded grid frames directly gives (from features
    # rounded to float16, as the feature store holds them)
    feats, text = sel.features(video_io.read_frames(path, grid), "What is on the table?")
    with torch.no_grad():
        direct = sel.agent(feats.half().float(), text)
    assert out["scores"] == pytest.approx([float(direct[grid.index(i)]) for i in out["frame_indices"]], abs=1e-4)
    assert out["frame_indices"] == [grid[p] for p in torch.topk(direct, 2).indices.sort().values.tolist()]
    uniform = sel.select(path, "What is on the table?", k=2, method="uniform")
    assert uniform["frame_indices"] == [30, 90] and uniform["scores"] is None
    assert len(sel.select(path, "What is on the table?", k=3, method="clip:bin-max")["frame_indices"]) == 3
    with pytest.raises(ValueError, match="unknown selector"):
        sel.select(path, "What is on the table?", k=2, method="agent:best")
