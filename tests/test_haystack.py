"""Needle-in-a-haystack at the feature level: R_T by hand, the chunking rules of the reference, determinism, and the
ScoreJob a haystack item gives the answerer pool. Hand-made FeatureItems whose features encode (item, candidate),
so every haystack candidate can be traced back to where it came from."""
import numpy as np
import pytest
import torch

from tspo_ray.data import haystack
from tspo_ray.data.items import FeatureItem
from tspo_ray.data.records import QARecord
from tspo_ray.training import scoring
from tspo_ray.training.rollout import selected_frames
from tspo_ray.training.scoring import ScoreJob, score_answers


def make_item(n: int, key: int, video: str | None = None, family: str = "needle_attribute", meta=None) -> FeatureItem:
    """n candidates at native indices 2*j (timestamps j s); feature row = [key, j, 1, 0]."""
    rec = QARecord(f"q{key}", f"v{key}.mp4", "What colour is the star?", ["red", "blue"], "A", type="needle",
                   target_spans=[[0.0, 1.0]], meta={"family": family, **(meta or {})})
    feats = torch.tensor([[float(key), float(j), 1.0, 0.0] for j in range(n)])
    return FeatureItem(rec, feats, torch.tensor([0.0, 0.0, 1.0, 0.0]), np.arange(n) * 2,
                       np.arange(n, dtype=np.float64), video or f"/videos/v{key}.mp4")


@pytest.fixture()
def pool():
    return [make_item(128, k) for k in range(6)] + [make_item(30, 6), make_item(90, 7)]


def test_temporal_mask_reward_by_hand():
    mask = np.array([True, True, False, False, True])
    assert haystack.temporal_mask_reward(mask, [0, 2, 3]) == pytest.approx(1 / 3)
    assert haystack.temporal_mask_reward(mask, [0, 4]) == 1.0
    assert haystack.temporal_mask_reward(mask, [2, 3]) == 0.0
    assert haystack.temporal_mask_reward(mask, []) == 0.0


def test_chunk_rules():
    assert haystack.spread_chunk(30, 50).tolist() == list(range(30))
    assert haystack.spread_chunk(5, 3).tolist() == [0, 2, 4]
    s = haystack.spread_chunk(128, 50)
    assert len(s) == 50 and s[0] == 0 and s[-1] == 127 and np.all(np.diff(s) > 0)
    counts = set()
    for seed in range(40):
        chunks = haystack.target_chunks(128, np.random.default_rng(seed), 50, 4)
        counts.add(len(chunks))
        for c in chunks:
            assert len(c) == 50 and np.all(np.diff(c) > 0) and c.min() >= 0 and c.max() < 128
    assert counts == {1, 2, 3, 4}
    short = haystack.target_chunks(40, np.random.default_rng(0), 50, 4)
    assert all(c.tolist() == list(range(40)) for c in short)


