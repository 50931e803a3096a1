"""Metrics to a JSON-lines file and to TensorBoard (process 0 only), and a progress line."""

import json
import os
import time

import jax
import tensorflow as tf
from absl import logging
from etils import epath


class MetricWriter:
    """Adds `{"step": s, "wall_time": unix seconds, ...}` lines to `path` and scalars to
    TensorBoard in `tb_dir`.

    A local file is appended to and flushed line by line. Object stores (gs://) cannot append, so
    there the whole file is rewritten, atomically, at each write: writes are a few per minute.

    A training run that starts (or resumes) at `first_step` trains the steps after it again, so
    the lines an earlier run wrote after that step move to `metrics.superseded.jsonl` beside it.
    """

    def __init__(self, path: epath.Path, tb_dir: epath.Path, first_step: int | None = None):
        self.enabled = jax.process_index() == 0
        if not self.enabled:
            return
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if first_step is not None and path.exists():
            set_aside_lines_after(path, first_step)
        self._local = "://" not in os.fspath(path)
        if self._local:
            self._file = open(path, "a")  # noqa: SIM115  (kept open for the run)
        else:
            self._lines = path.read_text().splitlines(keepends=True) if path.exists() else []
        self._tb = tf.summary.create_file_writer(os.fspath(tb_dir))

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        line = json.dumps({"step": int(step), "wall_time": time.time(), **metrics}) + "\n"
        if self._local:
            self._file.write(line)
            self._file.flush()
        else:
            self._lines.append(line)
            tmp = self.path.parent / (self.path.name + ".tmp")
            tmp.write_text("".join(self._lines))
            tmp.replace(self.path)
        with self._tb.as_default(step=int(step)):
            for name, value in metrics.items():
                if isinstance(value, int | float):
                    tf.summary.scalar(name, value)
        self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            if self._local:
                self._file.close()
            self._tb.close()


def set_aside_lines_after(path: epath.Path, step: int) -> None:
    """Moves the lines of `path` that are past `step` (or unreadable, as a line cut short by a
    crash) to `<name>.superseded.jsonl`: appended there first, then `path` replaced atomically,
    so that no line is ever in neither file."""
    kept, superseded = [], []
    for line in path.read_text().splitlines(keepends=True):
        try:
            current = json.loads(line)["step"] <= step
        except (ValueError, KeyError, TypeError):
            current = False
        (kept if current else superseded).append(line if line.endswith("\n") else line + "\n")
    if not superseded:
        return
    aside = path.parent / path.name.replace(".jsonl", ".superseded.jsonl")
    earlier = aside.read_text() if aside.exists() else ""
    tmp = path.parent / (path.name + ".tmp")
    tmp.write_text(earlier + "".join(superseded))
    tmp.replace(aside)
    tmp.write_text("".join(kept))
    tmp.replace(path)
    logging.warning(
        "Moved %d metric line(s) past step %d, from a run that stopped before its next "
        "checkpoint, to %s: this run trains those steps again.",
        len(superseded),
        step,
        aside,
    )


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
