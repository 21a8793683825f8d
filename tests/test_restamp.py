"""mmlab.tools.restamp: stored studies are re-stamped only when the re-executed notebook printed the same figures."""

import json

import nbformat

from mmlab.tools import restamp


def _notebook(rows: list[str]) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell('claims.check("x", x, ">", 0)')
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="\n".join(rows) + "\n")]
    return nbformat.v4.new_notebook(cells=[cell])


ROWS = ["claim     colour right                                     0.953  > 0.9  ok",
        "measured  colour minus shape right                        -0.005",
        "measured  our DDIM loop vs diffusers' (speed ratio)           1.437",
        "digits DDPM                           120.5 s"]


def test_figures_are_the_claims_and_measured_rows_without_timings():
    assert restamp.figures(_notebook(ROWS)) == {"claim colour right": "0.953", "measured colour minus shape right": "-0.005"}


def test_a_changed_figure_blocks_the_restamp(tmp_path, monkeypatch):
    now = tmp_path / "01_x.ipynb"
    nbformat.write(_notebook([ROWS[0].replace("0.953", "0.951"), *ROWS[1:]]), now)
    studies = tmp_path / "01_x.json"
    record = {"code_digest": "old", "library_digest": {}, "value": 1}
    studies.write_text(json.dumps({"s": {"0": record}}))
    monkeypatch.setattr(restamp, "_notebook_at", lambda path, rev: _notebook(ROWS))
    lines = restamp.restamp_studies(studies, now, "HEAD", write=True)
    assert "re-run" in lines[0] and "claim colour right" in lines[0]
    assert json.loads(studies.read_text())["s"]["0"] == record  # untouched


def test_a_record_not_current_at_the_revision_is_left_alone(tmp_path, monkeypatch):
    now = tmp_path / "01_x.ipynb"
    nbformat.write(_notebook(ROWS), now)
    studies = tmp_path / "01_x.json"
    record = {"code_digest": "made by other code", "library_digest": {}, "value": 1}
    studies.write_text(json.dumps({"s": {"0": record}}))
    monkeypatch.setattr(restamp, "_notebook_at", lambda path, rev: _notebook(ROWS))
    assert restamp.restamp_studies(studies, now, "HEAD", write=True) == ["  study 's' seed 0: not current at HEAD: re-run"]
    assert json.loads(studies.read_text())["s"]["0"] == record
