"""Is the input pipeline fast enough? Images/sec of the tf.data training pipeline beside the train
step's own images/sec, for one experiment, measured in the same run.

    python benchmarks/input_pipeline.py --experiment=cats_resnet:cpu \
        --config.data.dir=../shared/data/cats_dogs

The pipeline is timed alone (decoding, augmentation, batching; after one warm-up pass that fills
the cache), then the compiled train step alone on a batch already on the device, then the two
together as recog.main runs them. The pipeline must be faster than the step: a ratio
pipeline/step above 1 means the devices never wait for data.
"""

import itertools
import time

import jax
from absl import flags

from recog import cli, data, experiments, parallel, plugins
from recog.train.step import build_steps

_EXPERIMENT = flags.DEFINE_string("experiment", "cats_resnet:cpu", "NAME[:variant].")
_BATCHES = flags.DEFINE_integer("batches", 30, "Batches to time in each measurement.")


def images_per_sec(run_batches, count: int, batch_size: int) -> float:
    start = time.perf_counter()
    run_batches(count)
    return count * batch_size / (time.perf_counter() - start)


def main(argv):
    del argv
    plugins.load_all()
    config = experiments.load(_EXPERIMENT.value, cli.config_overrides)
    source = data.make_source(config.data)
    mesh = parallel.make_mesh()
    sharding = parallel.batch_sharding(mesh)
    batch_size, count = config.batch_size, _BATCHES.value
    stream = data.train_batches(
        source,
        config.data.train_split,
        global_batch_size=batch_size,
        pipeline=config.data.train_pipeline,
        seed=config.seed,
        cache=config.data.cache,
    )
    epoch = source.num_examples(config.data.train_split) // batch_size
    print(f"warm-up: one epoch of {epoch} batches (fills the cache)...", flush=True)
    for _ in itertools.islice(stream, epoch):
        pass
    pipeline = images_per_sec(lambda n: list(itertools.islice(stream, n)), count, batch_size)

    steps = build_steps(config, source.num_classes, data.image_channels(source), mesh)
    state = steps.init()
    batch = parallel.to_global(next(stream), sharding)
    state, metrics = steps.train(state, batch)  # compile
    jax.block_until_ready(metrics)

    def step_only(n):
        nonlocal state
        for _ in range(n):
            state, metrics = steps.train(state, batch)
        jax.block_until_ready(metrics)

    def step_with_pipeline(n):
        nonlocal state
        for host_batch in itertools.islice(stream, n):
            state, metrics = steps.train(state, parallel.to_global(host_batch, sharding))
        jax.block_until_ready(metrics)

    step = images_per_sec(step_only, count, batch_size)
    together = images_per_sec(step_with_pipeline, count, batch_size)
    print(f"experiment {config.experiment}, batch {batch_size}, {mesh.size} device(s)")
    print(f"  input pipeline alone : {pipeline:8.1f} images/sec  ({config.data.train_pipeline})")
    print(f"  train step alone     : {step:8.1f} images/sec")
    print(f"  step fed by pipeline : {together:8.1f} images/sec")
    print(f"pipeline/step ratio: {pipeline / step:.2f}   loop efficiency: {together / step:.2f}")


if __name__ == "__main__":
    cli.run(main)
