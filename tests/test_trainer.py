"""The local TSPO loop on a tiny problem where the right frames are known: the expected reward must rise."""
import numpy as np
import pytest
import torch

from tspo_ray.config import load_config
from tspo_ray.data.cursor import DataCursor
from tspo_ray.data.records import QARecord
from tspo_ray.rewards import temporal_reward
from tspo_ray.rollout import FeatureItem, RewardResult
from tspo_ray.trainer import LocalTrainer, expected_reward

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
                                 "policy.tau_end=0.05"])
    logged = []
    trainer = LocalTrainer(items, toy_reward, cfg, log_fn=lambda step, m: logged.append((step, m)))
    held_out = toy_items(16, seed=1)
    before = expected_reward(trainer.agent, held_out, toy_reward, 4, tau=0.05)
    trainer.run()
    after = expected_reward(trainer.agent, held_out, toy_reward, 4, tau=0.05)
    assert [s for s, _ in logged] == list(range(1, 41))
    assert {"reward", "clip_fraction", "approx_kl", "entropy", "tau", "zero_variance_fraction"} <= set(logged[-1][1])
    assert after > before + 0.5, (before, after)


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
    assert resumed.cursor.state_dict() == straight.cursor.state_dict()
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
    from tspo_ray.learner import batch_to_device
    from tspo_ray.rollout import Group

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
