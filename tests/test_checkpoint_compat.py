"""A checkpoint written by the package before its modules moved into folders (commit 9dc1d92, with
tests/fixtures/checkpoints/expected.json holding its agent's scores then) loads, scores and resumes now."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoints"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


def item0_features():
    """The first item's features, drawn as the fixture's writer drew them."""
    g = torch.Generator().manual_seed(EXPECTED["seed"])
    return torch.randn(EXPECTED["T"], EXPECTED["dim"], generator=g), torch.randn(EXPECTED["dim"], generator=g)


def test_an_old_checkpoint_scores_as_it_did():
    from tspo_ray.checkpoint import load_agent, recommended_checkpoint

    path = recommended_checkpoint(FIXTURE)
    assert path.name == EXPECTED["checkpoint"]
    agent = load_agent(path).eval()
    frames, text = item0_features()
    with torch.no_grad():
        scores = agent(frames, text)
    assert torch.allclose(scores, torch.tensor(EXPECTED["scores_item0"]), atol=1e-6)


def test_an_old_checkpoint_resumes(tmp_path):
    from tspo_ray.config import load_config
    from tspo_ray.training.learner_state import LearnerState

    shutil.copytree(FIXTURE, tmp_path / "checkpoints")
    cfg = load_config(overrides=["train.max_lag=1", "train.questions_per_step=2", "policy.group_size=4",
                                 "policy.num_frames=3", "train.keep_checkpoints=1"])
    state = LearnerState(cfg, EXPECTED["dim"], 4)
    state.load(tmp_path / "checkpoints")
    assert state.step == EXPECTED["step"] and len(state.history) == EXPECTED["step"]
    assert sorted(state.recent) == [EXPECTED["step"] - 1]  # the version the batch in flight was sampled with
    frames, text = item0_features()
    with torch.no_grad():
        assert torch.allclose(state.agent.eval()(frames, text), torch.tensor(EXPECTED["scores_item0"]), atol=1e-6)
