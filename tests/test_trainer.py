"""The local TSPO loop on a tiny problem where the right frames are known: the expected reward must rise."""
import dataclasses
import time

import numpy as np
import pytest
import torch

from tspo_ray.config import load_config
from tspo_ray.data.cursor import DataCursor
from tspo_ray.data.items import FeatureItem
from tspo_ray.data.records import QARecord
from tspo_ray.method.rewards import RewardResult, temporal_reward
from tspo_ray.training.trainer import LocalTrainer, expected_reward

D, T = 16, 40


def toy_items(n, seed):
    """Needle frames carry a hidden direction; the question carries another. The agent must learn to link them."""
    g = torch.Generator().manual_seed(seed)
    needle_dir, query_dir = torch.randn(D, generator=g), torch.randn(D, generator=g)
    items = []
    for i in range(n):
        frames = torch.randn(T, D, generator=g)
        start = int(torch.randint(0, T - 4, (1,), generator=g))
        frames[start : start + 4] += 2.5 * needle_dir
        text = query_dir + 0.3 * torch.randn(D, generator=g)
        rec = QARecord(id=f"q{i}", video="v.mp4", question="q?", options=["a", "b"], answer="A", type="needle",
                       target_spans=[[float(start), float(start + 3)]])
        items.append(FeatureItem(rec, frames, text, np.arange(T), np.arange(T, dtype=float), "v.mp4"))
    return items


def toy_reward(item, draws):
    ts = [[item.timestamps_s[p] for p in row] for row in draws.tolist()]
    r_t = torch.tensor([temporal_reward(t, item.record.target_spans) for t in ts])
    r_a = (r_t > 0).float()  # "the answerer is right when it sees the needle"
    return RewardResult(r_a + r_t, r_a, r_t)


def test_expected_reward_rises():
    items = toy_items(24, seed=0)
    cfg = load_config(overrides=["policy.num_frames=4", "policy.group_size=8", "train.questions_per_step=8",
                                 "train.steps=40", "grpo.lr=3e-3", "agent.heads=4", "policy.tau_start=0.1",
                                 "policy.tau_end=0.05", "train.max_lag=0"])
    logged = []
    trainer = LocalTrainer(items, toy_reward, cfg, log_fn=lambda step, m: logged.append((step, m)))
    held_out = toy_items(16, seed=1)
    before = expected_reward(trainer.agent, held_out, toy_reward, 4, tau=0.05)
    trainer.run()
    after = expected_reward(trainer.agent, held_out, toy_reward, 4, tau=0.05)
    assert [s for s, _ in logged] == list(range(1, 41))
    assert {"reward", "clip_fraction", "approx_kl", "entropy", "tau", "zero_variance_fraction"} <= set(logged[-1][1])
    assert after > before + 0.5, (before, after)
    assert sum(m["time_learn_s"] for _, m in logged) > sum(m["time_answer_s"] for _, m in logged)  # toy rewards


def test_each_step_times_its_answering_apart_from_sampling_and_learning():
    """A reward function that takes a known time: each step's answering time holds it, and the sampling and
    learning times do not."""
    items = toy_items(6, seed=3)
    cfg = load_config(overrides=["policy.num_frames=4", "policy.group_size=4", "train.questions_per_step=3",
                                 "train.steps=2", "agent.heads=4", "train.max_lag=0"])
    pause = 0.2

    def slow_reward(item, draws):
        time.sleep(pause)  # the answerer's time, what the step must attribute to answering
        return toy_reward(item, draws)

    metrics = LocalTrainer(items, slow_reward, cfg).run()
    for m in metrics:  # three questions a step, each answered once
        assert 3 * pause <= m["time_answer_s"] < 3 * pause + 1.0, m
        assert m["time_sample_s"] < 3 * pause and m["time_learn_s"] > 0, m


