"""The README's first command as written: `digits_cnn` trains, then `recog.eval` evaluates it, to
the accuracy the README and the experiment's docstring claim (about 99%, at least 98%), on one
CPU device as a laptop has (the suite's 8 simulated ones took 48 s here instead of 37)."""

from conftest import env_with_devices, read_jsonl, run_binary

LAPTOP = env_with_devices(1)


def test_the_readme_main_job_reaches_the_accuracy_it_claims(tmp_path):
    workdir = tmp_path / "digits_cnn"
    trained = run_binary("main", "--experiment=digits_cnn", f"--workdir={workdir}", env=LAPTOP)
    assert trained.returncode == 0, trained.stderr[-3000:]
    evaluated = run_binary("eval", f"--workdir={workdir}", "--once", env=LAPTOP)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (row,) = read_jsonl(workdir / "eval" / "metrics.jsonl")
    assert row["step"] == 600 and row["num_examples"] == 360
    assert row["accuracy"] >= 0.98, row
