"""Can the host feed the accelerators? The training input pipeline measured alone, then beside the
train step, for one experiment, in one run.

    python benchmarks/input_pipeline.py --experiment=cats_resnet \
        --config.data.dir=../shared/data/cats_dogs

It prints, for the experiment's training pipeline (`config.data.train_pipeline`, from the stored
JPEGs: uncached unless the experiment caches):

- images/sec of the pipeline alone, and per host core (the cores this process may run on);
- its host memory: the largest resident-set growth while it runs, sampled every 20 ms;
- the time to the first batch when a run starts at step 0, and when it resumes in the middle of
  an epoch (`start_step` = half an epoch);
- the train step's images/sec on this machine's devices (with `--step_batches` steps; at the
  experiment's batch size unless --config.batch_size says otherwise), and the pipeline/step
  ratio: above 1, the devices never wait for data.
"""

import itertools
import os
import threading
import time

import jax
import numpy as np
from absl import flags

from recog import cli, data, experiments, parallel, plugins
from recog.train.step import build_steps

_EXPERIMENT = flags.DEFINE_string("experiment", "cats_resnet", "NAME[:variant].")
_BATCHES = flags.DEFINE_integer("batches", 40, "Batches to time the pipeline on.")
_STEP_BATCHES = flags.DEFINE_integer("step_batches", 3, "Train steps to time (0: skip the step).")


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """The largest resident-set size while the `with` block runs, above the size at its start."""

    def __enter__(self):
        self.start = self.peak = resident_bytes()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._done.wait(0.02):
            self.peak = max(self.peak, resident_bytes())

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.growth = max(self.peak, resident_bytes()) - self.start


def main(argv):
    del argv
    plugins.load_all()
    config = experiments.load(_EXPERIMENT.value, cli.config_overrides)
    source = data.make_source(config.data)
    batch_size = config.batch_size
    cores = len(os.sched_getaffinity(0))
    epoch_batches = source.num_examples(config.data.train_split) // batch_size

    def stream(start_step=0):
        return data.configured_train_batches(source, config, start_step)

    def first_batch_seconds(start_step):
        start = time.perf_counter()
        next(stream(start_step))
        return time.perf_counter() - start

    first_batch_seconds(0)  # opens the files once, so both timings below find them in the OS cache
    start_seconds = first_batch_seconds(0)
    resume_seconds = first_batch_seconds(epoch_batches // 2)

    batches = stream()
    if config.data.cache:
        print(f"warm-up: one epoch of {epoch_batches} batches fills the cache...", flush=True)
        warm_up = epoch_batches
    else:
        warm_up = 5
    for _ in itertools.islice(batches, warm_up):
        pass
    waits = []
    with PeakMemory() as memory:
        start = last = time.perf_counter()
        for _ in itertools.islice(batches, _BATCHES.value):
            waits.append(-last + (last := time.perf_counter()))
        pipeline = _BATCHES.value * batch_size / (last - start)

    print(f"experiment {config.experiment}, batch {batch_size}, {cores} host core(s)")
    print(f"  pipeline: {config.data.train_pipeline} (cache={config.data.cache})")
    print(f"  input pipeline alone : {pipeline:8.1f} images/sec, {pipeline / cores:.1f} per core")
    print(
        f"  wait for a batch     : {1000 * np.median(waits):8.1f} ms median, "
        f"{1000 * max(waits):.1f} ms longest ({epoch_batches} batches an epoch)"
    )
    print(
        f"  its memory growth    : {memory.growth / 2**20:8.1f} MiB while timed, "
        f"{memory.peak / 2**20:.0f} MiB resident in all"
    )
    print(f"  first batch at step 0: {start_seconds:8.2f} s")
    print(f"  first batch at step {epoch_batches // 2} (mid-epoch resume): {resume_seconds:.2f} s")
    if not _STEP_BATCHES.value:
        return

    mesh = parallel.make_mesh()
    sharding = parallel.batch_sharding(mesh)
    steps = build_steps(config, source.num_classes, data.image_channels(source), mesh)
    state = steps.init()
    batch = parallel.to_global(next(batches), sharding)
    state, metrics = steps.train(state, batch)  # compile
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(_STEP_BATCHES.value):
        state, metrics = steps.train(state, batch)
    jax.block_until_ready(metrics)
    step = _STEP_BATCHES.value * batch_size / (time.perf_counter() - start)
    print(f"  train step alone     : {step:8.1f} images/sec on {mesh.size} device(s)")
    print(f"pipeline/step ratio: {pipeline / step:.2f}")


if __name__ == "__main__":
    cli.run(main)
