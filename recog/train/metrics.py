"""Metrics to a JSON-lines file and to TensorBoard (process 0 only), and a progress line."""

import json
import time
from pathlib import Path

import jax
import tensorflow as tf
from absl import logging


class MetricWriter:
    """Appends `{"step": s, ...}` lines to `path` and scalars to TensorBoard in `tb_dir`."""

    def __init__(self, path: str | Path, tb_dir: str | Path):
        self.enabled = jax.process_index() == 0
        if not self.enabled:
            return
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a")
        self._tb = tf.summary.create_file_writer(str(tb_dir))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps({"step": int(step), **metrics}) + "\n")
        self._file.flush()
        with self._tb.as_default(step=int(step)):
            for name, value in metrics.items():
                if isinstance(value, int | float):
                    tf.summary.scalar(name, value)
        self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._tb.close()


class Progress:
    """Logs `step 120/400 (30%) | loss 0.213 | accuracy 0.94 | 5,230 img/s | ETA 0:00:21`."""

    def __init__(self, first_step: int, num_steps: int, global_batch_size: int):
        self.num_steps = num_steps
        self.batch = global_batch_size
        self._last_step = first_step
        self._last_time = time.perf_counter()

    def update(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        """Logs one line; returns the throughput figures to record beside the metrics."""
        now = time.perf_counter()
        seconds = max(now - self._last_time, 1e-9)
        steps_per_sec = (step - self._last_step) / seconds
        self._last_step, self._last_time = step, now
        eta = (self.num_steps - step) / steps_per_sec if steps_per_sec else 0.0
        shown = " | ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        logging.info(
            "step %d/%d (%d%%) | %s | %s img/s | ETA %s",
            step,
            self.num_steps,
            100 * step // self.num_steps,
            shown,
            f"{steps_per_sec * self.batch:,.0f}",
            time.strftime("%H:%M:%S", time.gmtime(eta)),
        )
        return {"steps_per_sec": steps_per_sec, "images_per_sec": steps_per_sec * self.batch}
