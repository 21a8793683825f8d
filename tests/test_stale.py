"""Stale outputs are caught: each committed notebook's stamp (written by `mmlab run --inplace`) must match its code
cells and the mmlab modules its run loaded; otherwise the test names the notebook to re-run."""

from pathlib import Path

import nbformat
import pytest

from mmlab import stamp

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_outputs_come_from_the_current_code(path):
    reasons = stamp.stale(nbformat.read(path, as_version=4))
    assert not reasons, f"{path.name} is stale: {'; '.join(reasons)}. Re-run `mmlab run --inplace {path.stem[:2]}`"


def _notebook(code):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Q"), nbformat.v4.new_code_cell(code)]
    return nb


def test_stamp_names_what_changed(tmp_path, monkeypatch):
    nb = _notebook("from mmlab import runtime")
    assert stamp.stale(nb) == ["it has no stamp (metadata.mmlab): its outputs were not stored by `mmlab run --inplace`"]
    record = stamp.stamp(nb, ["mmlab", "mmlab.runtime"], when="now")
    assert record["when"] == "now" and set(record["library_sha256"]) == {"mmlab", "mmlab.runtime"}
    assert stamp.stale(nb) == []
    nb.cells[0].source = "# A new heading"  # prose is not code
    assert stamp.stale(nb) == []
    nb.cells[1].source += "\nprint(runtime.seed())"
    assert stamp.stale(nb) == ["its code cells changed"]
    nb.cells[1].source = "from mmlab import runtime"
    fake = tmp_path / "mmlab"
    fake.mkdir()
    (fake / "__init__.py").write_bytes((stamp.PACKAGE / "__init__.py").read_bytes())
    (fake / "runtime.py").write_text("# edited\n")
    monkeypatch.setattr(stamp, "PACKAGE", fake)
    assert stamp.stale(nb) == ["mmlab modules it ran against changed: mmlab.runtime"]
    (fake / "runtime.py").unlink()
    assert stamp.stale(nb) == ["mmlab modules it ran against changed: mmlab.runtime"]  # a module that is gone


def test_markdown_only_edits_and_the_runner_do_not_make_notebooks_stale():
    """The runner, the book and the CLI are not loaded by a notebook's kernel, so they are not in its stamp."""
    for path in NOTEBOOKS:
        modules = nbformat.read(path, as_version=4).metadata.get("mmlab", {}).get("library_sha256", {})
        assert not {"mmlab.cli", "mmlab.runner", "mmlab.book", "mmlab.stamp"} & set(modules), path.name
