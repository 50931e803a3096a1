#!/usr/bin/env bash
# The GPU (or TPU) checks, on the accelerator itself, in one short run:
#   1. benchmarks/accelerator_check.py: ResNet-50's train-mode gradient lowered for this platform
#      holds the accelerator's own convolutions and max pooling (none of recog's CPU kernels),
#      and its float32 gradients computed here are within 1e-4 of a float64 reference;
#   2. benchmarks/train_step.py: ResNet-50 at 224 px, bfloat16, global batch 256: recog's train
#      step in images/sec, beside PyTorch's (channels-last, AMP) on the same GPU, and the ratio.
#
#   bash benchmarks/accelerator.sh            # with recog installed for the accelerator
#   bash benchmarks/accelerator.sh --install  # first: .venv with recog[cuda12,bench] at CI's pins
#   bash benchmarks/accelerator.sh --tests    # also the test suite (it runs on the CPU platform)
#
# PYTHON picks the interpreter (default: .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

install=false
tests=false
for arg in "$@"; do
  case "$arg" in
    --install) install=true ;;
    --tests) tests=true ;;
    *) echo "accelerator.sh: unknown option $arg (options: --install --tests)" >&2; exit 2 ;;
  esac
done

if [[ "$install" == true ]]; then
  { [ -x .venv/bin/python ] || python3 -m venv .venv; }
  .venv/bin/pip install -q -c constraints.txt -e '.[cuda12,bench,test]'
fi
python=${PYTHON:-.venv/bin/python}

"$python" benchmarks/accelerator_check.py
"$python" benchmarks/train_step.py --model=resnet50 --image_size=224 --batch_size=256 \
  --dtype=bfloat16 --steps=20 --loop_steps=0 --nobreakdown --scaling_batch_sizes= \
  --scaling_image_sizes= --out=workdirs/benchmarks/accelerator
if [[ "$tests" == true ]]; then
  "$python" -m pytest -q
fi
