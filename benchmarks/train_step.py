"""How fast is recog's train step, against the hardware and against PyTorch? One configuration
(model, image size, batch size, dtype) measured in one run:

    python benchmarks/train_step.py --model=resnet18 --image_size=128 --batch_size=64
    python benchmarks/train_step.py --model=resnet50 --image_size=128 --batch_size=32 \
        --data_dir=../shared/data/cats_dogs

1. The compiled train step on a batch already on the device(s): images/sec (from the median step
   time), compile time, FLOPs per image from XLA's cost analysis of the compiled step, achieved
   FLOP/s as a fraction of this machine's matmul peak (a large jnp.dot, measured in the same run
   in float32 and bfloat16).
2. The eval step's images/sec.
   Then every convolution and matmul of the step (forward and backward), each timed alone
   (op_breakdown.py): for large layers, their sum is about what they cost in the step.
3. Loop efficiency: `recog.main`'s training loop on real photos (an image folder given by
   --data_dir, else TFDS cats_vs_dogs if it is prepared, else the embedded digits) divided by the
   bare step's images/sec (mean step time, as the loop's) for the same model and data.
4. Scaling: images/sec and XLA's memory estimate as the batch size and the image size grow, as a
   table and a plot (PNG in --out).
5. The same architecture and batch in PyTorch (benchmarks/torch_resnet.py, in a subprocess; needs
   `pip install torch==2.13.0`), and the ratio if every op but the convolutions and matmuls
   took no time. The last line printed is `recog/pytorch ratio: X`.

Like recog's training binary, it restarts itself with huge pages for malloc (recog/startup.py),
and the PyTorch subprocess inherits them: both sides run under the same allocator settings,
which it prints (GLIBC_TUNABLES; RECOG_HUGE_PAGES=0 measures both without).

Nothing here asserts a time: it prints figures. Every figure is measured in this run, so the
ratios stay meaningful on a shared, noisy machine.
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags, logging
from op_breakdown import breakdown

from recog import cli, data, experiments, parallel, plugins, startup
from recog.errors import UserError
from recog.main import train
from recog.train.step import build_steps

_MODEL = flags.DEFINE_string("model", "resnet18", "A registered model name.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Square image side in pixels.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 1000, "Classes of the synthetic step batch.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per measurement (after 2 warm-up steps).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Image folder for the loop measurement.")
_LOOP_STEPS = flags.DEFINE_integer("loop_steps", 30, "Timed recog.main steps (0: skip the loop).")
_SCALING_BATCH_SIZES = flags.DEFINE_list(
    "scaling_batch_sizes", ["16", "32", "64", "128"], "Batch sizes of the scaling table."
)
_SCALING_IMAGE_SIZES = flags.DEFINE_list(
    "scaling_image_sizes", ["64", "128", "224"], "Image sizes of the scaling table."
)
_SCALING_STEPS = flags.DEFINE_integer("scaling_steps", 3, "Timed steps per scaling point.")
_BREAKDOWN = flags.DEFINE_bool(
    "breakdown", True, "Time every convolution and matmul of the step alone."
)
_TORCH = flags.DEFINE_bool("torch", True, "Run the PyTorch reference (needs torch installed).")
_FROZEN_BACKBONE = flags.DEFINE_bool(
    "frozen_backbone",
    False,
    "Train the classifier alone, BatchNorm statistics frozen (fine-tuning's cheapest step), "
    "in both recog and PyTorch.",
)
_DEVICE_AUGMENT = flags.DEFINE_bool(
    "device_augment",
    True,
    "Run cats_resnet's RandAugment inside the step, as recog.main does (PyTorch's reference step "
    "has no augmentation: --nodevice_augment compares the model alone).",
)
_OUT = flags.DEFINE_string("out", "workdirs/benchmarks", "Where the plot and the JSON go.")

MATMUL_SIZE = 2048
TORCH_REFERENCE = Path(__file__).with_name("torch_resnet.py")


def step_config(model: str, dtype: str, batch_size: int) -> ml_collections.ConfigDict:
    """The training settings recog uses for ImageNet-style ResNets, on a synthetic batch."""
    config = experiments.load("cats_resnet", [])
    config.model = ml_collections.ConfigDict({"name": model, "dtype": dtype})
    config.batch_size = batch_size
    if not _DEVICE_AUGMENT.value:
        config.data.batch_pipeline = ""
    if _FROZEN_BACKBONE.value:
        config.freeze = "(?!head/).*"
        config.frozen_batch_stats = True
    return config


def synthetic_batch(batch_size: int, image_size: int, channels: int, num_classes: int, mesh):
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (batch_size, image_size, image_size, channels), np.uint8),
        "label": rng.integers(0, num_classes, (batch_size,), np.int32),
        "mask": np.ones((batch_size,), bool),
    }
    return parallel.to_global(batch, parallel.batch_sharding(mesh))


def call_seconds(call, count: int) -> np.ndarray:
    """Seconds of each of `count` calls of `call()` (which returns arrays to wait for), after two
    warm-up calls."""
    for _ in range(2):
        jax.block_until_ready(call())
    times = []
    for _ in range(count):
        start = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
    return np.array(times)


def measure_step(config, image_size: int, channels: int, num_classes: int, steps: int) -> dict:
    """Compile time, images/sec, FLOPs/image and XLA's memory estimate of one train step."""
    mesh = parallel.make_mesh()
    batch = synthetic_batch(config.batch_size, image_size, channels, num_classes, mesh)
    start = time.perf_counter()
    train_steps = build_steps(config, num_classes, channels, mesh)
    state = train_steps.init()
    compiled = train_steps.train.lower(state, batch).compile()
    compile_seconds = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    memory = compiled.memory_analysis()
    peak_bytes = None
    if memory is not None:
        peak_bytes = (
            memory.argument_size_in_bytes
            + memory.output_size_in_bytes
            + memory.temp_size_in_bytes
            - memory.alias_size_in_bytes
        )

    def train_call():
        nonlocal state
        state, metrics = compiled(state, batch)
        return metrics

    seconds = call_seconds(train_call, steps)
    return {
        # The median shrugs off a shared machine's stalls; the mean counts them, as a loop does.
        "images_per_sec": config.batch_size / np.median(seconds),
        "images_per_sec_mean": config.batch_size / seconds.mean(),
        "params": sum(leaf.size for leaf in jax.tree.leaves(state["params"])),
        "compile_seconds": compile_seconds,
        "flops_per_image": cost["flops"] / config.batch_size,
        "memory_bytes": peak_bytes,
        "steps": train_steps,
        "state": state,
        "batch": batch,
    }


