"""The README's first command as written: `digits_cnn` trains, then `recog.eval` evaluates it, to
the accuracy the README and the experiment's docstring claim (about 99%, at least 98%)."""

from conftest import read_jsonl, run_binary


def test_the_readme_main_job_reaches_the_accuracy_it_claims(tmp_path):
    workdir = tmp_path / "digits_cnn"
    trained = run_binary("main", "--experiment=digits_cnn", f"--workdir={workdir}")
    assert trained.returncode == 0, trained.stderr[-3000:]
    evaluated = run_binary("eval", f"--workdir={workdir}", "--once")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (row,) = read_jsonl(workdir / "eval" / "metrics.jsonl")
    assert row["step"] == 600 and row["num_examples"] == 360
    assert row["accuracy"] >= 0.98, row
