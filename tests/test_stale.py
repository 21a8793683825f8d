"""Stale outputs are caught: each committed notebook's stamp (written by `mmlab run --inplace`) must match its code
cells and the mmlab modules its run loaded; otherwise the test names the notebook to re-run."""

from pathlib import Path

import nbformat
import pytest

from mmlab.tools import stamp

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
    nb = _notebook("from mmlab import settings")
    assert stamp.stale(nb) == ["it has no stamp (metadata.mmlab): its outputs were not stored by `mmlab run --inplace`"]
    record = stamp.stamp(nb, ["mmlab", "mmlab.settings"], when="now")
    assert record["when"] == "now" and set(record["library_digest"]) == {"mmlab", "mmlab.settings"}
    assert stamp.stale(nb) == []
    nb.cells[0].source = "# A new heading"  # prose is not code
    nb.cells[1].source = "from mmlab import settings  # a comment is not code"
    assert stamp.stale(nb) == []
    nb.cells[1].source += "\nprint(settings.seed())"
    assert stamp.stale(nb) == ["its code cells changed"]
    nb.cells[1].source = "from mmlab import settings"
    fake = tmp_path / "mmlab"
    fake.mkdir()
    (fake / "__init__.py").write_bytes((stamp.PACKAGE / "__init__.py").read_bytes())
    original = (stamp.PACKAGE / "settings.py").read_text()
    monkeypatch.setattr(stamp, "PACKAGE", fake)
    # A docstring- or comment-only edit of a loaded module leaves the notebook fresh ...
    (fake / "settings.py").write_text(original.replace('"""', '"""Edited docstring. ', 1) + "\n# a new comment\n")
    assert stamp.stale(nb) == []
    # ... a code edit makes it stale, and so does a module that is gone.
    (fake / "settings.py").write_text(original + "\nEDITED = True\n")
    assert stamp.stale(nb) == ["mmlab modules it ran against changed: mmlab.settings"]
    (fake / "settings.py").unlink()
    assert stamp.stale(nb) == ["mmlab modules it ran against changed: mmlab.settings"]


def test_a_printed_function_is_digested_as_printed(monkeypatch):
    """A function the notebook prints with `mmlab.show` is part of the lesson: its docstring edit makes it stale."""
    from mmlab.clip import loss

    nb = _notebook("from mmlab import show")
    stamp.stamp(nb, ["mmlab"], shown=stamp.shown_digests(["mmlab.clip.loss.contrastive_loss"]))
    assert stamp.stale(nb) == []
    monkeypatch.setattr(loss, "contrastive_loss", lambda *a: None)  # another function under the printed name
    assert any("functions it prints changed: mmlab.clip.loss.contrastive_loss" in r for r in stamp.stale(nb))


def test_the_tooling_is_never_in_a_notebook_stamp():
    """The runner, the book and the CLI (mmlab.tools) are not loaded by a notebook's kernel, so they are not in its
    stamp: editing them re-runs nothing. Nor is a module a notebook does not use (exercises import lazily)."""
    for path in NOTEBOOKS:
        modules = nbformat.read(path, as_version=4).metadata.get("mmlab", {}).get("library_digest", {})
        assert modules, path.name
        assert not [m for m in modules if m.startswith("mmlab.tools")], path.name
    stamped = {p.stem[:2]: set(nbformat.read(p, as_version=4).metadata["mmlab"]["library_digest"]) for p in NOTEBOOKS}
    assert "mmlab.ddpm" not in stamped["04"] and "mmlab.attribution" not in stamped["04"]