def matmul_peak(dtype) -> float:
    """FLOP/s of a large square matmul (float32 accumulation), this machine's practical peak."""
    a = jax.random.normal(jax.random.key(0), (MATMUL_SIZE, MATMUL_SIZE), dtype)
    matmul = jax.jit(lambda a: jnp.dot(a, a, preferred_element_type=jnp.float32))
    return 2 * MATMUL_SIZE**3 / np.median(call_seconds(lambda: matmul(a), 10))


def loop_config(image_size: int, batch_size: int):
    """A real-data recog.main config for the loop measurement, and what its data is."""
    model = ml_collections.ConfigDict({"name": _MODEL.value, "dtype": _DTYPE.value})
    candidates = []
    cats = experiments.load("cats_resnet:cpu", [])
    cats.data.dir = _DATA_DIR.value
    crop = f"inception_crop({image_size}, area_min=0.25)|flip_lr"
    cats.data.train_pipeline = crop
    cats.data.eval_pipeline = f"resize_small({image_size * 8 // 7})|center_crop({image_size})"
    where = _DATA_DIR.value or "TFDS cats_vs_dogs"
    candidates.append((cats, f"cats vs dogs photos ({where}), {crop}"))
    digits = experiments.load("digits_cnn", [])
    digits.data.train_pipeline = f"resize({image_size})"
    digits.data.eval_pipeline = f"resize({image_size})"
    candidates.append((digits, f"embedded digits resized to {image_size} px"))
    for config, description in candidates:
        config.model = model
        config.batch_size = batch_size
        config.eval_batch_size = batch_size
        try:
            source = data.make_source(config.data)
        except UserError as e:
            print(f"  loop data: {description} unavailable ({str(e).splitlines()[0][:120]}...)")
            continue
        return config, source, description
    raise UserError("no data for the loop measurement")