def test_resume_continues_exactly():
    items = toy_items(10, seed=2)
    cfg = load_config(overrides=["policy.num_frames=4", "train.questions_per_step=4", "train.steps=6",
                                 "agent.heads=4"])
    straight = LocalTrainer(items, toy_reward, cfg)
    straight_metrics = straight.run(6)

    first = LocalTrainer(items, toy_reward, cfg)
    first.run(3)
    state = first.state_dict()
    resumed = LocalTrainer(items, toy_reward, cfg)
    resumed.load_state_dict(state)
    resumed_metrics = resumed.run(3)
    assert resumed.step == straight.step == 6
    assert resumed.state.data_position() == straight.state.data_position()
    assert resumed.state.history == straight.state.history
    for a, b in zip(straight_metrics[3:], resumed_metrics):
        assert a["reward"] == pytest.approx(b["reward"]) and a.get("loss") == pytest.approx(b.get("loss"), abs=1e-6)
    for name, p in straight.agent.state_dict().items():
        torch.testing.assert_close(p, resumed.agent.state_dict()[name])


def test_cursor_covers_each_epoch_once_and_resumes_mid_epoch():
    c = DataCursor(7, seed=3)
    seen = c.next_batch(3) + c.next_batch(3)
    state = c.state_dict()
    rest = c.next_batch(4)
    assert sorted(seen + rest[:1]) == list(range(7))
    again = DataCursor.from_state_dict(state)
    assert again.next_batch(4) == rest


def test_batch_to_device_moves_every_tensor_the_update_reads():
    from tspo_ray.training.learner import batch_to_device
    from tspo_ray.training.rollout import Group

    items = toy_items(2, seed=3)
    groups = [Group(it.key, torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, 2), 0.1, 0, torch.ones(4),
                    torch.ones(4), torch.zeros(4)) for it in items]
    moved_items, moved_groups = batch_to_device(items, groups, "meta")  # a device other than the CPU, on any machine
    for it in moved_items:
        assert it.frame_features.device.type == it.text_feature.device.type == "meta"
    for g in moved_groups:
        assert {t.device.type for t in (g.draws, g.logp_old, g.rewards, g.r_answer, g.r_temporal)} == {"meta"}
    assert items[0].frame_features.device.type == "cpu" and groups[0].draws.device.type == "cpu"  # inputs untouched
    assert moved_items[0].record is items[0].record and moved_groups[0].tau == 0.1


def lag_cfg(max_lag, steps=6, extra=()):
    return load_config(overrides=["policy.num_frames=4", "policy.group_size=4", "train.questions_per_step=4",
                                  f"train.steps={steps}", "agent.heads=4", f"train.max_lag={max_lag}",
                                  "grpo.kl_coef=0.05", *extra])


@pytest.mark.parametrize("max_lag", [0, 1, 2])
def test_resume_at_every_step_gives_the_uninterrupted_weights(max_lag):
    items = toy_items(10, seed=4)
    cfg = lag_cfg(max_lag)
    straight = LocalTrainer(items, toy_reward, cfg)
    metrics = straight.run()
    # batch b is sampled with version max(0, b - max_lag): the staleness the schedule promises
    assert [m["staleness"] for m in metrics] == [float(min(b, max_lag)) for b in range(6)]
    for stop in (1, 3, 5):
        first = LocalTrainer(items, toy_reward, cfg)
        first.run(stop)
        resumed = LocalTrainer(items, toy_reward, cfg)
        resumed.load_state_dict(first.state_dict())
        resumed.run()
        assert resumed.state.history == straight.state.history
        for name, p in straight.agent.state_dict().items():
            assert torch.equal(p, resumed.agent.state_dict()[name]), (max_lag, stop, name)


