"""Export a trained selector to the published TSPO-0.4B layout, which the reference code and others read.

    python -m tspo_ray.export --checkpoint outputs/run/checkpoints --clip /models/clip-vit-large-patch14 --out TSPO-mine

The folder holds what TSPO-0.4B holds: a transformers CLIPModel saved with save_pretrained, the agent's weights as
`selector.*` tensors in the same safetensors file under the reference's names and shapes (bf16 by default, as
published; `--dtype float32` keeps full precision), the CLIPProcessor files, and a model card (README.md) with the
training config, data, validation table and the inference mode chosen on validation. `selector_config.json` records
that mode, the window and the heads (and, in the tspo-ray layout, the feature spec the run trained with), so
`KeyframeSelector.from_pretrained(DIR)` selects as the run did. A TSPO-0.4B-layout folder is read with the
reference's features: every candidate of the 1-fps grid at native size through its CLIP processor.

The reference computes 8 heads over a window of 12, adds PE as is and has no FiLM, with no field for anything else.
An agent trained otherwise (another kind, heads, window, agent.position_scale, agent.query_conditioned) is written
in the tspo-ray layout instead (`--layout auto`, the default): the same folder, but the agent's tensors under
`selector.agent.<its own names>` and its kind and whole config in `selector_config.json`, so only tspo-ray's readers
(KeyframeSelector.from_pretrained, jobs/evaluate.py, Serve, the lmms-eval plug-in) load it; the model card says so.
`--layout reference` refuses such an agent instead. A checkpoint trained on features of another dimension than the
given CLIP projects to is refused either way.
`selector.temporal.ffn_o` exists in the reference's module but its forward pass never uses it; it is written as zeros
so the reference's strict load finds every key.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from tspo_ray.checkpoint import is_own_checkpoint_file, load_checkpoint, recommended_checkpoint
from tspo_ray.config import recorded_config
from tspo_ray.safe_files import UnsafeFileError, write_tensors_atomic, write_text_atomic
from tspo_ray.selector import OWN_LAYOUT_PREFIX, SELECTOR_CONFIG, SelectorConfig, load_selector_agent
from tspo_ray.video.encoders.hf_clip import file_digest, image_settings

#: what the reference's TemporalAgent computes (it has no setting for either)
REFERENCE_HEADS, REFERENCE_WINDOW = 8, 12
DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32}
WEIGHTS = "model.safetensors"


class ExportError(ValueError):
    """A checkpoint or CLIP that cannot be exported; the message says which and why."""


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file a run folder offers (best on validation, else newest), or the file itself."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint or run folder")
    if path.is_dir():
        found = recommended_checkpoint(path)
        if found is None or not found.exists():
            raise ExportError(f"{path}: a folder without a checkpoint (no best.json or latest.json naming one)")
        path = found
    if not is_own_checkpoint_file(path):
        raise ExportError(f"{path}: not a tspo-ray checkpoint (TSPO-0.4B weights are in this layout already)")
    return path


LAYOUTS = ("auto", "reference", "tspo-ray")


def reference_expressible(agent) -> bool:
    """Whether the TSPO-0.4B layout, read by the reference's code, scores as this agent does."""
    return (getattr(agent, "kind", "eq3") == "eq3" and (agent.heads, agent.window) == (REFERENCE_HEADS, REFERENCE_WINDOW)
            and getattr(agent, "position_scale", 1.0) == 1.0 and not getattr(agent, "query_conditioned", False))


