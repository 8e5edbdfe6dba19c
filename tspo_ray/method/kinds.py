"""Agent kinds by name: the registry of tspo_ray.method.agent filled with every kind this package ships.

    agent = agent_from_config({"kind": "scan", "dim": 64})   # no "kind": eq3, the reference's layout

Another back end registers its own class with `@register_agent("name")` (tspo_ray.method.agent) and is then built
here by name like the shipped ones.
"""
from __future__ import annotations

from typing import Mapping

from torch import nn

from tspo_ray.method import scan_agent  # noqa: F401  (registers "scan")
from tspo_ray.method.agent import AGENT_KINDS, DEFAULT_KIND


def agent_kinds() -> tuple[str, ...]:
    """The registered kind names."""
    return tuple(sorted(AGENT_KINDS))


def agent_from_config(config: Mapping) -> nn.Module:
    """A fresh agent of the kind and shape a config() dict names (no "kind": eq3)."""
    config = dict(config)
    kind = config.pop("kind", DEFAULT_KIND)
    if kind not in AGENT_KINDS:
        raise ValueError(f"unknown agent kind {kind!r}; choose one of {', '.join(agent_kinds())}")
    return AGENT_KINDS[kind](**config)


def kind_of(agent: nn.Module) -> str:
    """The registered name of an agent's class."""
    return getattr(agent, "kind", DEFAULT_KIND)


def is_set_aware(agent: nn.Module) -> bool:
    """Whether the agent's policy draws frames in sequence, each conditioned on those taken (set_policy)."""
    return hasattr(agent, "set_policy")
