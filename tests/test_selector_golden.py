"""KeyframeSelector on a tiny random model saved in the TSPO-0.4B layout, scored from pixels, against an independent
restatement of the reference forward pass (Hui-design/TSPO model/temporal_agent.py: TSPOModel.extract_feature and
MultiModal_Align.forward), written here with a dense T x T window mask."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.reference_tspo import frames, reference_scores
from helpers.tiny_models import build_tspo_layout
from tspo_ray import KeyframeSelector

QUESTION = "What is on the table?"


@pytest.fixture(scope="module")
def tspo_dir(tmp_path_factory):
    return build_tspo_layout(tmp_path_factory.mktemp("tspo04b"), seed=3)


def test_tspo_layout_scores_match_the_reference_forward_pass(tspo_dir):
    sel = KeyframeSelector.from_pretrained(tspo_dir)
    assert sel.agent is not None and sel.encoder.dim == 32 and sel.inference_mode == "top-k"
    f = frames()
    want, want_clip = reference_scores(tspo_dir, f, QUESTION)
    got = sel.scores(f, QUESTION)
    diff = (got - want).abs().max().item()
    print(f"golden max |S_ours - S_reference| = {diff:.2e}")
    assert diff <= 1e-4
    assert (sel.scores(f, QUESTION, scorer="clip") - want_clip).abs().max().item() <= 1e-4
    # the reference feeds raw features: unit-normalising them first gives visibly different scores
    feats, text = sel.features(f, QUESTION)
    assert not torch.allclose(feats.norm(dim=-1), torch.ones(len(f)), atol=1e-2)
    unit = torch.nn.functional.normalize
    assert (sel.agent(unit(feats, dim=-1), unit(text, dim=-1)) - want).abs().max().item() > 1e-3


def test_clip_alone_and_bad_paths(tspo_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    clip_only = tmp_path / "clip"
    shutil.copytree(tspo_dir, clip_only)
    state = {k: v for k, v in load_file(str(clip_only / "model.safetensors")).items() if not k.startswith("selector.")}
    save_file(state, str(clip_only / "model.safetensors"), metadata={"format": "pt"})
    sel = KeyframeSelector.from_pretrained(clip_only)
    assert sel.agent is None
    assert sel.scores(frames(5), QUESTION, scorer="clip").shape == (5,)
    with pytest.raises(ValueError, match="agent scorer needs agent weights"):
        sel.scores(frames(5), QUESTION)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        KeyframeSelector.from_pretrained(tmp_path / "missing")


def test_feature_pipeline_encoder_can_preprocess_exactly_as_the_selector(tmp_path):
    """The Ray Data encoder built from a config with exact_processor gives the selector's own features, so benchmark
    features in the store are those the reference would compute (the default batched resize only approximates)."""
    import numpy as np
    import torch

    from tspo_ray import KeyframeSelector
    from tspo_ray.video.encoders import load_encoder

    folder = build_tspo_layout(tmp_path / "tspo", seed=5)
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 48, 80, 3), dtype=np.uint8)
    exact = load_encoder({"backend": "hf", "model": str(folder), "exact_processor": True})
    approx = load_encoder({"backend": "hf", "model": str(folder)})
    selector = KeyframeSelector.from_pretrained(folder)
    assert exact.name != approx.name  # feature-store entries of the two never mix
    torch.testing.assert_close(exact.encode_frames(frames), selector.encoder.encode_frames(frames))
