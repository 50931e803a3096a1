"""What recog sets up when it is imported, before the libraries it drives start: a one-line
answer where they are not installed, recog's XLA flags for CPU runs (into XLA_FLAGS, before JAX
starts its CPU backend), TensorFlow's settings, and TensorFlow imported without Keras."""

import importlib.metadata
import os
import sys
from pathlib import Path

YNN_FUSIONS = ("LIBRARY_FUSION_TYPE_REDUCE", "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT")


def not_installed_message() -> str:
    """What to do when this Python lacks recog's dependencies: use the checkout's environment
    if it has one, else install recog into one."""
    venv = Path(__file__).resolve().parent.parent / ".venv"
    if (venv / "bin" / "python").exists():
        shown = os.path.relpath(venv)
        shown = str(venv) if shown.startswith("..") else shown
        fix = f"activate its environment (`source {shown}/bin/activate`) or use {shown}/bin/python"
    else:
        fix = "install it first (`pip install -e .` in the repository; see README.md)"
    return f"recog is not installed for {sys.executable} (no JAX found): {fix}."


def require_installed() -> None:
    """`python -m recog...` under a Python without recog's dependencies exits with one line
    instead of a traceback; `import recog` raises ModuleNotFoundError with the same advice."""
    try:
        importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        message = not_installed_message()
        if sys.argv[:1] == ["-m"]:  # Python sets this while `-m` imports the module's packages
            sys.exit(f"error: {message}")
        raise ModuleNotFoundError(message, name="jaxlib") from None


def set_cpu_xla_defaults() -> None:
    """The settings that won in benchmarks/train_step.py (see benchmarks/README.md): XLA's
    YNNPACK library fusions for reductions and plain matmuls (bfloat16 ones at twice the float32
    rate on AVX-512-BF16), not for convolutions, whose YNNPACK kernels were slower than XLA's own
    (train step at 128 px on 2 AVX-512 cores: ResNet-18 27.7 -> 31.6 images/sec,
    ResNet-50 7.3 -> 10.8).

    Only for the jaxlib series this was measured on: XLA aborts the process on a flag it does not
    know. A flag the user already set in XLA_FLAGS wins; RECOG_XLA_DEFAULTS=0 turns this off.
    """
    jaxlib = tuple(int(part) for part in importlib.metadata.version("jaxlib").split(".")[:2])
    if jaxlib != (0, 10) or os.environ.get("RECOG_XLA_DEFAULTS") == "0":
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_cpu_experimental_ynn_fusion_type" not in flags:
        ynn = "--xla_cpu_experimental_ynn_fusion_type=" + ",".join(YNN_FUSIONS)
        os.environ["XLA_FLAGS"] = f"{flags} {ynn}".strip()


def set_tensorflow_defaults() -> None:
    """TensorFlow is only recog's tf.data engine: warnings and errors only in its log; its BFC
    allocator, since the default one hands every tensor fresh pages from the OS and the page
    faults cost tf.data more than the resize itself (benchmarks/README.md, "The host's part");
    and none of its oneDNN kernels, which serve the network layers recog never runs in
    TensorFlow and announce themselves on every command. A value the user set wins."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def cache_root() -> Path:
    """Where recog keeps what it can make again: downloaded weights, compiled programs."""
    return Path(os.environ.get("RECOG_CACHE") or Path.home() / ".cache" / "recog")


def import_tensorflow_without_keras() -> None:
    """Imports TensorFlow, recog's tf.data engine, without the Keras that its `__init__` imports
    eagerly when installed (and with Keras, scikit-learn): about a third of the import time that
    every command pays (benchmarks/README.md, "Command latency"). TensorFlow skips that import
    where Keras is missing; Keras stays importable afterwards, and `tf.keras` loads it on first
    use."""
    if "tensorflow" in sys.modules or "keras" in sys.modules:
        return
    sys.modules["keras"] = None  # makes `import keras` fail at once
    try:
        import tensorflow  # noqa: F401
    finally:
        del sys.modules["keras"]


require_installed()
set_cpu_xla_defaults()
set_tensorflow_defaults()
import_tensorflow_without_keras()
