"""Shipped configs load and validate; the cluster launcher file passes Ray's own schema."""
from pathlib import Path

import pytest
import yaml

from tspo_ray.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


JOB_CONFIGS = [p for p in sorted((ROOT / "configs").glob("*.yaml"))
               if p.name != "serve.yaml" and not p.name.startswith("answerer_")]  # those follow other schemas


@pytest.mark.parametrize("path", JOB_CONFIGS, ids=lambda p: p.name)
def test_configs_validate(path):
    cfg = load_config(path)
    assert cfg.policy.group_size >= 2


def test_cluster_yaml_matches_ray_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(cfg))
    types = cfg["available_node_types"]
    assert types["rollout"]["resources"]["rollout"] >= 1 and types["learner"]["resources"]["learner"] == 1


def test_overrides_and_errors(tmp_path):
    cfg = load_config(overrides=["grpo.lr=3e-3", "eval.selectors=[uniform, agent]", "features.frame_size=null"])
    assert cfg.grpo.lr == 0.003 and cfg.eval.selectors == ["uniform", "agent"] and cfg.features.frame_size is None
    assert cfg.flat()["policy.group_size"] == 8
    for bad, field in [("grpo.clip_eps=0", "grpo.clip_eps"), ("policy.likelihood=exact", "policy.likelihood"),
                       ("train.steps=1.5", "train.steps"), ("grpo.filter_zero_variance=maybe", "grpo.filter_zero_variance"),
                       ("eval.selectors=[best]", "eval.selectors[0]"), ("nosuch.key=1", "nosuch"),
                       ("policy.group_size=1", "policy.group_size")]:
        with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
            load_config(overrides=[bad])
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
