"""`mmlab run --smoke`: every cell of every notebook with a few training steps and the claims only reported — what a
Colab or GPU user runs to check the whole path in minutes. About seven minutes of one thread here, so CI runs it
(`MMLAB_SMOKE_TEST=1` in .ci/run) and a reader's `pytest` skips it; run it by hand with `mmlab run --smoke`."""

import json
import os

import pytest

from mmlab.tools import cli


@pytest.mark.skipif(os.environ.get("MMLAB_SMOKE_TEST") != "1",
                    reason="about 7 minutes: CI runs it (MMLAB_SMOKE_TEST=1); by hand: mmlab run --smoke")
def test_every_notebook_runs_green_with_a_few_training_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path / "cache"))  # a smoke model has its own key; keep it out of the cache too
    code = cli.main(["run", "--smoke", "--jobs", "1", "--no-progress", "--build", str(tmp_path / "book")])
    summary = json.loads((tmp_path / "book" / "summary.json").read_text())
    assert code == 0, summary
    runs = summary  # one entry per notebook
    assert len(runs) == 5 and all(run["status"] == "ok" for run in runs), runs
    assert all(run["report"]["claims"] for run in runs)  # every claims cell ran, reporting instead of asserting


def test_smoke_outputs_are_never_stored():
    with pytest.raises(SystemExit, match="must not be stored"):
        cli.main(["run", "--smoke", "--inplace", "01"])


def test_smoke_never_runs_the_stored_studies():
    with pytest.raises(SystemExit, match="studies"):
        cli.main(["run", "--smoke", "--studies", "01"])
