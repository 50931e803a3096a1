"""The commands a newcomer types: a Python without recog's packages answered in one line."""

import os
import subprocess
import sys

from conftest import REPO


def without_site_packages(*args: str) -> subprocess.CompletedProcess:
    """`python -S ...` from the repository root: recog's own folder is importable, its
    dependencies (installed in site-packages) are not."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [sys.executable, "-S", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_a_python_without_recogs_packages_says_so_in_one_line():
    result = without_site_packages("-m", "recog.main", "--list")
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: recog is not installed for {sys.executable} (no JAX found): ")
    fix = "`source .venv/bin/activate`" if (REPO / ".venv").is_dir() else "`pip install -e .`"
    assert fix in line


def test_importing_recog_without_its_packages_raises_with_the_same_advice():
    result = without_site_packages("-c", "import recog")
    assert result.returncode == 1
    assert "ModuleNotFoundError: recog is not installed for" in result.stderr
