"""The benchmark scripts run end to end on tiny models (they print figures; no time is asserted),
and recog's CPU defaults for XLA respect what the user set."""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from conftest import REPO, env_with_devices
from jax import lax

from recog import startup

sys.path.insert(0, str(REPO / "benchmarks"))
import op_breakdown

YNN_DEFAULT = (
    "--xla_cpu_experimental_ynn_fusion_type="
    "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
)


def run_train_step_benchmark(tmp_path, *args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "benchmarks/train_step.py", f"--out={tmp_path}", "--steps=1", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env_with_devices(2),  # a step for 8 simulated devices compiles for longer
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()


def test_train_step_benchmark_prints_every_figure(tmp_path):
    lines = run_train_step_benchmark(
        tmp_path,
        "--model=small_cnn",
        "--image_size=16",
        "--batch_size=8",
        "--loop_steps=5",
        "--scaling_batch_sizes=8,16",
        "--scaling_image_sizes=8",
        "--scaling_steps=1",
        "--notorch",
    )
    text = "\n".join(lines)

    def figure(label: str) -> float:
        match = re.search(rf"{label}\s*:\s*([\d,.]+)", text)
        assert match, f"no {label!r} in:\n{text}"
        return float(match.group(1).replace(",", ""))

    assert figure("train step") > 0
    assert figure("compile time") > 0
    assert figure("FLOPs per image") > 0
    assert figure("eval step") > 0
    assert 0 < figure("loop efficiency") < 10
    assert "embedded digits resized to 16 px" in text  # no cats data here: the digits fallback
    assert re.search(r"achieved\s*:.*of the float32 matmul peak", text)
    assert figure("convolutions\\+matmuls") > 0
    assert re.search(r"^\s+\d+\s+[\d.]+\s+(\d+|n/a)\s+[\d.]+\s+conv 8x16x16x", text, re.M)
    scaling_rows = [line for line in lines if re.match(r"\s+batch\s+\d+\s+\d+ px", line)]
    assert len(scaling_rows) == 3  # batch 8 and 16 at 16 px, batch 8 at 8 px
    assert lines[-1] == "recog/pytorch ratio: n/a (not run (--notorch))"

    stem = "train_step_small_cnn_16px_b8_float32"
    assert (tmp_path / f"{stem}.png").stat().st_size > 0
    saved = json.loads((tmp_path / f"{stem}.json").read_text())
    assert saved["step"]["flops_per_image"] > 0
    assert saved["heavy_ops_seconds"] > 0
    assert [(r["batch_size"], r["image_size"]) for r in saved["scaling"]] == [
        (8, 16),
        (16, 16),
        (8, 8),
    ]
    assert all(r["memory_mib"] > 0 for r in saved["scaling"])


def test_train_step_benchmark_against_pytorch(tmp_path):
    torch = pytest.importorskip("torch")  # benchmark-only dependency: pip install torch==2.13.0
    lines = run_train_step_benchmark(
        tmp_path,
        "--model=resnet18",
        "--image_size=32",
        "--batch_size=8",
        "--loop_steps=0",
        "--scaling_batch_sizes=",
        "--scaling_image_sizes=",
        "--nobreakdown",  # the test above covers it
    )
    text = "\n".join(lines)
    recog_params = re.search(r"parameters\s*:\s*([\d,]+)", text).group(1)
    assert f"pytorch {torch.__version__}" in text
    assert f"{recog_params} parameters" in text  # the same architecture on both sides
    assert re.fullmatch(r"recog/pytorch ratio: \d+\.\d\d", lines[-1])


def test_op_breakdown_counts_every_convolution_and_matmul_and_times_them():
    def step(images, kernel):
        features = lax.conv(images, kernel, (1, 1), "SAME")
        features = lax.conv(features, kernel, (1, 1), "SAME")  # same shapes: the same op
        features = lax.platform_dependent(  # only this platform's branch counts
            features, cpu=lambda f: f, default=lambda f: f @ f
        )
        matrix = features.reshape(-1, 16)[:16]
        matrix, _ = lax.scan(lambda m, _: (m @ m, None), matrix, length=3)
        return jnp.sum(matrix)

    images, kernel = jnp.ones((2, 16, 8, 8)), jnp.ones((16, 16, 3, 3))
    ops = op_breakdown.heavy_ops(jax.make_jaxpr(step)(images, kernel).jaxpr)
    assert [(op.label, op.count) for op in ops] == [
        ("matmul 16x16 * 16x16 -> 16x16", 3),
        ("conv 2x16x8x8 * 16x16x3x3 -> 2x16x8x8", 2),
    ]
    matmul = ops[0]
    op_breakdown.time_op(matmul, lambda call, count: [0.0], steps=1)
    assert matmul.flops == 2 * 16**3


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, YNN_DEFAULT),
        (
            {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
            f"--xla_force_host_platform_device_count=2 {YNN_DEFAULT}",
        ),
        (
            {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="},
            "--xla_cpu_experimental_ynn_fusion_type=",
        ),
        ({"RECOG_XLA_DEFAULTS": "0"}, ""),
    ],
)
def test_cpu_xla_defaults_leave_the_users_flags_alone(monkeypatch, environ, expected):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv("RECOG_XLA_DEFAULTS", raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(startup.importlib.metadata, "version", lambda package: "0.10.2")
    startup.set_cpu_xla_defaults()
    assert os.environ.get("XLA_FLAGS", "") == expected


def test_cpu_xla_defaults_only_for_the_measured_jaxlib(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(startup.importlib.metadata, "version", lambda package: "0.11.0")
    startup.set_cpu_xla_defaults()
    assert "XLA_FLAGS" not in os.environ
