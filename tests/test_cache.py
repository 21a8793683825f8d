"""Faults injected into the one cached-artefact helper: corruption of every file kind, SIGKILL mid-write, two
processes at once, an unusable cache folder, a write failing part-way. After each, the next call recovers and the
folder on disk is the old complete artefact or the new complete one."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mmlab import cache

RECIPE = {"kind": "toy", "size": 3}


def build(value=1.0):
    return {"weight": torch.full((64, 64), value), "bias": torch.arange(5.0)}


def save(obj, folder: Path):
    save_file(obj, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"shape": [64, 64]}))


def load(folder: Path):
    json.loads((folder / "config.json").read_text())  # a broken config must not load
    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def counted_build(calls):
    def fn():
        calls.append(1)
        return build()
    return fn


def test_builds_once_then_loads():
    calls = []
    first = cache.cached("toy", RECIPE, counted_build(calls), save, load)
    second = cache.cached("toy", RECIPE, counted_build(calls), save, load)
    assert len(calls) == 1 and torch.equal(first["weight"], second["weight"])
    folder = cache.artefact_dir("toy", RECIPE)
    assert cache.verify(folder) is None and (folder / cache.MANIFEST).is_file()
    assert cache.artefact_dir("toy", {**RECIPE, "size": 4}) != folder  # another recipe, another folder


def _truncate(p: Path):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip(p: Path):
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


@pytest.mark.parametrize("fault", [_truncate, _flip, Path.unlink])
@pytest.mark.parametrize("file", ["model.safetensors", "config.json", cache.MANIFEST])
def test_damaged_file_is_detected_and_rebuilt(file, fault, capsys):
    calls = []
    cache.cached("toy", RECIPE, counted_build(calls), save, load)
    folder = cache.artefact_dir("toy", RECIPE)
    fault(folder / file)
    again = cache.cached("toy", RECIPE, counted_build(calls), save, load)
    assert len(calls) == 2, "a damaged artefact must be rebuilt, never loaded"
    assert "removing it and rebuilding" in capsys.readouterr().out
    assert torch.equal(again["weight"], build()["weight"]) and cache.verify(folder) is None


def test_extra_format_is_rebuilt():
    calls = []
    cache.cached("toy", RECIPE, counted_build(calls), save, load)
    folder = cache.artefact_dir("toy", RECIPE)
    manifest = json.loads((folder / cache.MANIFEST).read_text())
    (folder / cache.MANIFEST).write_text(json.dumps({**manifest, "format": 0}))
    cache.cached("toy", RECIPE, counted_build(calls), save, load)
    assert len(calls) == 2


WRITER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import torch
    from safetensors.torch import save_file
    from mmlab import cache
    marker, mode = Path(sys.argv[1]), sys.argv[2]
    def build():
        return {"weight": torch.full((64, 64), 2.0)}
    def save(obj, folder):
        save_file(obj, str(folder / "model.safetensors"))
        if mode == "slow":
            marker.write_text("writing")
            time.sleep(60)
        (folder / "config.json").write_text("{}")
    def load(folder):
        from safetensors.torch import load_file
        return load_file(str(folder / "model.safetensors"))
    if mode == "count":
        def build():
            with open(marker, "a") as f:
                f.write("built\\n")
            time.sleep(2)
            return {"weight": torch.full((64, 64), 2.0)}
    out = cache.cached("toy", {"kind": "toy", "size": 3}, build, save, load, retrain=(mode == "slow" and len(sys.argv) > 3))
    print(float(out["weight"][0, 0]))
""")


def _writer(tmp_path, marker, mode, *extra):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    return subprocess.Popen([sys.executable, str(script), str(marker), mode, *extra], env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_when_writing(proc, marker):
    deadline = time.time() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "timeout: the writer never started writing"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_during_first_write_leaves_nothing_half_written(tmp_path, tmp_cache):
    marker = tmp_path / "marker"
    _kill_when_writing(_writer(tmp_path, marker, "slow"), marker)
    folder = cache.artefact_dir("toy", RECIPE)
    assert not folder.exists(), "a killed write must not leave the artefact folder"
    assert list(tmp_cache.glob(".toy-*.tmp")), "the half-written temporary folder is what remains"
    calls = []
    out = cache.cached("toy", RECIPE, counted_build(calls), save, load)
    assert len(calls) == 1 and torch.equal(out["weight"], build()["weight"])
    assert not list(tmp_cache.glob(".toy-*.tmp")), "the next run removes what the killed one left"


def test_sigkill_during_replacement_keeps_the_old_artefact(tmp_path):
    cache.cached("toy", RECIPE, lambda: build(1.0), save, load)
    marker = tmp_path / "marker"
    _kill_when_writing(_writer(tmp_path, marker, "slow", "retrain"), marker)
    folder = cache.artefact_dir("toy", RECIPE)
    assert cache.verify(folder) is None and float(load(folder)["weight"][0, 0]) == 1.0  # old, complete
    calls = []
    out = cache.cached("toy", RECIPE, counted_build(calls), save, load)
    assert calls == [] and float(out["weight"][0, 0]) == 1.0


def test_two_processes_train_once(tmp_path):
    marker = tmp_path / "builds"
    procs = [_writer(tmp_path, marker, "count") for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    assert marker.read_text().count("built") == 1, "the second process must wait and load, not train again"
    assert [o[0].strip() for o in outs] == ["2.0", "2.0"]


@pytest.mark.parametrize("error", [PermissionError(errno.EACCES, "Permission denied"),
                                   OSError(errno.ENOSPC, "No space left on device")])
def test_write_failing_part_way_falls_back_and_recovers(error, capsys):
    state = {"fail": True}

    def failing_save(obj, folder):
        save(obj, folder)
        if state.pop("fail", False):
            raise error

    with pytest.warns(UserWarning, match="MMLAB_CACHE"):
        out = cache.cached("toy", RECIPE, build, failing_save, load)
    assert torch.equal(out["weight"], build()["weight"])  # the result is not lost
    folder = cache.artefact_dir("toy", RECIPE)
    assert not folder.exists() and not list(folder.parent.glob(".toy-*.tmp"))  # nothing half-written stays
    calls = []
    cache.cached("toy", RECIPE, counted_build(calls), save, load)
    assert len(calls) == 1 and cache.verify(folder) is None


def test_unusable_cache_folder_gives_one_clear_warning(tmp_path, monkeypatch):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    monkeypatch.setenv("MMLAB_CACHE", str(not_a_dir / "sub"))
    with pytest.warns(UserWarning, match="MMLAB_CACHE"):
        out = cache.cached("toy", RECIPE, build, save, load)
    assert torch.equal(out["bias"], build()["bias"])


def test_store_then_cached_loads_without_building():
    folder = cache.store("toy", RECIPE, build(3.0), save)
    assert cache.verify(folder) is None
    out = cache.cached("toy", RECIPE, lambda: pytest.fail("must load the stored artefact"), save, load)
    assert float(out["weight"][0, 0]) == 3.0


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", None])
def test_bad_name(name):
    with pytest.raises(ValueError, match="name"):
        cache.artefact_dir(name, RECIPE)
