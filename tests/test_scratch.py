"""Kernels' temporary files go to a private folder that is removed when the kernel is done, also when it was killed."""

import os
import subprocess
import sys
import threading
import time
import types

import nbformat
import pytest

from mmlab.tools import runner, scratch


def test_make_names_the_folder_after_its_owner(tmp_path):
    folder = scratch.make("mmlab-t-", tmp_path)
    assert folder.is_dir() and folder.parent == tmp_path and folder.name.startswith(f"mmlab-t-{os.getpid()}-")
    assert not any(folder.iterdir())


def test_sweep_removes_only_the_folders_of_dead_owners(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    orphan = tmp_path / f"mmlab-t-{int(dead.stdout)}-abc"
    mine = tmp_path / f"mmlab-t-{os.getpid()}-def"
    other = tmp_path / "mmlab-t-notapid"
    for folder in (orphan, mine, other):
        folder.mkdir()
        (folder / "f").write_text("x")
    assert scratch.sweep("mmlab-t-", tmp_path) == [orphan]
    assert not orphan.exists() and mine.exists() and other.exists()
    fresh = scratch.make("mmlab-t-", tmp_path)  # make sweeps too, and keeps the live owner's
    assert fresh.is_dir() and mine.exists() and fresh != mine


@pytest.mark.parametrize("prefix", ["", "a/b"])
def test_make_rejects_a_bad_prefix(prefix, tmp_path):
    with pytest.raises(ValueError, match="prefix"):
        scratch.make(prefix, tmp_path)


def _notebook(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)


def test_a_kernels_tmpdir_is_private_and_gone_after_the_run(tmp_path):
    seen = tmp_path / "seen.txt"
    _notebook(tmp_path / "nb.ipynb", [
        "import os, tempfile\nfolder = tempfile.mkdtemp()  # never removed by the notebook\n"
        "open(os.path.join(folder, 'big.bin'), 'wb').write(b'x' * 10000)\n"
        f"open({str(seen)!r}, 'w').write(tempfile.gettempdir() + '\\n' + folder)"])
    _, result = runner.execute(tmp_path / "nb.ipynb", progress=False)
    assert result.status == "ok", result.error
    tmpdir, folder = seen.read_text().splitlines()
    assert os.path.basename(tmpdir).startswith("mmlab-kernel-") and folder.startswith(tmpdir)
    assert not os.path.exists(tmpdir)


def test_a_killed_kernels_tmpdir_is_gone_too(tmp_path):
    seen = tmp_path / "seen.txt"
    _notebook(tmp_path / "slow.ipynb", [
        "import tempfile\nstore = tempfile.TemporaryDirectory()  # removed at a clean exit only\n"
        f"open({str(seen)!r}, 'w').write(store.name)",
        "import time\ntime.sleep(120)"])
    stop = threading.Event()
    out = {}
    worker = threading.Thread(target=lambda: out.update(result=runner.execute(tmp_path / "slow.ipynb", progress=False, stop=stop)[1]))
    worker.start()
    deadline = time.time() + 60
    while not seen.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert seen.exists(), "the kernel did not start"
    stop.set()
    worker.join(60)
    assert out["result"].status == "interrupted"
    assert not os.path.exists(seen.read_text())


def test_pytest_gives_the_session_a_tmpdir_and_removes_it(monkeypatch):
    import conftest

    monkeypatch.setenv("TMPDIR", "/tmp")
    monkeypatch.setenv("MMLAB_THREADS", os.environ.get("MMLAB_THREADS", "1"))  # keep this process's thread count
    config = types.SimpleNamespace()
    conftest.pytest_configure(config)
    folder = os.environ["TMPDIR"]
    assert os.path.isdir(folder) and os.path.basename(folder).startswith("mmlab-pytest-")
    with open(os.path.join(folder, "left-by-a-killed-kernel"), "w") as f:
        f.write("x")
    conftest.pytest_unconfigure(config)
    assert not os.path.exists(folder) and os.environ["TMPDIR"] == "/tmp"
