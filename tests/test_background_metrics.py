"""The Ray learner's metrics writer: off the caller's thread, in order, stamped when given, flushed on demand."""
import threading
import time

import pytest

from tspo_ray.training.tracking import BackgroundMetrics


class SlowLogger:
    def __init__(self, delay_s: float = 0.0, fail_at: int | None = None):
        self.rows, self.delay_s, self.fail_at = [], delay_s, fail_at
        self.gate = threading.Event()
        self.gate.set()

    def log_metrics(self, metrics, step, timestamp_ms=None):
        self.gate.wait()
        time.sleep(self.delay_s)
        if step == self.fail_at:
            raise OSError("database is locked")
        self.rows.append((step, dict(metrics), timestamp_ms))


def test_rows_are_written_in_order_with_the_time_they_were_given():
    logger = SlowLogger()
    logger.gate.clear()  # the writer is held: nothing reaches the store until released
    out = BackgroundMetrics(logger)
    given = []
    for step in range(5):
        given.append(int(time.time() * 1000))
        out.log_metrics({"reward": float(step)}, step)
        time.sleep(0.01)
    assert logger.rows == []
    logger.gate.set()
    out.flush()
    assert [r[0] for r in logger.rows] == list(range(5))
    assert [r[1]["reward"] for r in logger.rows] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert all(abs(r[2] - t) <= 5 for r, t in zip(logger.rows, given))
    out.close()


def test_the_caller_does_not_wait_for_the_store_but_flush_does():
    logger = SlowLogger(delay_s=0.05)
    out = BackgroundMetrics(logger)
    t0 = time.perf_counter()
    for step in range(6):
        out.log_metrics({"x": 1.0}, step)
    assert time.perf_counter() - t0 < 0.05
    out.flush()
    assert len(logger.rows) == 6 and time.perf_counter() - t0 >= 0.25
    out.close()


def test_the_metrics_given_are_copied():
    logger = SlowLogger()
    logger.gate.clear()
    out = BackgroundMetrics(logger)
    metrics = {"a": 1.0}
    out.log_metrics(metrics, 0)
    metrics["a"] = 2.0
    logger.gate.set()
    out.close()
    assert logger.rows[0][1] == {"a": 1.0}


def test_a_failed_write_is_raised_by_the_next_call():
    out = BackgroundMetrics(SlowLogger(fail_at=1))
    out.log_metrics({"x": 1.0}, 0)
    out.log_metrics({"x": 1.0}, 1)
    with pytest.raises(RuntimeError, match="writing metrics to MLflow failed: database is locked"):
        out.flush()
    with pytest.raises(RuntimeError, match="database is locked"):
        out.log_metrics({"x": 1.0}, 2)
