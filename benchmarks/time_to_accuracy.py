"""Time to accuracy: trains an experiment with `python -m recog.main` as a user would, then prints
the validation curve against wall-clock time (from the command's start: data preparation and
compilation included) and when it first reached the target.

    python benchmarks/time_to_accuracy.py --target=0.85 -- \
        --experiment=cats_resnet:cpu --config.data.dir=../shared/data/cats_dogs

Arguments after `--` go to recog.main unchanged; --workdir defaults to a fresh temporary folder.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", type=float, default=0.85, help="validation accuracy to reach")
    parser.add_argument("train_args", nargs="*", help="arguments for recog.main (after --)")
    args = parser.parse_args()
    train_args = list(args.train_args)
    if not any(a.startswith("--workdir") for a in train_args):
        train_args.append(f"--workdir={tempfile.mkdtemp(prefix='recog-tta-')}")
    workdir = Path(next(a for a in train_args if a.startswith("--workdir")).split("=", 1)[1])

    start = time.time()
    result = subprocess.run([sys.executable, "-m", "recog.main", *train_args])
    total = time.time() - start
    if result.returncode:
        sys.exit(f"recog.main failed with exit status {result.returncode}")

    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/accuracy" in r]
    print(f"\n{'minutes':>8} {'step':>6} {'val acc':>8} {'val loss':>9}")
    for row in evals:
        minutes = (row["wall_time"] - start) / 60
        print(
            f"{minutes:8.2f} {row['step']:6d} {row['eval/accuracy']:8.4f} {row['eval/loss']:9.4f}"
        )
    reached = next((r for r in evals if r["eval/accuracy"] >= args.target), None)
    best = max(evals, key=lambda r: r["eval/accuracy"])
    print(f"best validation accuracy {best['eval/accuracy']:.4f} at step {best['step']}")
    if reached:
        minutes = (reached["wall_time"] - start) / 60
        print(f"reached {args.target:.0%} after {minutes:.1f} minutes (step {reached['step']})")
    else:
        print(f"did not reach {args.target:.0%}")
    print(f"whole command: {total / 60:.1f} minutes; work directory {workdir}")


if __name__ == "__main__":
    main()