def test_checkpoint_round_trip_through_the_file_resumes_exactly(tmp_path):
    items = toy_items(10, seed=5)
    cfg = lag_cfg(1)
    straight = LocalTrainer(items, toy_reward, cfg)
    straight.run()
    first = LocalTrainer(items, toy_reward, cfg)
    first.run(2)
    first.state.save(tmp_path)
    resumed = LocalTrainer(items, toy_reward, cfg)
    resumed.state.load(tmp_path)
    assert resumed.step == 2 and list(resumed.state.recent) == [1]
    resumed.run()
    for name, p in straight.agent.state_dict().items():
        assert torch.equal(p, resumed.agent.state_dict()[name]), name


def test_resume_refuses_another_dataset_and_missing_versions():
    from tspo_ray.training.learner_state import ResumeError

    items = toy_items(10, seed=6)
    trainer = LocalTrainer(items, toy_reward, lag_cfg(1))
    trainer.run(3)
    state = trainer.state_dict()
    with pytest.raises(ResumeError, match="trained on 10 questions"):
        LocalTrainer(items[:8], toy_reward, lag_cfg(1)).load_state_dict(state)
    with pytest.raises(ResumeError, match=r"needs \[0, 1\]"):  # step 3 at max_lag 3 needs versions 0, 1 and 2
        LocalTrainer(items, toy_reward, lag_cfg(3)).load_state_dict(state)
    with pytest.raises(ResumeError, match="schema"):
        LocalTrainer(items, toy_reward, lag_cfg(1)).load_state_dict(state | {"schema": 1})


def test_each_group_is_scored_at_its_own_temperature():
    """Two groups drawn at different τ by the same weights: before any update every importance ratio is exactly 1,
    which holds only when each group's likelihood is recomputed at the τ it was drawn with."""
    from tspo_ray.training.learner import learner_step
    from tspo_ray.training.learner_state import LearnerState
    from tspo_ray.training.rollout import sample_group

    items = toy_items(2, seed=7)
    cfg = lag_cfg(0)
    state = LearnerState(cfg, D, len(items))
    g = torch.Generator().manual_seed(0)
    groups = []
    for it, tau in zip(items, (0.5, 0.05)):
        grp = sample_group(state.agent, it, 4, 4, tau, "plackett_luce", 0, g)
        grp = grp.with_rewards(toy_reward(it, grp.draws))
        grp.rewards = torch.arange(4, dtype=torch.float)  # distinct rewards: no group is filtered out
        groups.append(grp)
    m = learner_step(state.agent, state.optimizer, items, groups, likelihood="plackett_luce", clip_eps=0.2,
                     epochs=1, current_version=0)
    assert m["ratio_mean"] == pytest.approx(1.0, abs=1e-6) and m["ratio_max"] == pytest.approx(1.0, abs=1e-6)
    assert m["clip_fraction"] == 0.0 and m["tau"] == pytest.approx(0.275)


def test_periodic_validation_keeps_the_best_checkpoint_beside_the_newest(tmp_path):
    from tspo_ray.checkpoint import best_checkpoint, latest_checkpoint, load_checkpoint

    items = toy_items(10, seed=8)
    cfg = lag_cfg(1, steps=6, extra=["train.eval_every=2", "train.keep_checkpoints=1", "train.checkpoint_every=1"])
    trainer = LocalTrainer(items, toy_reward, cfg)
    scripted = iter([{"accuracy": a, "family/relation": a / 2} for a in (0.30, 0.50, 0.40)])  # at steps 2, 4, 6
    logged = []
    for _ in range(6):
        trainer.train_step()
        logged.append(trainer.state.checkpoint_after_step(tmp_path, lambda: next(scripted)))
    assert [m.get("val/accuracy") for m in logged] == [None, 0.30, None, 0.50, None, 0.40]
    assert [m.get("val/family/relation") for m in logged if m] == [0.15, 0.25, 0.20]  # per family, over the steps
    assert [m.get("val/new_best") for m in logged if m] == [1.0, 1.0, 0.0]
    assert best_checkpoint(tmp_path).name == "checkpoint-000004.safetensors"
    assert latest_checkpoint(tmp_path).name == "checkpoint-000006.safetensors"
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-000004.safetensors",
                                                                     "checkpoint-000006.safetensors"]
    assert load_checkpoint(best_checkpoint(tmp_path))["best_val"] == 0.50
    resumed = LocalTrainer(items, toy_reward, cfg)
    resumed.state.load(tmp_path)
    assert resumed.state.best_val == 0.50  # a resumed run does not forget the best so far


