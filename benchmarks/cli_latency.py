"""How long a user waits for the quick commands: `python -m recog.main --list` and
`python -m recog.predict` on one image, each a fresh process (imports included), as typed.

    python benchmarks/cli_latency.py [--repeats=5] [--workdir=DIR] [--python=PATH]

It prints each command's median and fastest wall seconds and its median CPU seconds (user and
system time of the process and its threads: steadier than wall time where other jobs share the
cores). `--list` runs with a cache directory of its own (RECOG_CACHE): once with it empty, as
the first listing after installing or changing recog does, then with the figures that run kept.
predict takes DIR (default: a digits_cnn:quick run that the script trains first, untimed) and one
test digit. --python times another interpreter or installation (a virtual environment holding
another version of recog, say); the commands run from a scratch directory, so that the
checkout's own recog/ is not imported in place of the installed one.
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def timed(command: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of `command`, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def report(name: str, runs: list[tuple[float, float]]) -> None:
    walls, cpus = zip(*runs, strict=True)
    print(
        f"{name}: median {statistics.median(walls):.2f} s wall (fastest {min(walls):.2f}), "
        f"median {statistics.median(cpus):.2f} s CPU, {len(runs)} run(s)"
    )


def digit_image(path: Path) -> Path:
    from sklearn.datasets import load_digits

    pixels = np.round(load_digits().images[-1] * (255.0 / 16.0)).astype(np.uint8)
    Image.fromarray(pixels, "L").save(path)
    return path


def measure(args: argparse.Namespace, scratch: Path) -> None:
    python = [args.python, "-m"]
    workdir = args.workdir
    if workdir is None:
        workdir = str(scratch / "digits_cnn_quick")
        print(f"Training digits_cnn:quick into {workdir} (untimed)")
        train = [*python, "recog.main", "--experiment=digits_cnn:quick", f"--workdir={workdir}"]
        timed(train, scratch)
    image = digit_image(scratch / "digit.png")

    listing = [*python, "recog.main", "--list"]
    cache = {**os.environ, "RECOG_CACHE": str(scratch / "cache")}
    report("--list, nothing cached yet", [timed(listing, scratch, cache)])
    report("--list", [timed(listing, scratch, cache) for _ in range(args.repeats)])
    predict = [*python, "recog.predict", f"--workdir={workdir}", str(image)]
    report("predict, one image", [timed(predict, scratch) for _ in range(args.repeats)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", help="a trained work directory for predict")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="recog-cli-latency-") as scratch:
        measure(args, Path(scratch))


if __name__ == "__main__":
    main()