def test_haystack_is_traceable_to_its_sources(pool):
    full = [it for it in pool if len(it.frame_indices) >= 50]
    target = full[0]
    same_video = make_item(128, 9, video=target.video_path)  # another question on the target's video
    for seed in range(12):
        h = haystack.build_haystack(target, full + [same_video], np.random.default_rng(seed))
        key, pos = h.frame_features[:, 0].long().numpy(), h.frame_features[:, 1].long().numpy()
        n_target = int(h.target_mask.sum())
        assert n_target in (50, 100, 150, 200) and len(h.frame_indices) == n_target + 12 * 50
        assert np.array_equal(h.target_mask, key == 0)  # the mask marks exactly the target's candidates
        assert 9 not in key  # never a chunk of the target's own video from another record
        assert np.array_equal(h.frame_indices, pos * 2) and np.array_equal(h.timestamps_s, pos.astype(float))
        assert h.frame_videos == tuple(f"/videos/v{k}.mp4" for k in key)
        assert h.record is target.record and torch.equal(h.text_feature, target.text_feature)
        for c in range(len(key) // 50):  # whole 50-candidate chunks, each from one item, in order within it
            ck, cp = key[c * 50:(c + 1) * 50], pos[c * 50:(c + 1) * 50]
            assert len(set(ck)) == 1 and np.all(np.diff(cp) > 0)
            if ck[0] != 0:
                size = next(len(it.frame_indices) for it in full if it.key == f"q{ck[0]}")
                assert np.array_equal(cp, haystack.spread_chunk(size, 50))


def test_short_videos_give_short_chunks(pool):
    short = [make_item(30, k) for k in range(3)]
    h = haystack.build_haystack(short[0], short, np.random.default_rng(1), other_chunks=5)
    assert len(h.frame_indices) == int(h.target_mask.sum()) + 5 * 30
    assert int(h.target_mask.sum()) % 30 == 0
    wide = make_item(128, 50)
    wide.frame_features = torch.zeros(128, 8)
    with pytest.raises(ValueError, match="feature dim"):
        haystack.build_haystack(short[0], [wide], np.random.default_rng(0))


def test_chunks_are_shuffled_and_deterministic(pool):
    firsts = set()
    for seed in range(30):
        a = haystack.build_haystack(pool[1], pool, np.random.default_rng(seed))
        b = haystack.build_haystack(pool[1], pool, np.random.default_rng(seed))
        assert torch.equal(a.frame_features, b.frame_features) and np.array_equal(a.target_mask, b.target_mask)
        firsts.add(bool(a.target_mask[0]))
    assert firsts == {True, False}  # the target's chunks are not always first


def test_haystack_items_probability_eligibility_and_seed(pool):
    counting = make_item(128, 20, family="counting")
    tspo_specific = make_item(128, 21, family="specific", meta={"needle_source": True})
    batch = pool[:4] + [counting, tspo_specific]
    none = haystack.haystack_items(batch, pool, seed=1, probability=0.0)
    assert all(a is b for a, b in zip(none, batch))
    every = haystack.haystack_items(batch, pool, seed=1, probability=1.0)
    assert [it.target_mask is not None for it in every] == [True] * 4 + [False, True]
    assert every[4] is counting
    again = haystack.haystack_items(batch, pool, seed=1, probability=1.0)
    assert all(torch.equal(a.frame_features, b.frame_features) for a, b in zip(every, again))
    other = haystack.haystack_items(batch, pool, seed=2, probability=1.0)
    assert any(len(a.frame_indices) != len(b.frame_indices) or not torch.equal(a.frame_features, b.frame_features)
               for a, b in zip(every[:4], other[:4]))
    assert haystack.haystack_items(every, pool, seed=5, probability=1.0)[0] is every[0]  # no haystack in a haystack
    many = [make_item(60, k) for k in range(100, 300)]
    share = np.mean([it.target_mask is not None for it in haystack.haystack_items(many, pool, 3, 0.5)])
    assert 0.35 < share < 0.65
    with pytest.raises(ValueError, match="no item from another video"):
        haystack.haystack_items([pool[0]], [pool[0]], seed=0, probability=1.0)
    with pytest.raises(ValueError, match="probability"):
        haystack.haystack_items(batch, pool, seed=0, probability=1.5)


def test_is_needle_question():
    rec = make_item(4, 0).record
    assert haystack.is_needle_question(rec)
    assert not haystack.is_needle_question(rec, families=("relation",))
    tspo = QARecord("t", "v.mp4", "Q?", ["a", "b"], "A", meta={"tspo_type": "specific", "family": "specific"})
    assert haystack.is_needle_question(tspo, families=())
    general = QARecord("g", "v.mp4", "Q?", ["a", "b"], "A", meta={"tspo_type": "general", "family": "general"})
    assert not haystack.is_needle_question(general)


def test_score_job_of_a_haystack_item(pool):
    h = haystack.build_haystack(pool[2], pool, np.random.default_rng(4))
    inside, outside = np.flatnonzero(h.target_mask), np.flatnonzero(~h.target_mask)
    draws = torch.tensor([[int(outside[3]), int(inside[5]), int(inside[0])],  # draw order is not temporal order
                          [int(outside[0]), int(outside[1]), int(outside[2])]])
    job = scoring.score_job(h, draws)
    assert job.r_temporal == pytest.approx((2 / 3, 0.0))
    assert job.duration_s == len(h.frame_indices) * haystack.CLIP_SPACING_S
    req = job.requests()[0]
    first = sorted(draws[0].tolist())
    assert req.frame_indices == tuple(int(h.frame_indices[p]) for p in first)
    assert req.frame_videos == tuple(h.frame_videos[p] for p in first)
    assert req.timestamps_s == tuple(float(p) for p in first)  # the clip's own times, in order
    # rewards: a needle item's R_A + R_T with R_T from the mask
    result = score_answers(job, ["A", "B"])
    assert result.r_answer.tolist() == [1.0, 0.0]
    assert result.rewards.tolist() == pytest.approx([1 + 2 / 3, 0.0])


def test_score_job_of_a_plain_item_is_the_coordinators(pool):
    item = pool[3]
    draws = torch.tensor([[5, 1, 9], [2, 3, 4]])
    job = scoring.score_job(item, draws)
    sets = tuple((tuple(i), tuple(t)) for i, t in selected_frames(item, draws))
    assert job == ScoreJob(item.record, item.video_path, sets)
    assert [r.frame_videos for r in job.requests()] == [None, None]
    # a needle record's R_T from its spans ([0, 1] s: candidates 0 and 1), total R_A + R_T
    result = score_answers(job, ["A", "A"])
    assert result.r_temporal.tolist() == pytest.approx([1 / 3, 0.0])


def test_haystack_request_keys_name_the_files(pool):
    """Two sets with the same native indices from other files are other frames: their keys differ."""
    for seed in range(50):
        h = haystack.build_haystack(pool[0], pool, np.random.default_rng(seed))
        mine, theirs = np.flatnonzero(h.target_mask), np.flatnonzero(~h.target_mask)
        pairs = [(a, b) for a in mine for b in theirs if h.frame_indices[a] == h.frame_indices[b]]
        if pairs:
            break
    a, b = pairs[0]
    job = scoring.score_job(h, torch.tensor([[int(a)], [int(b)]]))
    first, second = job.requests()
    assert first.frame_indices == second.frame_indices and first.frame_videos != second.frame_videos
    assert first.key.split(":")[1] != second.key.split(":")[1] and first.key.startswith("q0#0:")


def test_haystack_config_is_checked():
    from tspo_ray.config import ConfigError, load_config

    cfg = load_config(overrides=["haystack.probability=1", "haystack.num_frames=16"])
    assert haystack.options(cfg.haystack) == {"probability": 1.0, "families": ("needle_attribute",),
                                              "chunk_frames": 50, "max_target_chunks": 4, "other_chunks": 12}
    item = make_item(4, 0)
    assert haystack.num_frames(item, 8, 16) == 8
    item.target_mask = np.ones(4, dtype=bool)
    assert haystack.num_frames(item, 8, 16) == 16 and haystack.num_frames(item, 8, None) == 8
    for override, field in (("haystack.probability=1.5", "haystack.probability"),
                            ("haystack.chunk_frames=0", "haystack.chunk_frames"),
                            ("haystack.other_chunks=0", "haystack.other_chunks")):
        with pytest.raises(ConfigError, match=field):
            load_config(overrides=[override])
    with pytest.raises(ConfigError, match="plackett_luce"):
        load_config(overrides=["haystack.num_frames=16", "policy.likelihood=per_frame"])
