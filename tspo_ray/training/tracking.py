"""MLflow tracking: one run per job, created by the driver; workers attach to it by run id."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

RUN_FILE = "mlflow_run.json"  # in a run's output folder: the MLflow run a resumed job continues


def default_tracking_uri() -> str:
    """A local SQLite store (./mlflow.db) unless MLFLOW_TRACKING_URI is set."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


def default_artifact_location(tracking_uri: str) -> str | None:
    """Artifacts beside a local store (its folder's mlartifacts/), not in whatever ./mlruns the job started in; a
    tracking server keeps its own default (None)."""
    for scheme in ("sqlite:///", "file://"):
        if tracking_uri.startswith(scheme):
            local = Path(tracking_uri[len(scheme):])
            folder = local.parent if scheme == "sqlite:///" else local
            return (folder.resolve() / "mlartifacts").as_uri()
    if "://" not in tracking_uri:  # a bare path is a file store
        return (Path(tracking_uri).resolve() / "mlartifacts").as_uri()
    return None


def metric_name(name: str) -> str:
    """A name MLflow accepts (alphanumerics, _ - . space : /): selector names such as clip:top-k+edges keep
    their meaning as clip:top-k-plus-edges."""
    import re

    return re.sub(r"[^\w\-. :/]", "_", name.replace("+", "-plus-"))


def open_job_run(tracking, output_dir: str | Path, params: dict[str, Any], tags: dict[str, str],
                 resume: bool) -> "RunLogger":
    """The MLflow run of a training job: with `resume`, the run its output folder names (set RUNNING again), so a
    resumed job continues one run; else a new run, remembered in the folder. `tracking` is a TrackingConfig."""
    import json

    uri = tracking.tracking_uri or default_tracking_uri()
    pointer = Path(output_dir) / RUN_FILE
    if resume and pointer.exists():
        try:
            saved = json.loads(pointer.read_text())
        except ValueError:
            saved = {}
        if saved.get("tracking_uri") == uri and isinstance(saved.get("run_id"), str):
            found = RunLogger.resume(uri, saved["run_id"])
            if found is not None:
                return found
    run = RunLogger.create(uri, tracking.experiment, tracking.run_name, params=params, tags=tags,
                           artifact_location=tracking.artifact_location)
    run.remember(output_dir)
    return run


class RunLogger:
    """Thin wrapper over MlflowClient for one run (no global active-run state, safe inside Ray workers)."""

    def __init__(self, client, run_id: str, tracking_uri: str):
        self.client, self.run_id, self.tracking_uri = client, run_id, tracking_uri

    @classmethod
    def create(cls, tracking_uri: str | None, experiment: str, run_name: str | None = None,
               params: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
               artifact_location: str | None = None) -> "RunLogger":
        from mlflow.tracking import MlflowClient

        uri = tracking_uri or default_tracking_uri()
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(
            experiment, artifact_location=artifact_location or default_artifact_location(uri))
        run = client.create_run(exp_id, run_name=run_name, tags=tags or {})
        logger = cls(client, run.info.run_id, uri)
        if params:
            logger.log_params(params)
        return logger

    @classmethod
    def resume(cls, tracking_uri: str | None, run_id: str) -> "RunLogger | None":
        """The run a resumed job continues, set RUNNING again; None when this store does not know it."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = tracking_uri or default_tracking_uri()
        client = MlflowClient(uri)
        try:
            client.get_run(run_id)
        except MlflowException:
            return None
        client.update_run(run_id, status="RUNNING")
        client.set_tag(run_id, "resumed", "true")
        return cls(client, run_id, uri)

    def remember(self, output_dir: str | Path) -> None:
        """Write the run's id into the job's output folder, so `--resume` continues this run."""
        import json

        from tspo_ray.safe_files import write_text_atomic

        write_text_atomic(Path(output_dir) / RUN_FILE, json.dumps({"run_id": self.run_id,
                                                                   "tracking_uri": self.tracking_uri}))

    @classmethod
    def attach(cls, tracking_uri: str, run_id: str) -> "RunLogger":
        from mlflow.tracking import MlflowClient

        return cls(MlflowClient(tracking_uri), run_id, tracking_uri)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(metric_name(k), float(v), now, step) for k, v in metrics.items()
                if isinstance(v, (int, float)) and math.isfinite(float(v))]
        self.client.log_batch(self.run_id, metrics=rows)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)

    def log_model(self, agent, checkpoint_dir: str | Path) -> None:  # a run folder, or one checkpoint
        """The trained agent as artifacts under agent/: its weights as safetensors and its config as JSON (never a
        pickle: `TemporalAgent(**json) + load_state_dict(safetensors)` rebuilds it), plus the checkpoint it came from."""
        import json
        import tempfile

        from tspo_ray.checkpoint import latest_checkpoint
        from tspo_ray.safe_files import write_tensors_atomic

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "agent"
            write_tensors_atomic(folder / "agent.safetensors", agent.state_dict(),
                                 {"agent_config": json.dumps(agent.config())})
            (folder / "agent_config.json").write_text(json.dumps(agent.config(), indent=2) + "\n")
            self.log_artifacts(folder, "agent")
        source = Path(checkpoint_dir)
        source = source if source.is_file() else latest_checkpoint(source)  # a chosen file, or a run's newest
        if source is not None:
            self.log_artifact(source, "checkpoint")
