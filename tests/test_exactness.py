"""recog's CPU speed settings (recog/startup.py's XLA flags, recog/models/cpu_kernels.py) keep
a train step's gradients as exact as float32 allows: within 1e-4 of a float64 reference (about
1e-6 measured; PyTorch float32 on the same weights and batch was measured at about 9e-4).
benchmarks/exactness.py says how the distance is taken."""

import os
import sys

import jax
import numpy as np
import pytest
from conftest import REPO

from recog import startup

sys.path.insert(0, str(REPO / "benchmarks"))
import exactness


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_cpu_train_step_gradients_are_float32_exact(name):
    assert ",".join(startup.YNN_FUSIONS) in os.environ["XLA_FLAGS"]  # recog's, in force
    distances = exactness.distances_to_float64(name, jax.devices("cpu")[0])
    assert np.median(distances) < 1e-4, distances
