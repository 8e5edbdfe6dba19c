"""Both CLIP back ends on tiny models built here (random weights: the mechanics, not the quality), and the
shipped tiny CLIP (the quality)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tspo_ray.video.encoders import EncoderSpec, embedded_clip_dir, load_encoder
from tspo_ray.video.encoders.hf_clip import CLIP_MEAN, ImageSettings, file_digest, image_settings


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    """A tiny open_clip architecture registered through open_clip's config API, random weights saved locally."""
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


def frames(n, seed=0, h=48, w=40):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def spec_for(backend, tiny_hf_clip, tiny_open_clip):
    return ({"backend": "hf", "model": tiny_hf_clip} if backend == "hf"
            else {"backend": "open_clip", "model": "tiny-test-clip", "pretrained": tiny_open_clip})


@pytest.mark.parametrize("backend", ["hf", "open_clip"])
def test_encoder_contract(backend, tiny_hf_clip, tiny_open_clip):
    spec = spec_for(backend, tiny_hf_clip, tiny_open_clip)
    enc = load_encoder(spec)
    assert enc.dim == 16
    f = enc.encode_frames(frames(5), batch_size=2)
    assert f.shape == (5, 16) and f.dtype == torch.float32 and f.device.type == "cpu"
    # raw projected features (what the TSPO agent is fed), not unit vectors
    with torch.no_grad():
        pixels = enc.preprocess(frames(5))
        raw = enc.model.get_image_features(pixel_values=pixels) if backend == "hf" else enc.model.encode_image(pixels)
    torch.testing.assert_close(f, getattr(raw, "pooler_output", raw).float(), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(f.norm(dim=-1), torch.ones(5), atol=1e-2)
    assert not torch.allclose(f[0], f[1])  # different frames, different features
    one_by_one = torch.cat([enc.encode_frames(frames(5)[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(f, one_by_one, atol=1e-5, rtol=1e-4)  # batching changes nothing
    again = load_encoder(spec)
    torch.testing.assert_close(again.encode_frames(frames(5)), f, atol=1e-6, rtol=0)  # deterministic
    t = enc.encode_text(["What colour is the star?", "a red star", "a red star"])
    assert t.shape == (3, 16) and t.dtype == torch.float32
    assert not torch.allclose(t.norm(dim=-1), torch.ones(3), atol=1e-2)
    assert torch.allclose(t[1], t[2]) and not torch.allclose(t[0], t[1])
    assert enc.encode_text([]).shape == (0, 16) and enc.encode_frames(frames(0)).shape == (0, 16)


def test_names_are_stable_identities(tiny_hf_clip, tiny_open_clip):
    hf = load_encoder({"backend": "hf", "model": tiny_hf_clip})
    digest = file_digest(Path(tiny_hf_clip) / "model.safetensors")
    assert hf.name == f"hf:{Path(tiny_hf_clip).name}@{digest}:raw"  # raw features: never a normalised entry
    oc = load_encoder(spec_for("open_clip", tiny_hf_clip, tiny_open_clip))
    assert oc.name == f"open_clip:tiny-test-clip:tiny.pt@{file_digest(tiny_open_clip)}:raw"
    emb = load_encoder({"backend": "embedded"})
    assert emb.name == f"hf:tiny-clip@{file_digest(Path(embedded_clip_dir()) / 'model.safetensors')[:8]}:raw"
    assert load_encoder(EncoderSpec()).name == emb.name  # dataclass spec, embedded by default


def test_hf_loads_same_weights_as_saved(tiny_hf_clip):
    from transformers import CLIPModel

    enc = load_encoder({"backend": "hf", "model": tiny_hf_clip})
    ref = CLIPModel.from_pretrained(tiny_hf_clip)
    for (n, a), (_, b) in zip(enc.model.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), n


def test_image_settings_from_processor_config():
    assert image_settings(None, 64) == ImageSettings(64)
    assert image_settings({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}, 64) == \
        ImageSettings(64, (0.5,) * 3, (0.5,) * 3)
    clip_l = {"crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "size": {"shortest_edge": 224},
              "image_mean": list(CLIP_MEAN), "image_std": [0.2, 0.2, 0.2]}
    assert image_settings(clip_l, 224) == ImageSettings(224, CLIP_MEAN, (0.2,) * 3, 224, 224)


def test_hf_centre_crop_when_the_processor_asks(tiny_hf_clip, tmp_path):
    """With a saved CLIP-style processor (shortest edge + centre crop), a wide frame's borders are cut off."""
    import shutil

    folder = tmp_path / "clip_crop"
    shutil.copytree(tiny_hf_clip, folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"shortest_edge": 64}, "crop_size": {"height": 64, "width": 64}, "do_center_crop": True}))
    enc = load_encoder({"backend": "hf", "model": str(folder)})
    assert enc.settings.crop == 64 and enc.preprocess(frames(1, h=64, w=128)).shape == (1, 3, 64, 64)
    a, b = frames(1, seed=1, h=64, w=128), frames(1, seed=1, h=64, w=128)
    b[:, :, :16] = 0  # differs only in the left border, which the crop removes
    b[:, :, -16:] = 255
    torch.testing.assert_close(enc.encode_frames(a), enc.encode_frames(b))
    square = load_encoder({"backend": "hf", "model": tiny_hf_clip})  # no crop: the border matters
    assert not torch.allclose(square.encode_frames(a), square.encode_frames(b))


def test_open_clip_uses_the_models_transform(tiny_open_clip, tiny_hf_clip):
    """Batched tensor preprocessing matches the model's own transform applied to PIL images one by one."""
    from PIL import Image

    enc = load_encoder(spec_for("open_clip", tiny_hf_clip, tiny_open_clip))
    f = frames(3, h=50, w=70)
    ours = enc.preprocess(f)
    ref = torch.stack([enc.transform(Image.fromarray(x)) for x in f])
    assert ours.shape == ref.shape == (3, 3, 32, 32)
    assert (ours - ref).abs().mean() < 0.05  # PIL and torch bicubic differ by rounding only


def test_bad_specs(tiny_hf_clip):
    with pytest.raises(ValueError, match="^features.encoder.backend: must be one of embedded, hf, open_clip, got 'clipz'"):
        load_encoder({"backend": "clipz"})
    with pytest.raises(ValueError, match="needs 'model'"):
        load_encoder({"backend": "hf"})
    with pytest.raises(ValueError, match="needs 'model'"):
        load_encoder({"backend": "open_clip", "pretrained": "/x.pt"})
    with pytest.raises(ValueError, match="dict or an EncoderSpec"):
        load_encoder("hf")
    with pytest.raises(FileNotFoundError, match="/nonexistent/clip"):
        load_encoder({"backend": "hf", "model": "/nonexistent/clip"})
    with pytest.raises(FileNotFoundError, match="/nonexistent/clip"):
        load_encoder({"backend": "embedded", "model": "/nonexistent/clip"})
    with pytest.raises(FileNotFoundError, match="/nonexistent/ckpt.pt does not exist"):
        load_encoder({"backend": "open_clip", "model": "ViT-B-32", "pretrained": "/nonexistent/ckpt.pt"})
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-Q-99'"):
        load_encoder({"backend": "open_clip", "model": "ViT-Q-99"})
    enc = load_encoder({"backend": "hf", "model": tiny_hf_clip})
    with pytest.raises(ValueError, match="frames must be uint8"):
        enc.encode_frames(np.zeros((2, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="frames must be uint8"):
        enc.encode_frames(np.zeros((2, 8, 8, 3), dtype=np.float32))


def test_embedded_clip_is_shipped_and_knows_the_world():
    """The shipped weights meet their targets, and the metrics file describes these very weights."""
    from tspo_ray.synthetic.render import Obj, render_frame

    enc = load_encoder({"backend": "embedded"})
    metrics = json.loads((Path(embedded_clip_dir()) / "metrics.json").read_text())
    assert metrics["shape_accuracy"] >= 0.95 and metrics["colour_accuracy"] >= 0.95
    assert metrics["weights_sha1"] == file_digest(Path(embedded_clip_dir()) / "model.safetensors", 40)
    objs = [Obj("star", "red"), Obj("circle", "blue"), Obj("cross", "green"), Obj("diamond", "orange")]
    img = np.stack([render_frame([o], bg, 128, noise_seed=i)
                    for i, (o, bg) in enumerate(zip(objs, ["black", "white", "grey", "navy"]))])
    unit = lambda x: torch.nn.functional.normalize(x, dim=-1)  # cosines: the encoder returns raw features
    sims = unit(enc.encode_frames(img)) @ unit(enc.encode_text([f"a {o.colour} {o.shape}" for o in objs])).T
    assert sims.argmax(1).tolist() == [0, 1, 2, 3]
    stems = unit(enc.encode_text([f"What colour is the {o.shape}?" for o in objs]))
    assert (unit(enc.encode_frames(img)) @ stems.T).argmax(0).tolist() == [0, 1, 2, 3]  # each stem finds its frame


def test_embedded_clip_keeps_question_wording_apart():
    """F_t must tell the question forms apart, or a selector conditioned on it cannot: "right after" and "right
    before" the same object, a count and a relation, the beginning and the end (a contrastive loss alone makes
    them identical; see synthetic/tiny_clip.py)."""
    from tspo_ray.synthetic.tiny_clip import wording_metrics

    cosines = wording_metrics(load_encoder({"backend": "embedded"}))
    assert set(cosines) == {"after_vs_before", "after_vs_counting", "name_vs_after", "beginning_vs_end"}
    assert all(c < 0.9 for c in cosines.values()), cosines
    stored = json.loads((Path(embedded_clip_dir()) / "metrics.json").read_text())["wording_cosine"]
    assert stored == pytest.approx(cosines, abs=1e-3)