def measure_loop(image_size: int, batch_size: int, steps: int) -> dict:
    """recog.main's steady-state images/sec, and the bare step's for the same config and data.

    The loop is timed from a log line after compiling and, where the data set is cached, after
    the first epoch (which decodes every image once), to the last step.
    """
    config, source, description = loop_config(image_size, batch_size)
    log_every = 5
    warmup = 10
    if config.data.cache:
        epoch = math.ceil(source.num_examples(config.data.train_split) / batch_size)
        warmup = max(warmup, math.ceil((epoch + 1) / log_every) * log_every)
        description += f", timed after the first epoch ({warmup} steps) fills the decode cache"
    config.num_steps = warmup + steps
    config.log_every = log_every
    config.eval_every = config.checkpoint_every = config.num_steps
    with tempfile.TemporaryDirectory() as workdir:
        train(config, workdir)
        lines = Path(workdir, "metrics.jsonl").read_text().splitlines()
    logged = [json.loads(line) for line in lines]
    logged = [(m["step"], m["wall_time"]) for m in logged if "train/loss" in m]
    (first_step, first_time), (last_step, last_time) = logged[warmup // log_every - 1], logged[-1]
    loop = (last_step - first_step) * batch_size / (last_time - first_time)
    channels = data.image_channels(source)
    bare = measure_step(config, image_size, channels, source.num_classes, _STEPS.value)
    return {"data": description, "loop": loop, "bare": bare["images_per_sec_mean"]}


def print_breakdown(step: dict, batch_size: int, rows: int = 12) -> float:
    """Prints the step's costliest convolutions and matmuls; returns their summed seconds."""
    ops = breakdown(step["steps"].train, step["state"], step["batch"], call_seconds, _STEPS.value)
    heavy_seconds = sum(op.count * op.seconds for op in ops)
    step_seconds = batch_size / step["images_per_sec"]

    def gflops(op) -> str:
        return f"{op.flops / op.seconds / 1e9:.0f}" if op.seconds else "n/a"

    print("convolutions and matmuls of the step, each timed alone on one device:")
    print("  count   ms each  GFLOP/s   ms in all  op")
    for op in ops[:rows]:
        print(
            f"  {op.count:5d}  {op.seconds * 1e3:8.2f}  {gflops(op):>7}  "
            f"{op.count * op.seconds * 1e3:10.1f}  {op.label}"
        )
    if len(ops) > rows:
        rest = sum(op.count * op.seconds for op in ops[rows:])
        print(f"  ... {len(ops) - rows} more distinct ops, {rest * 1e3:.1f} ms in all")
    print(
        f"  convolutions+matmuls : {heavy_seconds * 1e3:8.1f} ms of the "
        f"{step_seconds * 1e3:.1f} ms step ({heavy_seconds / step_seconds:.0%})"
    )
    return heavy_seconds


def torch_reference(image_size: int, batch_size: int) -> dict | str:
    """The PyTorch figures, or why there are none."""
    if not _TORCH.value:
        return "not run (--notorch)"
    command = [
        sys.executable,
        str(TORCH_REFERENCE),
        f"--model={_MODEL.value}",
        f"--image_size={image_size}",
        f"--batch_size={batch_size}",
        f"--dtype={_DTYPE.value}",
        f"--steps={_STEPS.value}",
        f"--device={'cuda' if jax.default_backend() == 'gpu' else 'cpu'}",
        *(["--frozen_backbone"] if _FROZEN_BACKBONE.value else []),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        if "No module named 'torch'" in result.stderr:
            return "PyTorch is not installed (pip install torch==2.13.0)"
        if "--model: invalid choice" in result.stderr:
            return f"no PyTorch twin of {_MODEL.value} in {TORCH_REFERENCE.name}"
        return f"the PyTorch reference failed: {result.stderr.strip().splitlines()[-1]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def scaling(image_size: int, batch_size: int, measured: dict) -> list[dict]:
    """One row per batch size at `image_size` and per image size at `batch_size`; the point the
    main measurement already took (`measured`) is not compiled again."""
    points = [(int(b), image_size) for b in _SCALING_BATCH_SIZES.value]
    points += [(batch_size, int(s)) for s in _SCALING_IMAGE_SIZES.value if int(s) != image_size]
    rows = []
    mesh_size = parallel.make_mesh().size
    for batch, size in points:
        if batch % mesh_size:
            continue
        if (batch, size) == (batch_size, image_size):
            figures = measured
        else:
            config = step_config(_MODEL.value, _DTYPE.value, batch)
            figures = measure_step(config, size, 3, _NUM_CLASSES.value, _SCALING_STEPS.value)
        rows.append(
            {
                "batch_size": batch,
                "image_size": size,
                "images_per_sec": figures["images_per_sec"],
                "memory_mib": figures["memory_bytes"] and figures["memory_bytes"] / 2**20,
            }
        )
        memory = f"{rows[-1]['memory_mib']:8.0f} MiB" if rows[-1]["memory_mib"] else "n/a"
        print(f"  batch {batch:4d}  {size:4d} px  {figures['images_per_sec']:8.1f} img/s  {memory}")
    return rows


def plot_scaling(rows: list[dict], image_size: int, batch_size: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, fixed, label in (
        (axes[0], "batch_size", ("image_size", image_size), "batch size"),
        (axes[1], "image_size", ("batch_size", batch_size), "image size (px)"),
    ):
        points = sorted((r[key], r) for r in rows if r[fixed[0]] == fixed[1])
        xs = [x for x, _ in points]
        ax.plot(xs, [r["images_per_sec"] for _, r in points], "o-", color="tab:blue")
        ax.set_xlabel(f"{label} ({fixed[0].replace('_', ' ')} {fixed[1]})")
        ax.set_ylabel("images/sec", color="tab:blue")
        ax.set_ylim(bottom=0)
        memory = ax.twinx()
        memory.plot(xs, [r["memory_mib"] for _, r in points], "s--", color="tab:red")
        memory.set_ylabel("XLA memory estimate (MiB)", color="tab:red")
        memory.set_ylim(bottom=0)
    figure.suptitle(f"{_MODEL.value} train step, {_DTYPE.value}, {jax.devices()[0].device_kind}")
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv):
    del argv
    plugins.load_all()
    model, image_size, batch_size = _MODEL.value, _IMAGE_SIZE.value, _BATCH_SIZE.value
    devices = jax.devices()
    frozen = ", classifier only (frozen backbone)" if _FROZEN_BACKBONE.value else ""
    print(f"recog train step: {model}, {image_size} px, batch {batch_size}, {_DTYPE.value}{frozen}")
    print(f"  {len(devices)} x {devices[0].device_kind} device(s); jax {jax.__version__}")
    print(f"  XLA_FLAGS={os.environ.get('XLA_FLAGS', '')}")
    print(f"  GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')} (PyTorch's too)")
    peaks = {"float32": matmul_peak(jnp.float32), "bfloat16": matmul_peak(jnp.bfloat16)}
    print(
        f"  matmul peak ({MATMUL_SIZE}^2): float32 {peaks['float32'] / 1e9:,.0f} GFLOP/s, "
        f"bfloat16 {peaks['bfloat16'] / 1e9:,.0f} GFLOP/s"
    )

    config = step_config(model, _DTYPE.value, batch_size)
    step = measure_step(config, image_size, 3, _NUM_CLASSES.value, _STEPS.value)
    achieved = step["images_per_sec"] * step["flops_per_image"]
    print(f"  parameters           : {step['params']:>10,}")
    print(f"  compile time         : {step['compile_seconds']:8.1f} s")
    print(f"  train step           : {step['images_per_sec']:8.1f} images/sec")
    print(
        f"  FLOPs per image      : {step['flops_per_image'] / 1e9:8.2f} GFLOP (XLA cost analysis)"
    )
    print(
        f"  achieved             : {achieved / 1e9:8.1f} GFLOP/s = "
        f"{achieved / peaks[_DTYPE.value]:.2f} of the {_DTYPE.value} matmul peak"
    )
    eval_seconds = np.median(
        call_seconds(lambda: step["steps"].eval(step["state"], step["batch"]), _STEPS.value)
    )
    print(f"  eval step            : {batch_size / eval_seconds:8.1f} images/sec")
    heavy_seconds = print_breakdown(step, batch_size) if _BREAKDOWN.value else None

    loop = None
    if _LOOP_STEPS.value:
        logging.set_verbosity(logging.WARNING)
        loop = measure_loop(image_size, batch_size, _LOOP_STEPS.value)
        print(f"  recog.main loop      : {loop['loop']:8.1f} images/sec on {loop['data']}")
        print(f"  bare step, same data : {loop['bare']:8.1f} images/sec (mean, as the loop's)")
        print(f"  loop efficiency      : {loop['loop'] / loop['bare']:8.2f}")

    print("scaling (XLA's memory estimate: arguments + outputs + temporaries - donated):")
    rows = scaling(image_size, batch_size, step)
    out = Path(_OUT.value)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"train_step_{model}_{image_size}px_b{batch_size}_{_DTYPE.value}"
    stem += "_frozen_backbone" if _FROZEN_BACKBONE.value else ""
    if rows:
        plot_scaling(rows, image_size, batch_size, out / f"{stem}.png")
        print(f"  plot: {out / f'{stem}.png'}")

    reference = torch_reference(image_size, batch_size)
    if isinstance(reference, dict):
        ratio = f"{step['images_per_sec'] / reference['images_per_sec']:.2f}"
        print(
            f"pytorch {reference['torch']} on {reference.get('device_name', 'cpu')} "
            f"({reference['threads']} threads, channels-last): "
            f"{reference['images_per_sec']:.1f} images/sec, {reference['params']:,} parameters"
        )
        if heavy_seconds:
            ceiling = batch_size / reference["images_per_sec"] / heavy_seconds
            print(
                f"  ratio if every op but the convolutions and matmuls took no time: {ceiling:.2f}"
            )
    else:
        ratio = f"n/a ({reference})"
    (out / f"{stem}.json").write_text(
        json.dumps(
            {
                "step": {k: v for k, v in step.items() if k not in ("steps", "state", "batch")},
                "matmul_peak_flops": peaks,
                "heavy_ops_seconds": heavy_seconds,
                "loop": loop,
                "scaling": rows,
                "pytorch": reference,
            },
            indent=1,
        )
    )
    print(f"recog/pytorch ratio: {ratio}")


if __name__ == "__main__":
    startup.restart_with_huge_pages()
    cli.run(main)
