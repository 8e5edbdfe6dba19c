"""policy.anchors is recorded with the checkpoint and used at inference: the anchors method places as many of the
agent's best frames as training drew, on every path that loads the agent (selector, evaluation, Serve, export)."""
import json

import torch

from tspo_ray.config import load_config
from tspo_ray.method import selection_methods
from tspo_ray.selector import clip_scores, layout_anchors, load_selector_agent, select_positions
from tspo_ray.training.learner_state import LearnerState

DIM, T, K = 16, 40, 8


def test_a_checkpoint_carries_its_anchors_to_inference(tmp_path):
    cfg = load_config(overrides=["policy.sampling=anchors", "policy.anchors=5", "policy.num_frames=8"])
    state = LearnerState(cfg, DIM, 4)
    assert state.agent.anchors == 5  # validation during training uses them too
    path = state.save(tmp_path / "checkpoints")
    agent, _ = load_selector_agent(path)
    assert agent.anchors == 5
    g = torch.Generator().manual_seed(0)
    frames, text = torch.randn(T, DIM, generator=g), torch.randn(DIM, generator=g)
    positions, scores = select_positions(frames, text, "agent:anchors", K, agent)
    best = set(scores.topk(5).indices.tolist())
    assert best <= set(positions.tolist())
    want = selection_methods.anchored_set(scores.topk(5).indices.tolist(), clip_scores(frames, text), K)
    assert positions.tolist() == want.tolist()


def test_an_agent_without_a_record_places_the_default(tmp_path):
    assert layout_anchors(tmp_path) == selection_methods.ANCHORS
    (tmp_path / "selector_config.json").write_text(json.dumps({"inference_mode": "anchors", "anchors": 3}))
    assert layout_anchors(tmp_path) == 3
