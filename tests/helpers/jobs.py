"""Overrides of the main job for the tiny world, shared by the job and fault-tolerance tests."""


def job_overrides(world, clip, out, steps=4, extra=(), store=None):
    enc = f"{{backend: hf, model: {clip}}}"
    return [
        f"data.root={world}", f"features.encoder={enc}", f"features.store={store or out}/features",
        f"answerer.settings={{encoder: {enc}}}", "features.max_candidates=32", "policy.num_frames=4",
        "policy.group_size=4", f"train.steps={steps}", "train.questions_per_step=4", "train.checkpoint_every=1",
        "train.num_answerers=2", "train.answerer_cpus=0.25", f"train.output_dir={out}/run", "agent.heads=4",
        "eval.num_plots=1", f"tracking.tracking_uri=sqlite:///{out}/mlflow.db", *extra,
    ]

