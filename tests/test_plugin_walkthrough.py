"""docs/plugins.md's "Adding a model plugin", as a newcomer follows it start to end: its code blocks
become the files, its commands run as written from a scratch directory (training shortened to 2
steps), the package is installed with pip into a virtual environment of its own (which sees this
environment's packages, recog included, through a .pth file)."""

import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path
from subprocess import PIPE

from conftest import REPO
from PIL import Image

SHORT_RUN = (
    "--config.num_steps=2",
    "--config.log_every=1",
    "--config.eval_every=2",
    "--config.checkpoint_every=2",
)


def walkthrough() -> tuple[str, str, list[list[str]]]:
    """The section's plugin module, pyproject.toml and commands, in order."""
    readme = (REPO / "docs" / "plugins.md").read_text()
    section = readme.split("### Adding a model plugin")[1].split("\n### ")[0]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, re.S)
    (module,) = [body for lang, body in blocks if lang == "python"]
    (pyproject,) = [body for lang, body in blocks if lang == "toml"]
    commands = [
        shlex.split(line, comments=True)
        for lang, body in blocks
        if lang == "bash"
        for line in body.replace("\\\n", " ").splitlines()
    ]
    return module, pyproject, [command for command in commands if command]


def make_venv(folder: Path) -> Path:
    """A virtual environment that sees this one's packages (and runs their .pth files, so that
    an editable recog stays importable); what pip installs into it stays there."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    query = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = subprocess.run([python, "-c", query], capture_output=True, text=True, check=True)
    ours = dict.fromkeys(sysconfig.get_path(key) for key in ("purelib", "platlib"))
    lines = "".join(f"import site; site.addsitedir({path!r})\n" for path in ours)
    Path(purelib.stdout.strip(), "recog_walkthrough.pth").write_text(lines)
    return python


def run_side_by_side(commands: list[list[str]], cwd: Path) -> list[str]:
    """Runs commands at once (they are independent), as a newcomer's machine would, with its
    one CPU device; returns their stdout and stderr each, asserting that they succeeded."""
    env = {**os.environ, "XLA_FLAGS": ""}
    started = [
        subprocess.Popen(command, cwd=cwd, env=env, stdout=PIPE, stderr=PIPE, text=True)
        for command in commands
    ]
    outputs = []
    for command, process in zip(commands, started, strict=True):
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, f"{command} failed:\n{stderr[-3000:]}"
        outputs.append(stdout + stderr)
    return outputs


def test_readme_model_plugin_walkthrough(tmp_path):
    """Steps 2 and 3 of the walkthrough, the install, step 4; then step 3's run predicts from
    another directory with the module installed too: the plugin path that the run recorded is
    absolute, and the two copies of the module load once."""
    module, pyproject, commands = walkthrough()
    scratch = (tmp_path / "newcomer").resolve()
    python = make_venv(scratch / ".venv")
    (scratch / "path" / "to").mkdir(parents=True)
    (scratch / "path" / "to" / "my_model.py").write_text(module)
    (install,) = [command for command in commands if command[:2] == ["pip", "install"]]
    before, after = commands[: commands.index(install)], commands[commands.index(install) + 1 :]
    recog_commands = []
    for command in (*before, *after):
        assert command[:2] == ["python", "-m"], command
        short = SHORT_RUN if any(arg.startswith("--experiment=") for arg in command) else ()
        recog_commands.append([python, *command[1:], *short])
    list_path, train_path, evaluate, list_installed, train_installed = recog_commands

    listed, trained = run_side_by_side([list_path, train_path], scratch)
    (evaluated,) = run_side_by_side([evaluate], scratch)
    package = scratch / install[-1]
    (package / "my_recog_models").mkdir(parents=True)
    (package / "pyproject.toml").write_text(pyproject)
    (package / "my_recog_models" / "__init__.py").write_text("")
    (package / "my_recog_models" / "plain_cnn.py").write_text(module)
    offline = ["--no-build-isolation", "--no-index", "--no-deps", "-q"]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", str(python)]
    run_side_by_side([[*pip, "install", *offline, *install[2:]]], scratch)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    image = elsewhere / "blank.png"
    Image.new("L", (8, 8)).save(image)
    workdir = scratch / "workdirs" / "plain_cnn"
    predict = [python, "-m", "recog.predict", f"--workdir={workdir}", "--format=json", str(image)]
    listed_installed, trained_installed = run_side_by_side(
        [list_installed, train_installed], scratch
    )
    (predicted,) = run_side_by_side([predict], elsewhere)

    assert re.search(r"plain_cnn +0\.\d\dM", listed)
    assert f"plugin {scratch / 'path/to/my_model.py'} (from --plugins)" in listed
    assert "plugin entry-point:my_recog_models.plain_cnn (from entry point" in listed_installed
    assert "Done: step 2" in trained and "Done: step 2" in trained_installed
    assert '"step": 2' in evaluated
    config = json.loads((workdir / "config.json").read_text())
    assert config["plugins"] == [str(scratch / "path" / "to" / "my_model.py")]
    assert f'{{"path": "{image}", "top": [' in predicted
