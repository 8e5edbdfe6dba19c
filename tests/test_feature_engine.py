"""Who extracts a job's features (features.engine): the rule as a pure function, and the job's one log line."""
import pytest

from tspo_ray.config import ConfigError, load_config
from tspo_ray.distributed import feature_pipeline
from tspo_ray.distributed.feature_pipeline import choose_engine, engine_line
from tspo_ray.evaluation.benchmark_job import pipeline_of
from tspo_ray.video.encoders import load_encoder
from tspo_ray.video.features import FeatureStore


@pytest.mark.parametrize("cpus,videos,expected", [
    (2, 193, "local"), (2, 10_000, "local"), (4, 999, "local"), (3, 5_000, "local"),
    (4, 1000, "ray"), (64, 1000, "ray"), (64, 999, "local"),
])
def test_auto_takes_ray_data_from_the_declared_cpus_and_videos(cpus, videos, expected):
    engine, why = choose_engine("auto", videos, cpus, placed=False, min_cpus=4, min_videos=1000)
    assert engine == expected
    assert "from 4 CPUs and 1000 videos" in why


def test_the_thresholds_are_the_settings_not_constants():
    assert choose_engine("auto", 20, 2, placed=False, min_cpus=2, min_videos=20)[0] == "ray"
    assert choose_engine("auto", 19, 2, placed=False, min_cpus=2, min_videos=20)[0] == "local"
    assert choose_engine("auto", 20, 1, placed=False, min_cpus=2, min_videos=20)[0] == "local"


def test_placed_encoders_and_a_set_engine_are_obeyed():
    assert choose_engine("auto", 3, 1, placed=True, min_cpus=4, min_videos=1000)[0] == "ray"
    assert choose_engine("ray", 3, 1, placed=False, min_cpus=4, min_videos=1000) == ("ray", "features.engine=ray")
    assert choose_engine("local", 10**6, 512, placed=True, min_cpus=4, min_videos=1) == ("local",
                                                                                       "features.engine=local")


@pytest.mark.parametrize("args,message", [(("fast", 1, 1), "auto, ray or local"), (("auto", -1, 1), ">= 0"),
                                           (("auto", 1, -2), ">= 0")])
def test_bad_input_is_refused_with_the_reason(args, message):
    with pytest.raises(ValueError, match=message):
        choose_engine(*args, placed=False, min_cpus=4, min_videos=1000)


def test_a_bad_engine_in_the_config_names_the_field():
    with pytest.raises(ConfigError, match="features.engine"):
        load_config(None, ["features.engine=spark"])


def test_the_log_line_says_which_path_and_why():
    engine, why = choose_engine("auto", 193, 2, placed=False, min_cpus=4, min_videos=1000)
    line = engine_line(engine, why, 193, 2)
    assert line.startswith("features: 193 videos on 2 CPUs: one-process path (")
    assert "Ray Data pays off from 4 CPUs and 1000 videos" in line and "features.engine=ray forces it" in line
    assert engine_line("ray", "features.engine=ray", 5, 8.0) == "features: 5 videos on 8 CPUs: Ray Data (features.engine=ray)"


def test_the_job_extractor_encodes_in_process_below_the_threshold_and_logs_one_line(tiny_world, tmp_path,
                                                                                      monkeypatch):
    """On a 2-CPU Ray (Ray itself stubbed out: the fast tier starts none) auto writes the entries with the
    one-process loop and says so once; nothing to encode, nothing said."""
    import tspo_ray.distributed as distributed

    monkeypatch.setattr(distributed, "init_ray", lambda *a, **k: None)
    monkeypatch.setattr(feature_pipeline, "available_cpus", lambda: 2.0)
    monkeypatch.setattr(feature_pipeline, "extract_with_ray", lambda *a, **k: pytest.fail("Ray Data was used"))
    cfg = load_config(None, [f"features.store={tmp_path / 'store'}"])
    videos = sorted(str(p) for p in (tiny_world / "videos").glob("*.mp4"))[:2]
    encoder = load_encoder(cfg.features.encoder)
    spec, store = cfg.features.store_spec(encoder.name), FeatureStore(cfg.features.store)
    lines = []
    extract = feature_pipeline.ray_extractor(cfg, progress=False, log=lines.append, encoder=encoder)
    assert extract(videos, spec, store)["encoded"] == 2 and extract.engine == "local"
    assert pipeline_of(extract) == "local" and pipeline_of(None) == "local"  # what a benchmark job's summary says
    assert pipeline_of(lambda videos, spec, store: {}) == "ray"  # an extractor that records no choice
    assert all(store.has(spec.video_key(v)) for v in videos)
    assert lines == [engine_line("local", choose_engine("auto", 2, 2, False, 4, 1000)[1], 2, 2)]
    assert extract(videos, spec, store)["cached"] == 2 and len(lines) == 1
