"""`python -m tspo_ray.export`: a run trained here on the tiny-CLIP world, written in the TSPO-0.4B layout and read
back by KeyframeSelector.from_pretrained and by the golden test's independent restatement of the reference."""
import json

import pytest
import torch

from helpers.reference_tspo import reference_scores
from tspo_ray import KeyframeSelector
from tspo_ray.checkpoint import best_checkpoint, load_checkpoint, save_checkpoint
from tspo_ray.data.records import read_records, resolve_video
from tspo_ray.export import ExportError, export, main
from tspo_ray.method.agent import TemporalAgent
from tspo_ray.video import frames as video_io
from tspo_ray.video.encoders import embedded_clip_dir

#: bf16 keeps 8 significant bits (relative step 2^-8 = 0.0039) in every CLIP and selector weight; S sums two cosines
#: of vectors through ~10 such layers. Measured on this test's 69 candidates: 0.0023 (README, the export section).
BF16_SCORE_TOLERANCE = 0.01


def first_test_question(tiny_world):
    record = read_records(tiny_world / "test.jsonl")[0][0]
    return resolve_video(record, tiny_world), record.question


def candidate_frames(video):
    cands = video_io.candidates(video, 1.0, None)
    return video_io.read_frames(video, cands.frame_indices, 64), cands


