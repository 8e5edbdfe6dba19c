"""Training on one process: learner state, the learner step, rollouts and their scoring, checkpoints on the
run's schedule, model selection and MLflow tracking. The Ray shells in tspo_ray.distributed wrap these."""
