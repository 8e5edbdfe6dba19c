"""Batched selection in the keyframe service, in one process (no Ray): one agent forward pass per batch with the
selections of one-at-a-time selection, and the service's decode path giving the feature store's features."""
from __future__ import annotations

import pytest
import torch

from tspo_ray.data.items import FeatureItem
from tspo_ray.data.records import QARecord
from tspo_ray.evaluation.accuracy import select_frames
from tspo_ray.selector import SelectionJob, select_many
from tspo_ray.serve.service import KeyframeService, ServeSettings
from tspo_ray.video.features import StoreSpec, compute_video_features


@pytest.fixture(scope="module")
def service(tiny_world):
    torch.manual_seed(4)
    return KeyframeService(ServeSettings(video_roots=[str(tiny_world)], seed=4))


@pytest.fixture(scope="module")
def videos(tiny_world):
    return [str(p) for p in sorted(tiny_world.rglob("*.mp4"))[:3]]


def test_service_features_equal_the_feature_store(service, videos):
    """Probed once, decoded with one codec thread outside the torch slots: still compute_video_features' output."""
    for path, cap in zip(videos, (128, 40, None)):
        got, hit, _ = service.video_features(path, 1.0, cap)
        want = compute_video_features(path, service.encoder, StoreSpec(1.0, cap, 64, service.encoder.name))
        assert not hit and torch.equal(got.frame_features, want.frame_features.half())
        assert got.frame_indices.tolist() == want.frame_indices.tolist()
        assert got.timestamps_s.tolist() == want.timestamps_s.tolist() and got.duration_s == want.duration_s


def test_a_batch_of_mixed_lengths_selects_as_one_at_a_time_in_one_forward(service, videos):
    questions = ["When does the red star appear?", "What colour is the square?", "Where is the blue circle?"]
    jobs, items = [], []
    for i, (cap, method, k) in enumerate([(128, "agent", 8), (40, "agent:bin-max", 5), (17, "agent", 8),
                                          (None, "agent:top-k+edges", 6), (40, "clip-top-k", 4), (23, "uniform", 3),
                                          (128, "agent:aks", 8)]):
        path, question = videos[i % len(videos)], questions[i % len(questions)]
        feats, _, _ = service.video_features(path, 1.0, cap)
        text = service.text_feature(question)
        jobs.append(service.make_job(path, feats, text, method, k))
        record = QARecord(id=path, video=path, question=question, options=["", ""], answer="A",
                          duration_s=feats.duration_s)
        items.append((FeatureItem(record, feats.frame_features.float(), text, feats.frame_indices,
                                  feats.timestamps_s, path), method, k))
    assert len({len(j.frame_indices) for j in jobs}) >= 4  # mixed T
    forwards = []
    hook = service.agent.register_forward_hook(lambda m, inputs, out: forwards.append(out.shape[0]))
    try:
        batched = service.select_many(jobs)
    finally:
        hook.remove()
    agent_jobs = [j for j in jobs if j.method.startswith("agent")]
    assert forwards == [sum(len(j.frame_indices) for j in agent_jobs)]  # one packed pass for the whole batch
    for got, (item, method, k) in zip(batched, items):
        want = select_frames(item, method, k, service.agent, service.inference_mode)
        assert got["frame_indices"] == want["frame_indices"] and got["positions"] == want["positions"], method
        assert got["timestamps_s"] == want["timestamps_s"]
        if want["scores"] is None:
            assert got["scores"] is None
        else:
            assert got["scores"] == pytest.approx(want["scores"], abs=1e-5)


def test_select_many_refuses_agent_methods_without_an_agent_and_bad_names():
    job = SelectionJob(torch.randn(10, 8), torch.randn(8), list(range(10)), [float(i) for i in range(10)], 3)
    with pytest.raises(ValueError, match="needs agent weights"):
        select_many([job])
    with pytest.raises(ValueError, match="unknown selector"):
        select_many([SelectionJob(job.frame_features, job.text_feature, job.frame_indices, job.timestamps_s, 3,
                                  "best")])
    assert len(select_many([SelectionJob(job.frame_features, job.text_feature, job.frame_indices, job.timestamps_s,
                                         3, "clip-top-k")])[0]["positions"]) == 3
