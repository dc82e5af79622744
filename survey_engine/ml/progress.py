"""Boosting rounds on the driver's progress bar: an XGBoost callback that runs on the workers.

xgboost.dask trains inside one task per worker; the callback below travels with it and, on the
rank-0 worker only (every worker runs the same rounds), reports finished rounds to the bar that
``runtime.event_progress`` shows on the driver, at most a few times a second.
"""

from __future__ import annotations

import time

from xgboost import collective
from xgboost.callback import TrainingCallback

from survey_engine.runtime import report_progress


class RoundProgress(TrainingCallback):
    """Report boosting rounds to the driver's bar named by ``topic`` (None: report nothing)."""

    def __init__(self, topic: str | None, interval_s: float = 0.25):
        super().__init__()
        self.topic, self.interval_s = topic, interval_s
        self._pending, self._last = 0, 0.0

    def _reporter(self) -> bool:
        return self.topic is not None and collective.get_rank() == 0

    def after_iteration(self, model, epoch: int, evals_log) -> bool:
        if self._reporter():
            self._pending += 1
            now = time.monotonic()
            if now - self._last >= self.interval_s:
                report_progress(self.topic, self._pending)
                self._pending, self._last = 0, now
        return False  # never stop training

    def after_training(self, model):
        if self._reporter() and self._pending:
            report_progress(self.topic, self._pending)
            self._pending = 0
        return model
