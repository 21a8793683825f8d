"""Optional studies (mmlab.studies): run and stored with MMLAB_STUDIES=1, shown from the store otherwise, refused when
their code changed; and the committed notebooks' stored studies come from their current code."""

import json
import re
from pathlib import Path

import nbformat
import pytest
import transformers

from mmlab import studies
from mmlab.provenance import cells_digest
from mmlab.tools import stamp

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def _study():
    return {"InfoNCE 4": [0.25, 1.5]}


def _other_study():
    return {"InfoNCE 4": [0.75, 1.5]}


@pytest.fixture
def beside_a_notebook(tmp_path, monkeypatch):
    """A working folder holding 01_toy.ipynb, as a kernel runs beside its notebook."""
    monkeypatch.chdir(tmp_path)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Q"), nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell('small = studies.run("01_toy", "small batch", study)'),
                nbformat.v4.new_code_cell("y = 2")]
    nbformat.write(nb, tmp_path / "01_toy.ipynb")
    monkeypatch.delenv("MMLAB_SEED", raising=False)
    return tmp_path


def test_runs_and_stores_when_on_shows_the_stored_result_when_off(beside_a_notebook, monkeypatch):
    monkeypatch.setenv("MMLAB_STUDIES", "1")
    live = studies.run("01_toy", "small batch", _study)
    assert live.live and live.value == {"InfoNCE 4": [0.25, 1.5]} and "ran here" in live.label
    stored = json.loads((beside_a_notebook / "studies" / "01_toy.json").read_text())
    record = stored["small batch"]["0"]
    nb = nbformat.read(beside_a_notebook / "01_toy.ipynb", as_version=4)
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    assert record["code_digest"] == cells_digest(sources[:2])  # the code up to the cell that runs the study
    assert "mmlab.studies" in record["library_digest"] and "def _study" in record["source"]
    assert record["versions"]["transformers"] == transformers.__version__  # a new release can move a figure
    assert stamp.stale_studies(nb, stored) == []

    monkeypatch.delenv("MMLAB_STUDIES")
    shown = studies.run("01_toy", "small batch", _study)
    assert not shown.live and shown.value == live.value
    assert "stored run, seed 0" in shown.label and "MMLAB_STUDIES=1 runs it here" in shown.label
    assert record["when"] not in shown.label and record["machine"] not in shown.label  # no machine history in a lesson
    monkeypatch.setenv("MMLAB_SEED", "3")  # no run stored for seed 3: seed 0's, and the label says so
    assert "none stored for this run's seed 3" in studies.run("01_toy", "small batch", _study).label


def test_a_changed_or_missing_study_is_refused_by_name(beside_a_notebook, monkeypatch):
    with pytest.raises(LookupError, match="no stored result of study 'small batch'.*MMLAB_STUDIES=1"):
        studies.run("01_toy", "small batch", _study)
    monkeypatch.setenv("MMLAB_STUDIES", "1")
    studies.run("01_toy", "small batch", _study)
    monkeypatch.delenv("MMLAB_STUDIES")
    with pytest.raises(ValueError, match="study 'small batch' changed since its stored run"):
        studies.run("01_toy", "small batch", _other_study)
    with pytest.raises(TypeError, match="fn must be a function"):
        studies.run("01_toy", "small batch", {"not": "callable"})


def test_stale_names_a_code_or_library_change(beside_a_notebook, monkeypatch):
    monkeypatch.setenv("MMLAB_STUDIES", "1")
    studies.run("01_toy", "small batch", _study)
    stored = studies.load("01_toy")
    nb = nbformat.read(beside_a_notebook / "01_toy.ipynb", as_version=4)
    nb.cells[0].source = "# prose is not code"
    nb.cells[3].source = "y = 3"  # a cell below the study cannot change its result
    nb.cells[1].source = "x = 1  # a comment is not code"
    assert stamp.stale_studies(nb, stored) == []
    nb.cells[1].source = "x = 2"
    assert stamp.stale_studies(nb, stored) == ["study 'small batch' (seed 0): the notebook's code up to the study changed since it ran"]
    nb.cells[1].source = "x = 1"
    stored["small batch"]["0"]["library_digest"]["mmlab.studies"] = "0" * 64
    assert stamp.stale_studies(nb, stored) == ["study 'small batch' (seed 0): mmlab modules it ran against changed: mmlab.studies"]


def test_a_run_of_new_code_drops_other_seeds_runs_of_the_old(beside_a_notebook, monkeypatch):
    monkeypatch.setenv("MMLAB_STUDIES", "1")
    for s in ("1", "2"):
        monkeypatch.setenv("MMLAB_SEED", s)
        studies.run("01_toy", "small batch", _study)
    assert set(studies.load("01_toy")["small batch"]) == {"1", "2"}
    nb = nbformat.read(beside_a_notebook / "01_toy.ipynb", as_version=4)
    nb.cells[1].source = "x = 3"
    nbformat.write(nb, beside_a_notebook / "01_toy.ipynb")
    studies.run("01_toy", "small batch", _study)  # seed 2, new code
    assert set(studies.load("01_toy")["small batch"]) == {"2"}


def test_a_value_that_is_not_plain_data_writes_nothing(beside_a_notebook, monkeypatch):
    monkeypatch.setenv("MMLAB_STUDIES", "1")
    with pytest.raises(TypeError):
        studies.run("01_toy", "tensor", lambda: {"x": object()})
    assert not (beside_a_notebook / "studies" / "01_toy.json").exists()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_studies_come_from_the_current_code(path):
    """Every stored study of a committed notebook ran against its current code cells and mmlab modules, and every
    study the notebook calls has a stored run (CI shows stored results: they must be this code's)."""
    stored = studies.load(path.stem, path.parent / "studies")
    nb = nbformat.read(path, as_version=4)
    reasons = stamp.stale_studies(nb, stored)
    assert not reasons, f"{path.name}: {'; '.join(reasons)}. Re-run `mmlab run --studies --inplace {path.stem[:2]}`"
    called = [name for cell in nb.cells if cell.cell_type == "code"
              for name in re.findall(r'studies\.run\("[^"]+", "([^"]+)"', cell.source)]
    assert all(name in stored and "0" in stored[name] for name in called), (called, sorted(stored))
