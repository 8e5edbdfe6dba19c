"""Every settings object is declared once (tspo_ray.settings.Settings): a wrong type and an unknown key are refused
with the field's full path and the reason; a checkpoint's recorded config is read through the declarations."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tspo_ray.answerers.embedded import EmbeddedSettings
from tspo_ray.answerers.hf_answerer import HFAnswererConfig
from tspo_ray.answerers.simulated import SimulatedSettings
from tspo_ray.answerers.vllm_answerer import VLLMAnswererConfig
from tspo_ray.config import Config, ConfigError, load_config, recorded_config
from tspo_ray.serve.service import ServeSettings
from tspo_ray.synthetic.world import WorldSettings

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoints" / "checkpoint-000002.safetensors"

#: (settings object, a valid mapping, a field and a value of the wrong type, the path its error names)
CASES = [
    (ServeSettings, {}, "replica_retries", "2", "replica_retries"),
    (ServeSettings, {}, "insecure_no_auth", "yes", "insecure_no_auth"),
    (WorldSettings, {}, "fps", 2.5, "fps"),
    (EmbeddedSettings, {}, "frame_size", "64", "answerer.settings.frame_size"),
    (SimulatedSettings, {}, "gpus_per_actor", 1.5, "answerer.settings.gpus_per_actor"),
    (VLLMAnswererConfig, {"model": "m"}, "max_tokens", "8", "answerer.settings.max_tokens"),
    (HFAnswererConfig, {"model": "m"}, "num_frames", [16], "answerer.settings.num_frames"),
]


@pytest.mark.parametrize("model,valid,field,bad,path", CASES, ids=lambda c: getattr(c, "__name__", None))
def test_each_settings_object_refuses_a_wrong_type_and_an_unknown_key(model, valid, field, bad, path):
    model.load(valid)  # the valid mapping loads
    with pytest.raises(ConfigError, match=rf"^{path}: expected .*, got {bad!r}".replace("[", r"\[")):
        model.load({**valid, field: bad})
    with pytest.raises(ConfigError, match=rf"^{path.rsplit('.', 1)[0] + '.' if '.' in path else ''}bogus: unknown "
                                          rf".*option \(known: "):
        model.load({**valid, "bogus": 1})


@pytest.mark.parametrize("section", list(Config.model_fields))
def test_each_config_section_refuses_a_wrong_type_and_an_unknown_key(section):
    model = Config.model_fields[section].annotation
    name, field = next((n, f) for n, f in model.model_fields.items() if f.annotation in (int, float, bool, str))
    bad = "x" if field.annotation is not str else ["x"]
    with pytest.raises(ConfigError, match=rf"^{section}.{name}: expected "):
        load_config(overrides=[f"{section}.{name}={json.dumps(bad)}"])
    with pytest.raises(ConfigError, match=rf"^{section}.bogus: unknown option \(known: .*\b{name}\b"):
        load_config(overrides=[f"{section}.bogus=1"])


def test_ranges_and_choices_name_the_field_and_the_reason():
    for override, message in [("grpo.clip_eps=1.5", "grpo.clip_eps: must be < 1, got 1.5"),
                              ("policy.group_size=1", "policy.group_size: must be >= 2, got 1"),
                              ("train.learner_device=gpu", "train.learner_device: must be one of cpu, cuda, got 'gpu'"),
                              ("features.encoder.batch_size=0", "features.encoder.batch_size: must be >= 1, got 0")]:
        with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(") + "$"):
            load_config(overrides=[override])
    with pytest.raises(ConfigError, match=r"^answerer.settings.max_tokens: must be >= 1, got 0$"):
        VLLMAnswererConfig.load({"model": "m", "max_tokens": 0})
    with pytest.raises(ConfigError, match=r"^answerer.settings.model: required$"):
        HFAnswererConfig.load({})


def test_yaml_leniencies_are_kept():
    cfg = load_config(overrides=["grpo.lr=3e-3", "tracking.run_name=2024"])  # YAML 1.1 reads 3e-3 as a string
    assert cfg.grpo.lr == 0.003 and cfg.tracking.run_name == "2024"
    assert VLLMAnswererConfig.load({"model": "m", "probe_frame_hw": [360, 640]}).probe_frame_hw == (360, 640)


def test_a_checkpoint_of_an_earlier_main_is_read_through_the_declarations():
    header = FIXTURE.read_bytes()
    meta = json.loads(json.loads(header[8:8 + struct.unpack("<Q", header[:8])[0]])["__metadata__"]["tspo_ray"])
    assert "sampling" not in meta["config"]["policy"]  # older than the field
    cfg = recorded_config(meta)
    assert isinstance(cfg, Config) and cfg.policy.num_frames == 3 and cfg.train.questions_per_step == 2
    assert cfg.policy.sampling == "top-k" and cfg.agent.position_scale == 1.0  # today's defaults
    assert recorded_config({}) is None
    meta["config"]["policy"]["num_frames"] = "3"
    with pytest.raises(ConfigError, match="^the checkpoint's recorded config: policy.num_frames: expected an integer"):
        recorded_config(meta)


def test_answerer_kinds_come_from_the_registry():
    from tspo_ray.answerers import build_answerer, kinds, parse_settings

    assert set(kinds()) >= {"embedded", "vllm", "hf", "simulated"}
    with pytest.raises(ConfigError, match=r"^answerer.kind: unknown answerer kind 'sglang'; choose one of embedded, "):
        parse_settings("sglang", {})
    with pytest.raises(ValueError, match="unknown answerer kind 'sglang'"):
        build_answerer("sglang")
    assert isinstance(parse_settings("simulated", {"time_scale": 0.5}), SimulatedSettings)


def test_a_registry_lists_known_names_and_checks_declared_settings():
    from tspo_ray.registry import Registry

    reg = Registry("widget")

    @reg.register("a", settings=WorldSettings)
    def make_a(settings):
        return settings

    assert reg.names() == ("a",) and reg.get("a").obj is make_a
    assert reg.settings("a", {"fps": 3}).fps == 3
    with pytest.raises(ValueError, match=r"^unknown widget 'b'; choose one of a$"):
        reg.get("b")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", lambda s: s)


def test_an_exports_selector_config_is_read_through_its_declaration(tmp_path):
    from tspo_ray.selector import layout_settings

    assert layout_settings(tmp_path, 12, 8) == ("top-k", 12, 8)  # the published TSPO-0.4B: no such file
    (tmp_path / "selector_config.json").write_text(json.dumps({"inference_mode": "events", "window": 6}))
    assert layout_settings(tmp_path, 12, 8) == ("events", 6, 8)
    (tmp_path / "selector_config.json").write_text(json.dumps({"heads": "4"}))
    with pytest.raises(ValueError, match=r"selector_config.json: heads: expected an integer, got '4'"):
        layout_settings(tmp_path, 12, 8)
    (tmp_path / "selector_config.json").write_text(json.dumps({"bogus": 1}))
    with pytest.raises(ValueError, match=r"selector_config.json: bogus: unknown selector config option"):
        layout_settings(tmp_path, 12, 8)