def test_anchor_sampling_draws_the_anchors_and_learns_where_to_put_them():
    """policy.sampling=anchors: each set is the agent's draw of 2 frames and anchored_set around it (the set the
    anchors inference method builds), the old log-prob is the draw's exact Plackett-Luce likelihood, the reward
    sees the whole set, and training moves the anchors onto the needle that CLIP's cosine does not point to."""
    from tspo_ray.method import sampling, selection_methods
    from tspo_ray.selector import select_positions
    from tspo_ray.training.learner_state import LearnerState
    from tspo_ray.training.rollout import clip_cosines, sample_group

    cfg = load_config(overrides=["policy.num_frames=4", "policy.group_size=8", "train.questions_per_step=8",
                                 "train.steps=40", "grpo.lr=3e-3", "agent.heads=4", "policy.tau_start=0.1",
                                 "policy.tau_end=0.05", "train.max_lag=0", "policy.sampling=anchors",
                                 "policy.anchors=2"])
    items = toy_items(24, seed=0)
    state = LearnerState(cfg, D, len(items))
    grp = sample_group(state.agent, items[0], 8, 4, 0.1, "plackett_luce", 0, torch.Generator().manual_seed(1),
                       anchors=2)
    assert grp.draws.shape == (8, 2) and grp.shown.shape == (8, 4)
    base = clip_cosines(items[0])
    for draw, shown in zip(grp.draws.tolist(), grp.shown.tolist()):
        assert shown == selection_methods.anchored_set(draw, base, 4).tolist() and set(draw) <= set(shown)
    with torch.no_grad():
        logits = state.agent(items[0].frame_features, items[0].text_feature) / 0.1
    assert torch.allclose(grp.logp_old, sampling.plackett_luce_logprob(logits, grp.draws), atol=1e-5)

    seen = []
    def reward(item, frames):
        seen.append(tuple(frames.shape))
        return toy_reward(item, frames)

    def hit_rate(agent):
        hits = 0
        for it in toy_items(16, seed=1):
            pos, _ = select_positions(it.frame_features, it.text_feature, "agent:anchors", 4, agent)
            hits += temporal_reward([it.timestamps_s[p] for p in pos.tolist()], it.record.target_spans) > 0
        return hits / 16

    trainer = LocalTrainer(items, reward, cfg)
    before = hit_rate(trainer.agent)
    trainer.run()
    assert set(seen) == {(8, 4)}
    after = hit_rate(trainer.agent)
    assert after >= before + 0.3, (before, after)


def test_the_update_learns_from_r_a_plus_w_r_t():
    """Sets that answer right and sets that pile into the spans tie under the paper's totals (no signal); the
    update sees the difference once R_T weighs less (grpo.temporal_weight)."""
    from tspo_ray.training.learner_state import LearnerState
    from tspo_ray.training.rollout import sample_group

    items = toy_items(2, seed=3)
    used = {}
    for w in (1.0, 0.0):
        state = LearnerState(lag_cfg(0, extra=[f"grpo.temporal_weight={w}"]), D, len(items))
        g = torch.Generator().manual_seed(0)
        groups = []
        for it in items:
            grp = sample_group(state.agent, it, 4, 4, 0.5, "plackett_luce", 0, g)
            groups.append(dataclasses.replace(grp, rewards=torch.ones(4), r_answer=torch.tensor([1.0, 0.0, 1.0, 0.0]),
                                              r_temporal=torch.tensor([0.0, 1.0, 0.0, 1.0])))
        used[w] = state.update(items, groups)["groups_used"]
    assert used == {1.0: 0.0, 0.0: 2.0}
