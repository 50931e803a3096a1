"""What recog sets up when it is imported, before the libraries it drives start: the training
and evaluation binaries' restart with huge pages for malloc, a one-line answer where they are
not installed, recog's XLA flags for CPU runs (into XLA_FLAGS, before JAX starts its CPU
backend), TensorFlow's settings, and TensorFlow imported on first use, without Keras."""

import contextlib
import importlib.metadata
import importlib.util
import os
import platform
import sys
import threading
import types
from pathlib import Path

HUGE_PAGES = "glibc.malloc.hugetlb=1"
YNN_FUSIONS = ("LIBRARY_FUSION_TYPE_REDUCE", "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT")


def restart_with_huge_pages() -> None:
    """Restarts this process (same interpreter, same arguments) with glibc's malloc asking Linux
    for transparent huge pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1), where Linux gives them
    only on request (THP mode "madvise"). XLA's CPU runtime takes each step's buffers fresh from
    malloc, and filling them 4 KiB page by page cost more than the kernels' own work: a 154 MB
    elementwise op took 52 ms instead of 12, the EfficientNet-Lite0 train step ran at 11.7
    instead of 15.4-22.4 images/sec (benchmarks/README.md, "Huge pages for malloc"). glibc
    reads its tunables only when a process starts, hence the restart. It does nothing where the
    user set the tunable, or RECOG_HUGE_PAGES=0, or off Linux, or without glibc 2.35+."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables or os.environ.get("RECOG_HUGE_PAGES") == "0":
        return
    libc, version = platform.libc_ver()
    if sys.platform != "linux" or libc != "glibc" or _version(version) < (2, 35):
        return
    try:
        mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return
    if "[madvise]" not in mode:  # "always" needs no asking; "never" gives none
        return
    os.environ["GLIBC_TUNABLES"] = f"{tunables}:{HUGE_PAGES}" if tunables else HUGE_PAGES
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


# Huge pages doubled the train step and cost the quick commands: a one-image predict took 5.61
# instead of 5.25 s, a first --list 29.2 instead of 26.6 (benchmarks/README.md, "Huge pages for
# malloc"). So only the binaries that train and evaluate restart.
COMPUTING_BINARIES = ("recog.main", "recog.eval", "recog-train", "recog-eval")


def running_a_computing_binary() -> bool:
    """Whether this process is a recog binary that trains or evaluates, not a library import:
    `python -m recog.main` or `recog.eval` (recog is imported while Python looks for the
    module, when sys.argv[0] is "-m"), or their console scripts `recog-train`, `recog-eval`."""
    if sys.argv[:1] == ["-m"] and "-m" in sys.orig_argv:
        following = sys.orig_argv[sys.orig_argv.index("-m") + 1 :]
        return bool(following) and following[0] in COMPUTING_BINARIES
    return bool(sys.argv) and Path(sys.argv[0]).name in COMPUTING_BINARIES


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


_FIRST_USE = threading.RLock()  # re-entrant: TensorFlow's __init__ reads its own module


class _TensorFlowOnFirstUse(types.ModuleType):
    """The `tensorflow` module until it is first used: `import tensorflow` reads only its
    `__spec__`, and any other attribute runs TensorFlow's `__init__` in place, once, while other
    threads wait for it. The first use must be an attribute (`tf.data`): a first use through a
    submodule import (`import tensorflow.python...`) works, but runs that submodule twice."""

    _started = False

    def __getattribute__(self, name: str):
        if name == "__spec__":
            return types.ModuleType.__getattribute__(self, name)
        with _FIRST_USE:
            if not _TensorFlowOnFirstUse._started:
                _TensorFlowOnFirstUse._started = True
                try:
                    _run_tensorflow_init(self)
                except BaseException:
                    del sys.modules["tensorflow"]  # as a failed import leaves it: not imported
                    raise
                self.__class__ = types.ModuleType
        return types.ModuleType.__getattribute__(self, name)


def _run_tensorflow_init(module: types.ModuleType) -> None:
    """Without the Keras that TensorFlow's `__init__` imports eagerly when installed (and with
    Keras, scikit-learn): about a third of its import time (benchmarks/README.md, "Command
    latency"). TensorFlow skips that import where Keras is missing; Keras stays importable
    afterwards, and `tf.keras` loads it on first use."""
    keras_blocked = "keras" not in sys.modules
    if keras_blocked:
        sys.modules["keras"] = None  # makes `import keras` fail at once
    try:
        module.__spec__.loader.exec_module(module)
    finally:
        if keras_blocked:
            del sys.modules["keras"]
    _hide_gpus(module)


def _hide_gpus(tensorflow: types.ModuleType) -> None:
    """tf.data runs on the host: TensorFlow keeps off any accelerator JAX uses."""
    with contextlib.suppress(RuntimeError):  # raised where its devices started before recog
        tensorflow.config.set_visible_devices([], "GPU")


def import_tensorflow_lazily() -> None:
    """Makes `import tensorflow` free until TensorFlow is first used, so that a command that
    never touches tf.data (`--list`) does not pay TensorFlow's 2-3 s import. (importlib's
    LazyLoader would not do: on Python 3.11 the import statement's own read of `__spec__` loads
    the module.) Where TensorFlow is already imported, only its GPUs are hidden."""
    if "tensorflow" in sys.modules:
        _hide_gpus(sys.modules["tensorflow"])
        return
    # TFDS takes "tensorflow" in sys.modules to mean TensorFlow is loaded, and its own import
    # builds features that then read tf.dtypes; imported first, it uses TensorFlow only when it
    # needs it.
    import tensorflow_datasets  # noqa: F401

    spec = importlib.util.find_spec("tensorflow")
    if spec is None:
        raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")
    module = importlib.util.module_from_spec(spec)
    sys.modules["tensorflow"] = module
    module.__class__ = _TensorFlowOnFirstUse


if running_a_computing_binary():
    restart_with_huge_pages()
require_installed()
set_cpu_xla_defaults()
set_tensorflow_defaults()
import_tensorflow_lazily()
