"""Both CLIP back ends on tiny models built here (random weights: the mechanics, not the quality)."""
import json

import numpy as np
import pytest
import torch

from tspo_ray.encoders import load_encoder


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    import open_clip

    folder = tmp_path_factory.mktemp("oc")
    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (folder / "tiny-test-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-test-clip")
    ckpt = folder / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    return str(ckpt)


def frames(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 40, 3), dtype=np.uint8)


@pytest.mark.parametrize("backend", ["hf", "open_clip"])
def test_encoder_contract(backend, tiny_hf_clip, tiny_open_clip):
    spec = ({"backend": "hf", "model": tiny_hf_clip} if backend == "hf"
            else {"backend": "open_clip", "model": "tiny-test-clip", "pretrained": tiny_open_clip})
    enc = load_encoder(spec)
    assert enc.dim == 16 and enc.name.startswith(backend)
    f = enc.encode_frames(frames(5), batch_size=2)
    assert f.shape == (5, 16) and f.dtype == torch.float32
    torch.testing.assert_close(f.norm(dim=-1), torch.ones(5))
    one_by_one = torch.cat([enc.encode_frames(frames(5)[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(f, one_by_one, atol=1e-5, rtol=1e-4)
    t = enc.encode_text(["What colour is the star?", "a red star", "a red star"])
    assert t.shape == (3, 16) and torch.allclose(t[1], t[2]) and not torch.allclose(t[0], t[1])
    assert load_encoder(spec).name == enc.name  # stable identity for cache keys


def test_hf_loads_same_weights_as_saved(tiny_hf_clip):
    from transformers import CLIPModel

    enc = load_encoder({"backend": "hf", "model": tiny_hf_clip})
    ref = CLIPModel.from_pretrained(tiny_hf_clip)
    for (n, a), (_, b) in zip(enc.model.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), n


def test_bad_specs():
    with pytest.raises(ValueError, match="unknown encoder backend 'clipz'"):
        load_encoder({"backend": "clipz"})
    with pytest.raises(ValueError, match="needs 'model'"):
        load_encoder({"backend": "hf"})
    with pytest.raises((FileNotFoundError, OSError)):
        load_encoder({"backend": "hf", "model": "/nonexistent/clip"})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_encoder({"backend": "open_clip", "model": "ViT-B-32", "pretrained": "/nonexistent/ckpt.pt"})
    with pytest.raises(ValueError, match="frames must be"):
        load_encoder({"backend": "embedded"}).encode_frames(np.zeros((2, 8, 8), dtype=np.uint8))


def test_embedded_clip_is_shipped_and_knows_the_world():
    enc = load_encoder({"backend": "embedded"})
    metrics = json.loads((__import__("pathlib").Path(enc.model.name_or_path) / "metrics.json").read_text())
    assert metrics["shape_accuracy"] >= 0.9 and metrics["colour_accuracy"] >= 0.9
    from tspo_ray.synthetic.render import Obj, render_frame

    img = np.stack([render_frame([Obj("star", "red")], "black", 128), render_frame([Obj("circle", "blue")], "white", 128)])
    sims = enc.encode_frames(img) @ enc.encode_text(["a red star", "a blue circle"]).T
    assert sims[0, 0] > sims[0, 1] and sims[1, 1] > sims[1, 0]
