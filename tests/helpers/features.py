"""Comparing feature-store entries written by two paths."""
import numpy as np
import torch

from tspo_ray.video.features import FeatureStore


def assert_same_entries(videos, spec, a: FeatureStore, b: FeatureStore) -> None:
    for v in videos:
        key = spec.video_key(v)
        x, y = a.get(key), b.get(key)
        torch.testing.assert_close(x.frame_features, y.frame_features, atol=1e-6, rtol=0)
        assert np.array_equal(x.frame_indices, y.frame_indices) and x.frame_indices.dtype == np.int64
        assert np.array_equal(x.timestamps_s, y.timestamps_s) and x.timestamps_s.dtype == np.float64
        assert x.duration_s == y.duration_s and x.video == y.video == v