def test_export_round_trip(trained_run, tiny_world, tmp_path, capsys):
    from safetensors import safe_open
    from transformers import CLIPModel, CLIPProcessor

    out = tmp_path / "TSPO-tiny"
    assert main(["--checkpoint", str(trained_run), "--clip", embedded_clip_dir(), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    ckpt = load_checkpoint(best_checkpoint(trained_run))
    # the layout: a CLIPModel folder, selector.* in its safetensors under the reference's names and shapes, in bf16
    assert isinstance(CLIPModel.from_pretrained(out), CLIPModel)
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        keys = list(fh.keys())
        selector = {k: fh.get_tensor(k) for k in keys if k.startswith("selector.")}
        vision = fh.get_tensor("vision_model.embeddings.patch_embedding.weight")
    names = {f"selector.{m}.{leaf}" for m in ("temporal.Self_q", "temporal.Self_k", "temporal.Self_v",
                                              "temporal.ffn_o", "mlp.0", "mlp.2") for leaf in ("weight", "bias")}
    assert set(selector) == names
    assert all(t.dtype == torch.bfloat16 for t in selector.values()) and vision.dtype == torch.bfloat16
    assert all(t.shape == ((64, 64) if k.endswith("weight") else (64,)) for k, t in selector.items())
    ours = TemporalAgent(**ckpt["agent_config"])
    ours.load_state_dict(ckpt["agent"])
    assert torch.equal(selector["selector.temporal.Self_q.weight"], ours.query.weight.detach().bfloat16())
    assert not selector["selector.temporal.ffn_o.weight"].any()  # unused by the forward pass: zeros
    assert CLIPProcessor.from_pretrained(out).image_processor.size == {"height": 64, "width": 64}
    card = (out / "README.md").read_text()
    mode = ckpt["inference_mode"]
    assert f"`{mode}`" in card and f"| {mode} (chosen) | {ckpt['inference_mode_validation'][mode]:.3f} |" in card
    assert f"{ckpt['best_val']:.3f}" in card and str(tiny_world) in card and '"group_size": 4' in card

    # the round trip: the exported folder scores as the checkpoint did, up to bf16, and selects with its mode
    video, question = first_test_question(tiny_world)
    frames, cands = candidate_frames(video)
    run_sel, layout_sel = KeyframeSelector.from_pretrained(trained_run), KeyframeSelector.from_pretrained(out)
    assert layout_sel.inference_mode == run_sel.inference_mode == mode
    want, got = run_sel.scores(frames, question), layout_sel.scores(frames, question)
    diff = (got - want).abs().max().item()
    print(f"export bf16: max |S_export - S_checkpoint| = {diff:.4f} over {len(frames)} candidates")
    assert 0 < diff <= BF16_SCORE_TOLERANCE
    # ... and the reference's forward pass, restated independently, agrees with the selector on that folder
    reference, _ = reference_scores(out, frames, question)
    assert (got - reference).abs().max().item() <= 1e-4
    picked = layout_sel.select(video, question, k=8)
    assert picked["method"] == "agent" and len(picked["frame_indices"]) == 8


def test_float32_export_is_exact(trained_run, tiny_world, tmp_path):
    out = tmp_path / "fp32"
    export(trained_run, embedded_clip_dir(), out, dtype="float32")
    frames, _ = candidate_frames(first_test_question(tiny_world)[0])
    question = first_test_question(tiny_world)[1]
    want = KeyframeSelector.from_pretrained(trained_run).scores(frames, question)
    got = KeyframeSelector.from_pretrained(out).scores(frames, question)
    assert (got - want).abs().max().item() <= 1e-5


def agent_checkpoint(folder, dim=64, heads=8, kind="eq3", mode=None, **options):
    from tspo_ray.method.kinds import agent_from_config

    torch.manual_seed(0)
    agent = agent_from_config({"dim": dim, "heads": heads, **({"kind": kind} if kind != "eq3" else {}), **options})
    payload = {"agent": agent.state_dict(), "agent_config": agent.config(), "config": {}}
    if mode:
        payload["inference_mode"] = mode
    save_checkpoint(folder, 1, payload)
    return folder


@pytest.mark.parametrize("kind, options, mode", [("scan", {}, "greedy"), ("eq3", {"position_scale": 20.0}, "events")])
def test_what_the_reference_layout_cannot_express_exports_in_the_tspo_ray_layout(tmp_path, kind, options, mode):
    """A scan agent, or an eq3 one with PE x 20, exports (float32) and reloads scoring as its checkpoint does, with its
    kind, position scale and mode recorded, its tensors under selector.agent.*, and a card naming its readers."""
    import numpy as np
    from safetensors import safe_open

    run = agent_checkpoint(tmp_path / "run", kind=kind, mode=mode, **options)
    out = tmp_path / "out"
    facts = export(run, embedded_clip_dir(), out, dtype="float32")
    assert facts["layout"] == "tspo-ray"
    settings = json.loads((out / "selector_config.json").read_text())
    assert settings["kind"] == kind and settings["inference_mode"] == mode and settings["layout"] == "tspo-ray"
    assert settings["position_scale"] == options.get("position_scale", 1.0)
    with safe_open(str(out / "model.safetensors"), framework="pt") as fh:
        selector = [k for k in fh.keys() if k.startswith("selector.")]
    assert selector and all(k.startswith("selector.agent.") for k in selector)  # no reference names to misread
    card = (out / "README.md").read_text()
    assert "tspo-ray layout" in card and "tspo-ray only" in card and f"kind `{kind}`" in card
    frames = np.random.default_rng(0).integers(0, 256, (24, 64, 64, 3), dtype=np.uint8)
    exported = KeyframeSelector.from_pretrained(out)
    original = KeyframeSelector.from_pretrained(run, encoder={"backend": "embedded"})
    assert exported.inference_mode == original.inference_mode == mode
    assert type(exported.agent) is type(original.agent) and exported.source.startswith("tspo-ray layout")
    want = original.scores(frames, "What appears right after the red star?")
    got = exported.scores(frames, "What appears right after the red star?")
    assert (got - want).abs().max().item() <= 1e-5
    feats, text = exported.features(frames, "What appears right after the red star?")
    assert (exported.select_from_features(feats, text, range(24), range(24), 4)["positions"]
            == original.select_from_features(feats, text, range(24), range(24), 4)["positions"])
    with pytest.raises(ExportError, match="--layout tspo-ray" if kind == "scan" else "adds PE as is"):
        export(run, embedded_clip_dir(), tmp_path / "ref", layout="reference")


def test_a_clip_of_another_dimension_is_refused_naming_both(tmp_path, capsys):
    from helpers.tiny_models import build_tspo_layout

    clip32 = build_tspo_layout(tmp_path / "clip32", dim=32)
    run = agent_checkpoint(tmp_path / "run")
    assert main(["--checkpoint", str(run), "--clip", str(clip32), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "trained on 64-dimensional features" in err and "projects to 32" in err and str(clip32) in err
    assert not (tmp_path / "out").exists()


def test_other_refusals(tmp_path):
    runs = {"heads4": agent_checkpoint(tmp_path / "run4", heads=4),
            "scaled": agent_checkpoint(tmp_path / "run-scaled", position_scale=20.0),
            "film": agent_checkpoint(tmp_path / "run-film", query_conditioned=True),
            "plain": agent_checkpoint(tmp_path / "run8")}
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("")
    before = tree_digest(tmp_path)
    with pytest.raises(ExportError, match="4 heads and window 12"):
        export(runs["heads4"], embedded_clip_dir(), tmp_path / "a", layout="reference")
    for name in ("scaled", "film"):
        with pytest.raises(ExportError, match="adds PE as is and has no FiLM"):
            export(runs[name], embedded_clip_dir(), tmp_path / "a", layout="reference")
    with pytest.raises(ExportError, match="not empty"):
        export(runs["plain"], embedded_clip_dir(), busy)
    with pytest.raises(ExportError, match="without a checkpoint"):
        export(tmp_path / "busy", embedded_clip_dir(), tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        export(tmp_path / "missing", embedded_clip_dir(), tmp_path / "c")
    # the refused runs and the busy folder are byte for byte as they were, and nothing was added beside them
    assert tree_digest(tmp_path) == before


def tree_digest(root) -> dict[str, str]:
    """Every file under root (hidden ones included) with the SHA-256 of its bytes."""
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
