"""MLflow naming and locations: metric names MLflow accepts, artifacts beside a local store."""
from pathlib import Path

import pytest

from tspo_ray.training.tracking import RunLogger, default_artifact_location, metric_name


@pytest.mark.parametrize("name,expected", [
    ("test/clip:top-k+edges/accuracy", "test/clip:top-k-plus-edges/accuracy"),
    ("val/accuracy", "val/accuracy"),
    ("weird{name}", "weird_name_"),
])
def test_metric_names_are_accepted_by_mlflow(name, expected):
    assert metric_name(name) == expected


def test_artifacts_live_beside_a_local_store(tmp_path):
    assert default_artifact_location(f"sqlite:///{tmp_path}/db/mlflow.db") == (tmp_path / "db" / "mlartifacts").as_uri()
    assert default_artifact_location(str(tmp_path / "store")) == (tmp_path / "store" / "mlartifacts").as_uri()
    assert default_artifact_location("http://mlflow.example:5000") is None


def test_a_logged_selector_metric_and_artifact_land_where_the_store_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where ./mlruns would appear
    run = RunLogger.create(f"sqlite:///{tmp_path}/mlflow.db", "exp")
    run.log_metrics({"test/clip:top-k+edges/accuracy": 0.5}, step=1)
    (tmp_path / "note.txt").write_text("x")
    run.log_artifact(tmp_path / "note.txt", "eval")
    run.finish()
    hist = run.client.get_metric_history(run.run_id, "test/clip:top-k-plus-edges/accuracy")
    assert [m.value for m in hist] == [0.5]
    artifacts = list((tmp_path / "mlartifacts").rglob("note.txt"))
    assert len(artifacts) == 1 and not (Path(tmp_path) / "mlruns").exists()
