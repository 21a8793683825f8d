import json

import nbformat
import pytest

from mmlab import cli


def _nb(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 问题 / The question\nanswer")] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)


@pytest.fixture
def nbdir(tmp_path):
    d = tmp_path / "notebooks"
    d.mkdir()
    _nb(d / "01_ok.ipynb", ["x = 40 + 2", "print(x)"])
    _nb(d / "02_bad.ipynb", ["y = 1", "raise ValueError('boom here')", "print('never')"])
    return d


def test_list(nbdir, capsys):
    assert cli.main(["list", "--dir", str(nbdir)]) == 0
    out = capsys.readouterr().out
    assert "01_ok" in out and "问题 / The question" in out and "02_bad" in out


def test_run_ok_writes_book_and_inplace(nbdir, tmp_path, capsys):
    build = tmp_path / "build"
    code = cli.main(["run", "01", "--dir", str(nbdir), "--build", str(build), "--inplace", "--no-progress"])
    assert code == 0
    assert (build / "01_ok.html").exists() and "01_ok" in (build / "index.html").read_text()
    summary = json.loads((build / "summary.json").read_text())
    assert summary[0]["status"] == "ok" and summary[0]["seconds"] > 0
    nb = nbformat.read(nbdir / "01_ok.ipynb", as_version=4)
    assert nb.cells[2].outputs[0]["text"] == "42\n"  # executed outputs stored back


def test_run_failure_names_notebook_and_cell(nbdir, tmp_path, capsys):
    build = tmp_path / "build"
    code = cli.main(["run", "--dir", str(nbdir), "--build", str(build), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "02_bad.ipynb" in err and "cell 2" in err and "boom here" in err
    summary = {r["name"]: r for r in json.loads((build / "summary.json").read_text())}
    assert summary["01_ok"]["status"] == "ok" and summary["02_bad"]["status"] == "failed"


def test_unknown_name(nbdir):
    with pytest.raises(SystemExit, match="matches 0 notebooks"):
        cli.main(["run", "nope", "--dir", str(nbdir)])
