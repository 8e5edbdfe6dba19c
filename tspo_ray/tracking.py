"""MLflow tracking: one run per job, created by the driver; workers attach to it by run id."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any


def default_tracking_uri() -> str:
    """A local SQLite store (./mlflow.db, artifacts in ./mlruns) unless MLFLOW_TRACKING_URI is set."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


class RunLogger:
    """Thin wrapper over MlflowClient for one run (no global active-run state, safe inside Ray workers)."""

    def __init__(self, client, run_id: str, tracking_uri: str):
        self.client, self.run_id, self.tracking_uri = client, run_id, tracking_uri

    @classmethod
    def create(cls, tracking_uri: str | None, experiment: str, run_name: str | None = None,
               params: dict[str, Any] | None = None, tags: dict[str, str] | None = None) -> "RunLogger":
        from mlflow.tracking import MlflowClient

        uri = tracking_uri or default_tracking_uri()
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
        run = client.create_run(exp_id, run_name=run_name, tags=tags or {})
        logger = cls(client, run.info.run_id, uri)
        if params:
            logger.log_params(params)
        return logger

    @classmethod
    def attach(cls, tracking_uri: str, run_id: str) -> "RunLogger":
        from mlflow.tracking import MlflowClient

        return cls(MlflowClient(tracking_uri), run_id, tracking_uri)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(k, float(v), now, step) for k, v in metrics.items()
                if isinstance(v, (int, float)) and math.isfinite(float(v))]
        self.client.log_batch(self.run_id, metrics=rows)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)

    def log_model(self, agent, checkpoint_dir: str | Path) -> None:
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
        latest = latest_checkpoint(checkpoint_dir)
        if latest is not None:
            self.log_artifact(latest, "checkpoint")