def check_compatible(agent, clip_dim: int, checkpoint: Path, clip: str | Path, layout: str = "reference") -> None:
    """ExportError unless the agent scores features of the CLIP's dimension, and (layout "reference") scores them as
    the reference's forward pass does."""
    if agent.dim != clip_dim:
        raise ExportError(f"{checkpoint} was trained on {agent.dim}-dimensional features, but the CLIP at {clip} "
                          f"projects to {clip_dim}: give the CLIP the run's features came from")
    if layout != "reference":
        return
    if getattr(agent, "kind", "eq3") != "eq3":
        raise ExportError(f"{checkpoint}: a {agent.kind} agent; the TSPO-0.4B layout holds eq. 3 only "
                          "(export with --layout tspo-ray)")
    if (agent.heads, agent.window) != (REFERENCE_HEADS, REFERENCE_WINDOW):
        raise ExportError(f"{checkpoint}: an agent with {agent.heads} heads and window {agent.window}; the TSPO-0.4B "
                          f"layout is read as {REFERENCE_HEADS} heads and window {REFERENCE_WINDOW}, so the reference "
                          f"would score it differently")
    if getattr(agent, "position_scale", 1.0) != 1.0 or getattr(agent, "query_conditioned", False):
        raise ExportError(f"{checkpoint}: an agent with position_scale {agent.position_scale} and query_conditioned "
                          f"{agent.query_conditioned}; the TSPO-0.4B layout adds PE as is and has no FiLM, so the "
                          f"reference would score it differently (train with agent.position_scale=1 to publish)")


