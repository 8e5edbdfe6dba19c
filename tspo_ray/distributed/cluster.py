"""A multi-node Ray cluster on one machine with cluster.yaml's node types, for placement tests and benchmarks.

Each node is its own raylet (`ray.cluster_utils.Cluster`) carrying the custom resources its node type has in
cluster.yaml (head: encoder, coordinator; rollout: rollout; learner: learner), so the configs that place the parts
on a real cluster (train.answerer_resources {rollout: 1}, train.learner_resources {learner: 1},
train.coordinator_resources {coordinator: 1}) place them the same way here. CPUs are the caller's (the machine's
cores are shared by every node) and GPUs are dropped: none here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tspo_ray.distributed import PROJECT_ROOT, use_this_interpreter_for_local_workers

CLUSTER_YAML = Path(PROJECT_ROOT) / "cluster.yaml"
_NOT_CUSTOM = ("CPU", "GPU", "memory", "object_store_memory")


def node_type_resources(path: str | Path = CLUSTER_YAML) -> dict[str, dict[str, float]]:
    """The custom resources of each node type of a Ray cluster launcher file (CPU, GPU and memory left out)."""
    import yaml

    spec = yaml.safe_load(Path(path).read_text())
    types = spec.get("available_node_types") or {}
    if not types:
        raise ValueError(f"{path}: no available_node_types")
    return {name: {k: float(v) for k, v in (t.get("resources") or {}).items() if k not in _NOT_CUSTOM}
            for name, t in types.items()}


def start_local_cluster(nodes: dict[str, int], cpus: dict[str, float], path: str | Path = CLUSTER_YAML,
                        resources: dict[str, dict[str, float]] | None = None, head_type: str = "head",
                        object_store_bytes: int = 80 * 2**20, tries: int = 3) -> Any:
    """A ray.cluster_utils.Cluster with `nodes[type]` nodes of each type (the head type once, first), each with
    `cpus[type]` CPUs and its type's custom resources (cluster.yaml's, or `resources[type]` where given).
    The caller connects with ray.init(address=cluster.address) and ends with cluster.shutdown()."""
    from ray.cluster_utils import Cluster

    use_this_interpreter_for_local_workers()
    types = node_type_resources(path) | (resources or {})
    unknown = set(nodes) - set(types)
    if unknown:
        raise ValueError(f"node types {sorted(unknown)} are not in {path}; it has {sorted(types)}")
    if nodes.get(head_type, 1) != 1:
        raise ValueError(f"a cluster has one {head_type} node, got {nodes[head_type]}")

    def args(kind: str) -> dict:
        return {"num_cpus": cpus.get(kind, 1), "num_gpus": 0, "resources": dict(types[kind]),
                "object_store_memory": object_store_bytes, "include_dashboard": False}

    # Ray gives a raylet 30 s to register (a constant in ray._private.node); on a busy machine that runs out, so
    # each start is retried, as init_ray does for a local Ray.
    cluster = _retry(lambda: Cluster(initialize_head=True, head_node_args=args(head_type)), tries)
    try:
        for kind, count in nodes.items():
            if kind != head_type:
                for _ in range(count):
                    _retry(lambda: cluster.add_node(**args(kind)), tries)
        cluster.wait_for_nodes()
    except BaseException:
        cluster.shutdown()
        raise
    return cluster


def _retry(start, tries: int):
    import time

    for attempt in range(1, tries + 1):
        try:
            return start()
        except Exception as exc:
            if attempt == tries or "timed out during startup" not in str(exc):
                raise
            time.sleep(5)


class NodeRegistry:
    """Ray actor: where each named part says it runs (the learner reports its node here)."""

    def __init__(self):
        self.nodes: dict[str, str] = {}

    def put(self, name: str, node_id: str) -> None:
        self.nodes[name] = node_id

    def get(self) -> dict[str, str]:
        return dict(self.nodes)
