"""Ray shells around the pure TSPO pieces: feature pipeline, rollout workers, learner, weight versions."""
