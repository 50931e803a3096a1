"""recog's XLA flags for CPU runs, put into XLA_FLAGS when recog is imported (before JAX starts
its CPU backend)."""

import importlib.metadata
import os

YNN_FUSIONS = ("LIBRARY_FUSION_TYPE_REDUCE", "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT")


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


set_cpu_xla_defaults()
