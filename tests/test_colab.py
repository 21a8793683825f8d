"""The Colab set-up cell: identical in every notebook, installs this release from the repository named in
pyproject.toml, runs once (a second run is a no-op), and does nothing outside Colab."""

import importlib.util
import re
import subprocess
import sys
import types
from pathlib import Path

import nbformat


def toml_module():
    """``tomllib`` (Python >= 3.11), else its PyPI original ``tomli`` (the dev extra installs it)."""
    try:
        import tomllib
    except ImportError:
        import tomli as tomllib
    return tomllib


tomllib = toml_module()

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
REPO = PYPROJECT["project"]["urls"]["Repository"]
VERSION = PYPROJECT["project"]["version"]


def setup_cell(path):
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code" and c.source.startswith("# Colab set-up")]
    assert len(cells) == 1, f"{path.name}: expected one Colab set-up cell, found {len(cells)}"
    return cells[0].source


def test_five_notebooks_share_one_setup_cell():
    assert len(NOTEBOOKS) == 5
    sources = {setup_cell(p) for p in NOTEBOOKS}
    assert len(sources) == 1, "the set-up cell must be identical in every notebook"


def test_setup_cell_installs_this_release_from_the_repository():
    source = setup_cell(NOTEBOOKS[0])
    (spec,) = re.findall(r'"mmlab @ git\+([^"@]+)@v([^"]+)"', source)
    assert spec == (REPO, VERSION), f"set-up cell installs {spec}, pyproject says {(REPO, VERSION)}"
    import mmlab

    assert mmlab.__version__ == VERSION


def test_readme_badges_point_at_the_repository():
    readme = (ROOT / "README.md").read_text()
    owner_repo = REPO.removeprefix("https://github.com/")
    for path in NOTEBOOKS:
        badge = f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{path.name}"
        assert badge in readme, f"README has no Open-in-Colab badge for {path.name} at {badge}"


def _run_setup(monkeypatch, colab: bool):
    """Execute the set-up cell twice with subprocess.run recorded and (optionally) google.colab faked."""
    calls = []
    installed = {"mmlab": not colab}  # on Colab mmlab is not installed until the cell runs

    def fake_run(cmd, check=False, **kwargs):
        calls.append(cmd)
        installed["mmlab"] = True
        return subprocess.CompletedProcess(cmd, 0)

    real_find_spec = importlib.util.find_spec

    def fake_find_spec(name, *args):
        if name == "mmlab":
            return real_find_spec(name) if installed["mmlab"] else None
        return real_find_spec(name, *args)

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    source = setup_cell(NOTEBOOKS[0])
    for _ in range(2):
        exec(compile(source, "setup-cell", "exec"), {})
    return calls


def test_setup_cell_on_colab_installs_once(monkeypatch):
    calls = _run_setup(monkeypatch, colab=True)
    assert calls == [[sys.executable, "-m", "pip", "install", "-q", f"mmlab @ git+{REPO}@v{VERSION}"]]
    assert not any("-U" in c or "--upgrade" in c for c in calls[0]), "never upgrade what Colab already has"


def test_setup_cell_elsewhere_does_nothing(monkeypatch):
    assert _run_setup(monkeypatch, colab=False) == []


def test_pyproject_is_read_without_tomllib(monkeypatch):
    """On Python 3.10 there is no tomllib: the fallback reads the same project table."""
    monkeypatch.setitem(sys.modules, "tomllib", None)  # `import tomllib` raises ImportError
    reader = toml_module()
    assert reader.__name__ == "tomli"
    assert reader.loads((ROOT / "pyproject.toml").read_text())["project"] == PYPROJECT["project"]
