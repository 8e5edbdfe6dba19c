"""The agent's default inference mode: picked by validation accuracy, recorded in the checkpoint, read back."""
import pytest
import torch

from tspo_ray.checkpoint import load_checkpoint, save_checkpoint
from tspo_ray.method.agent import TemporalAgent
from tspo_ray.training.model_selection import AGENT_MODES, best_mode, record_inference_mode


def test_best_mode_takes_the_highest_accuracy_and_breaks_ties_by_preference():
    assert best_mode({"top-k": 0.5, "bin-max": 0.7, "aks": 0.6}) == "bin-max"
    assert best_mode({"aks": 0.6, "top-k+edges": 0.6, "bin-max": 0.6}) == "bin-max"  # earlier in AGENT_MODES
    assert best_mode({"top-k+edges": 0.4, "top-k": 0.4}) == "top-k"
    assert AGENT_MODES == ("top-k", "bin-max", "aks", "top-k+edges", "events", "anchors", "chain")
    with pytest.raises(ValueError, match="no validation accuracies"):
        best_mode({})


def test_recorded_mode_is_what_the_selector_loads(tmp_path):
    from tspo_ray.selector import load_selector_agent

    agent = TemporalAgent(16, window=4, heads=2)
    save_checkpoint(tmp_path, 7, {"agent": agent.state_dict(), "agent_config": agent.config(),
                                  "config": {"agent": {"inference_mode": "top-k"}}})
    _, mode = load_selector_agent(tmp_path, window=4, heads=2)
    assert mode == "top-k"
    record_inference_mode(tmp_path, "bin-max", {"top-k": 0.5, "bin-max": 0.625})
    state = load_checkpoint(tmp_path)
    assert state["step"] == 7 and state["inference_mode_validation"] == {"top-k": 0.5, "bin-max": 0.625}
    loaded, mode = load_selector_agent(tmp_path, window=4, heads=2)
    assert mode == "bin-max"
    for name, p in agent.state_dict().items():  # the weights are untouched by the rewrite
        assert torch.equal(p, loaded.state_dict()[name])


def test_a_run_folder_offers_its_best_checkpoint_and_that_checkpoints_mode(tmp_path):
    from tspo_ray.checkpoint import mark_best
    from tspo_ray.selector import load_selector_agent

    torch.manual_seed(0)
    early, late = TemporalAgent(16, window=4, heads=2), TemporalAgent(16, window=4, heads=2)
    payload = lambda a: {"agent": a.state_dict(), "agent_config": a.config(),  # noqa: E731
                         "config": {"agent": {"inference_mode": "top-k"}}}
    best = save_checkpoint(tmp_path, 50, payload(early))
    record_inference_mode(best, "events", {"top-k": 0.5, "events": 0.9})
    save_checkpoint(tmp_path, 300, payload(late))
    loaded, mode = load_selector_agent(tmp_path, window=4, heads=2)
    assert mode == "top-k" and torch.equal(loaded.query.weight, late.query.weight)  # no best.json: the newest
    mark_best(tmp_path, best, 0.9)
    loaded, mode = load_selector_agent(tmp_path, window=4, heads=2)
    assert mode == "events" and torch.equal(loaded.query.weight, early.query.weight)
    assert load_checkpoint(tmp_path)["step"] == 300  # resuming still reads the newest
