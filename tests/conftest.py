"""Test set-up: 8 simulated CPU devices and a private TFDS data directory, both set before JAX or
TFDS is imported, and inherited by the binaries the tests start as subprocesses."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ.setdefault("TFDS_DATA_DIR", tempfile.mkdtemp(prefix="recog-tfds-"))
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_binary(
    module: str, *args: str, timeout: float = 300, **kwargs
) -> subprocess.CompletedProcess:
    """Runs `python -m recog.<module> args...` from the repository root; returns the result."""
    return subprocess.run(
        [sys.executable, "-m", f"recog.{module}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


@pytest.fixture(scope="session")
def digits_source():
    """The embedded digits data set, prepared once into the session's TFDS data directory."""
    from recog import data
    from recog.experiments import load

    return data.make_source(load("digits_cnn").data)
