"""Several Ray nodes on this machine with cluster.yaml's node types: the parts land where their resources say, and
a training job there trains the one-process loop's weights."""
import torch

from tspo_ray.distributed.cluster import node_type_resources


def test_cluster_yaml_node_types_carry_the_resources_the_configs_ask_for():
    types = node_type_resources()
    assert types["head"] == {"encoder": 1.0, "coordinator": 1.0}
    assert types["rollout"] == {"rollout": 4.0} and types["learner"] == {"learner": 1.0}


def test_parts_land_on_their_node_types_and_train_the_one_process_weights(ray_cluster, tiny_world, tiny_hf_clip,
                                                                         tmp_path):
    import ray

    from tspo_ray.checkpoint import load_checkpoint
    from tspo_ray.config import load_config
    from tspo_ray.distributed.cluster import NodeRegistry
    from tspo_ray.distributed.training import train_distributed
    from tspo_ray.splits import prepare_split
    from tspo_ray.training.trainer import train_single_process
    from tspo_ray.video.encoders import load_encoder

    enc = f"{{backend: hf, model: {tiny_hf_clip}}}"
    overrides = [f"data.root={tiny_world}", f"features.encoder={enc}", f"features.store={tmp_path}/features",
                 f"answerer.settings={{encoder: {enc}}}", "features.max_candidates=32", "policy.num_frames=4",
                 "policy.group_size=4", "train.steps=3", "train.questions_per_step=4", "train.checkpoint_every=1",
                 "train.num_answerers=4", "train.answerer_cpus=0.25", "agent.heads=4", "train.max_lag=1",
                 "train.jobs_per_call=1",
                 "train.answerer_resources={rollout: 1}", "train.learner_resources={learner: 1}",
                 "train.coordinator_resources={coordinator: 1}"]
    cfg = load_config(None, overrides + [f"train.output_dir={tmp_path}/cluster"])
    items, _, _ = prepare_split(cfg, "train", load_encoder(cfg.features.encoder), progress=False)
    registry = ray.remote(num_cpus=0)(NodeRegistry).remote()
    train_distributed(cfg, items, report_node=registry)

    kind_of = {}  # node id -> its node type, told by the custom resource it carries
    for node in ray.nodes():
        custom = {k for k in node["Resources"] if k in ("learner", "rollout", "coordinator")}
        assert len(custom) == 1, node["Resources"]
        kind_of[node["NodeID"]] = custom.pop()
    placed = ray.get(registry.get.remote())
    assert kind_of[placed.pop("learner")] == "learner"
    assert kind_of[placed.pop("coordinator")] == "coordinator"  # the head
    answerer_nodes = [placed[f"answerer{i}"] for i in range(4)]
    assert [kind_of[n] for n in answerer_nodes] == ["rollout"] * 4
    assert len(set(answerer_nodes)) == 2  # two per rollout node: {rollout: 2} each

    reference = tmp_path / "one_process"
    train_single_process(load_config(None, overrides + [f"train.output_dir={reference}"]), items, progress=False)
    got = load_checkpoint(tmp_path / "cluster" / "checkpoints")
    want = load_checkpoint(reference / "checkpoints")
    assert got["step"] == want["step"] == 3 and got["history"] == want["history"]
    for name in want["agent"]:  # separate processes may sum in another order: equal up to float rounding
        torch.testing.assert_close(got["agent"][name], want["agent"][name], rtol=1e-5, atol=1e-6, msg=name)