def selector_tensors(agent, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The agent under the reference's `selector.*` names and shapes, with the unused ffn_o as zeros, in dtype."""
    state = agent.to_reference_state_dict()
    dim = agent.dim
    state["selector.temporal.ffn_o.weight"] = torch.zeros(dim, dim)
    state["selector.temporal.ffn_o.bias"] = torch.zeros(dim)
    return {k: v.detach().to(dtype).contiguous() for k, v in sorted(state.items())}


def clip_processor(clip_dir: Path, image_size: int):
    """The CLIPProcessor of the exported folder: the CLIP's own saved image processor when it has a full one, else
    one that does what the encoder does for a CLIP without it (a square resize to image_size, the saved mean/std)."""
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPProcessor

    cfg_file = clip_dir / "preprocessor_config.json"
    saved = json.loads(cfg_file.read_text()) if cfg_file.exists() else None
    if saved and saved.get("crop_size") and saved.get("size"):
        image = CLIPImageProcessor.from_pretrained(clip_dir)
    else:
        s = image_settings(saved, image_size)
        image = CLIPImageProcessor(do_resize=True, size={"height": image_size, "width": image_size},
                                   do_center_crop=False, image_mean=list(s.mean), image_std=list(s.std),
                                   resample=2)  # bilinear, as the encoder's batched resize
    return CLIPProcessor(image_processor=image, tokenizer=AutoTokenizer.from_pretrained(clip_dir))


def own_tensors(agent, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The agent's own state dict under selector.agent.*, in dtype (the tspo-ray layout)."""
    return {f"{OWN_LAYOUT_PREFIX}{k}": v.detach().to(dtype).contiguous() for k, v in sorted(agent.state_dict().items())}


def export(checkpoint: str | Path, clip: str | Path, out: str | Path, dtype: str = "bfloat16",
           layout: str = "auto") -> dict[str, Any]:
    """Write a checkpoint with a CLIP into `out` (which must not exist or be empty) in the TSPO-0.4B layout, or, for
    an agent that layout cannot express (layout "auto") or on request ("tspo-ray"), in the tspo-ray layout; the
    folder appears whole or not at all. Returns what was written (the model card's facts)."""
    from transformers import CLIPModel

    if layout not in LAYOUTS:
        raise ExportError(f"--layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    torch_dtype = DTYPES[dtype]
    clip, out = Path(clip), Path(out)
    if not (clip / "config.json").is_file():
        raise FileNotFoundError(f"{clip}: not a CLIP folder (no config.json)")
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out}: exists and is not empty; give a new folder")
    path = resolve_checkpoint(checkpoint)
    meta = load_checkpoint(path)
    agent, mode = load_selector_agent(path)
    try:
        model = CLIPModel.from_pretrained(clip, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ExportError(f"{clip}: cannot load as a transformers CLIPModel ({str(exc).splitlines()[0]})") from None
    if layout == "auto":
        layout = "reference" if reference_expressible(agent) else "tspo-ray"
    check_compatible(agent, int(model.config.projection_dim), path, clip, layout)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        model.to(torch_dtype).save_pretrained(staging, max_shard_size="1000GB")  # one file, as published
        from safetensors.torch import load_file

        ours = selector_tensors(agent, torch_dtype) if layout == "reference" else own_tensors(agent, torch_dtype)
        tensors = {**load_file(str(staging / WEIGHTS)), **ours}
        write_tensors_atomic(staging / WEIGHTS, tensors, metadata={"format": "pt"})
        processor = clip_processor(clip, int(model.config.vision_config.image_size))
        processor.save_pretrained(staging)  # processor_config.json and the tokenizer (transformers 5)
        processor.image_processor.save_pretrained(staging)  # preprocessor_config.json, which 4.x and the reference read
        facts = {**card_facts(meta, path, clip, mode, dtype, agent), "layout": layout}
        settings = {"inference_mode": mode, "anchors": agent.anchors, "heads": agent.heads, "window": agent.window,
                    "dim": agent.dim, "source_checkpoint": str(path), "step": facts["step"]}
        if layout != "reference":  # what the TSPO-0.4B layout has no field for
            settings.update(layout="tspo-ray", kind=getattr(agent, "kind", "eq3"),
                            position_scale=getattr(agent, "position_scale", 1.0), agent_config=agent.config(),
                            features=exported_features(meta))
        selector_config = SelectorConfig(**settings).to_dict()
        if layout == "reference":  # as before: only what the reference layout's readers need beside it; its
            # features are the reference's pipeline, as every reader of the layout computes them
            for key in ("layout", "kind", "position_scale", "agent_config", "features"):
                selector_config.pop(key)
        write_text_atomic(staging / SELECTOR_CONFIG, json.dumps(selector_config, indent=2) + "\n")
        write_text_atomic(staging / "README.md", model_card(facts))
        os.chmod(staging, 0o755)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return facts


def exported_features(meta: dict) -> dict[str, Any] | None:
    """The feature spec a run trained with, less its encoder (the exported folder's CLIP is the encoder)."""
    config = recorded_config(meta)
    if config is None:
        return None
    return {k: v for k, v in config.features.spec().to_dict().items() if k != "encoder"}


def card_facts(meta: dict, path: Path, clip: Path, mode: str, dtype: str, agent) -> dict[str, Any]:
    """What the model card states, from the checkpoint's own record."""
    config = meta.get("config") or {}
    weights = clip / WEIGHTS
    return {
        "checkpoint": str(path), "step": int(meta.get("step", 0)), "best_val": meta.get("best_val"),
        "inference_mode": mode, "mode_validation": meta.get("inference_mode_validation") or {},
        "data_position": meta.get("data_position") or {}, "config": config, "clip": str(clip),
        "clip_digest": file_digest(weights) if weights.exists() else None, "dtype": dtype,
        "agent": agent.config(), "parameters": sum(p.numel() for p in agent.parameters()),
    }


def readers(f: dict[str, Any]) -> list[str]:
    """The model card's paragraph on who can read the folder."""
    if f.get("layout", "reference") == "reference":
        return ["**Readers:** the reference's TSPO code and its lmms-eval adaptations, and tspo-ray "
                "(`KeyframeSelector.from_pretrained`, `jobs/evaluate.py`, Serve, the lmms-eval plug-in).", ""]
    a = f["agent"]
    return [f"**This is not the TSPO-0.4B layout's agent:** kind `{a.get('kind', 'eq3')}`, position scale "
            f"{a.get('position_scale', 1.0)}, query-conditioned {bool(a.get('query_conditioned', False))}. The agent's "
            f"tensors are `{OWN_LAYOUT_PREFIX}*` and its whole config is in `{SELECTOR_CONFIG}`. **Readers:** tspo-ray "
            "only (`KeyframeSelector.from_pretrained`, `jobs/evaluate.py`, Serve, the lmms-eval plug-in); the "
            "reference's TSPO code finds no `selector.temporal.*` tensors here and cannot load it.", ""]


def model_card(f: dict[str, Any]) -> str:
    """README.md of the exported folder: how to load it, what it was trained on, how it did on validation."""
    cfg = f["config"]
    data, train, policy, grpo = (cfg.get(k, {}) for k in ("data", "train", "policy", "grpo"))
    encoder = cfg.get("features", {}).get("encoder")
    lines = [
        "---", "library_name: transformers", "tags: [keyframe-selection, video-question-answering, tspo, clip]", "---",
        "", "# TSPO keyframe selector", "",
        f"A CLIP (`{f['clip']}`, projection dim {f['agent']['dim']}) with a trained TSPO temporal agent "
        f"({f['parameters']:,} parameters, {f['agent']['heads']} heads, window {f['agent']['window']}) in the "
        f"{'TSPO-0.4B' if f.get('layout', 'reference') == 'reference' else 'tspo-ray'} layout: `selector.*` tensors "
        f"beside the CLIP's in `{WEIGHTS}`, {f['dtype']}.", "",
        *readers(f),
        "```python", "from tspo_ray import KeyframeSelector", "sel = KeyframeSelector.from_pretrained(\"THIS_FOLDER\")",
        "sel.select(\"video.mp4\", \"What colour is the car?\", k=64)  # the agent with the recorded inference mode",
        "```", "",
        f"**Inference mode** (chosen on validation, recorded in `{SELECTOR_CONFIG}`): `{f['inference_mode']}`.", "",
        "## Validation", "",
    ]
    if f["mode_validation"]:
        lines += ["| agent:<mode> | validation accuracy |", "|---|---|"]
        lines += [f"| {m}{' (chosen)' if m == f['inference_mode'] else ''} | {a:.3f} |"
                  for m, a in f["mode_validation"].items()]
    else:
        lines.append("No inference mode was chosen on validation for this checkpoint.")
    if f["best_val"] is not None:
        lines += ["", f"Best periodic validation accuracy ({train.get('eval_selector', 'agent')}): "
                      f"{f['best_val']:.3f}, at step {f['step']}."]
    lines += [
        "", "## Training", "",
        f"- checkpoint: `{f['checkpoint']}` (step {f['step']} of {train.get('steps', '?')})",
        f"- data: `{data.get('root', '?')}`, {f['data_position'].get('num_items', '?')} training questions, "
        f"{train.get('questions_per_step', '?')} per step",
        f"- features: encoder `{json.dumps(encoder)}`, fps {cfg.get('features', {}).get('fps', '?')}, "
        f"at most {cfg.get('features', {}).get('max_candidates', '?')} candidates",
        "- features this folder is read with: " + (
            "the reference's pipeline (every candidate of the 1-fps grid, native size, this folder's CLIP processor)"
            if f.get("layout", "reference") == "reference"
            else f"`{SELECTOR_CONFIG}`'s `features`, this folder's CLIP"),
        f"- policy: T_s={policy.get('num_frames', '?')}, G={policy.get('group_size', '?')}, "
        f"tau {policy.get('tau_start', '?')} -> {policy.get('tau_end', '?')}, likelihood {policy.get('likelihood', '?')}",
        f"- GRPO: lr {grpo.get('lr', '?')}, clip {grpo.get('clip_eps', '?')}, epochs {grpo.get('epochs', '?')}, "
        f"KL {grpo.get('kl_coef', '?')}",
        f"- answerer: `{cfg.get('answerer', {}).get('kind', '?')}`",
        "", "<details><summary>full training config</summary>", "", "```json", json.dumps(cfg, indent=2), "```",
        "", "</details>", "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tspo_ray.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="a run's checkpoint folder or one checkpoint file")
    ap.add_argument("--clip", required=True, help="the transformers CLIP folder the run's features came from")
    ap.add_argument("--out", required=True, help="the folder to write (new or empty)")
    ap.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES), help="tensor dtype (default bfloat16)")
    ap.add_argument("--layout", default="auto", choices=LAYOUTS,
                    help="auto (default): the TSPO-0.4B layout where it can express the agent, else the tspo-ray one")
    args = ap.parse_args(argv)
    try:
        facts = export(args.checkpoint, args.clip, args.out, args.dtype, args.layout)
    except (ExportError, FileNotFoundError, UnsafeFileError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: step {facts['step']} of {facts['checkpoint']}, inference mode "
          f"{facts['inference_mode']}, {facts['dtype']}, {facts['layout']} layout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
