import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import nbformat
import pytest
import torch
import transformers

from mmlab.tools import cli, lanes


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


def test_empty_folder_and_unwritable_build_are_one_line_errors(nbdir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no notebooks"):
        cli.main(["list", "--dir", str(empty)])
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit, match="cannot write the book to --book"):
        cli.main(["run", "01", "--dir", str(nbdir), "--build", str(blocker / "book"), "--no-progress"])


def _wait_for(path, proc, seconds=120):
    deadline = time.time() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"timeout: {path} never appeared"
        time.sleep(0.1)


def test_ctrl_c_stops_the_kernel_and_leaves_notebooks_intact(tmp_path):
    """SIGINT during `mmlab run --inplace`: exit 130, every notebook byte-identical, the index says what did not
    finish, and no kernel process is left behind."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    marker, pid_file = tmp_path / "started", tmp_path / "kernel.pid"
    _nb(folder / "01_quick.ipynb", ["print('fine')"])
    _nb(folder / "02_slow.ipynb", [f"import os, pathlib, time\npathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))\n"
                                   f"pathlib.Path({str(marker)!r}).write_text('x')\ntime.sleep(120)"])
    _nb(folder / "03_never.ipynb", ["print('never reached')"])
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    build = tmp_path / "book"
    proc = subprocess.Popen([sys.executable, "-m", "mmlab.tools.cli", "run", "--inplace", "--no-progress", "--dir", str(folder),
                             "--build", str(build)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(marker, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert after["02_slow.ipynb"] == before["02_slow.ipynb"] and after["03_never.ipynb"] == before["03_never.ipynb"]
    assert after["01_quick.ipynb"] != before["01_quick.ipynb"]  # the finished one was stored (whole)
    nbformat.read(folder / "01_quick.ipynb", as_version=4)
    summary = {r["name"]: r["status"] for r in json.loads((build / "summary.json").read_text())}
    assert summary == {"01_quick": "ok", "02_slow": "interrupted", "03_never": "interrupted"}
    assert "interrupted" in (build / "index.html").read_text()
    _assert_gone(int(pid_file.read_text()))


def _assert_gone(pid, seconds=10):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    pytest.fail(f"kernel process {pid} is still alive after Ctrl-C")


def test_jobs_run_notebooks_side_by_side_on_a_share_of_the_cores(tmp_path, monkeypatch):
    """`mmlab run --jobs 2`: two kernels at once (each waits for the other's marker, so this fails when they run one
    after the other), each told to use half the cores; summary and book as in a sequential run."""
    monkeypatch.delenv("MMLAB_THREADS", raising=False)
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for me, other in (("a", "b"), ("b", "a")):
        _nb(folder / f"0{'1' if me == 'a' else '2'}_{me}.ipynb", [
            f"import os, pathlib, time\npathlib.Path({str(tmp_path / me)!r}).write_text(os.environ.get('MMLAB_THREADS', ''))\n"
            f"deadline = time.time() + 60\nwhile not pathlib.Path({str(tmp_path / other)!r}).exists():\n"
            f"    assert time.time() < deadline, 'the other notebook never started: not side by side'\n    time.sleep(0.1)",
            "print('both ran')"])
    build = tmp_path / "book"
    assert cli.main(["run", "--jobs", "2", "--dir", str(folder), "--build", str(build), "--no-progress"]) == 0
    summary = json.loads((build / "summary.json").read_text())
    assert [(r["name"], r["status"]) for r in summary] == [("01_a", "ok"), ("02_b", "ok")]
    expected = str(max(1, min(lanes.MAX_THREADS, lanes.cores() // 2)))
    assert (tmp_path / "a").read_text() == expected and (tmp_path / "b").read_text() == expected
    assert (build / "01_a.html").exists() and (build / "02_b.html").exists()


def test_jobs_keep_an_explicit_thread_count_and_reject_zero(monkeypatch):
    monkeypatch.setenv("MMLAB_THREADS", "3")
    assert "MMLAB_THREADS" not in lanes.lane_env(2)  # the caller's MMLAB_THREADS reaches the kernels unchanged
    monkeypatch.delenv("MMLAB_THREADS")
    assert lanes.lane_env(2, {"MMLAB_SEED": "1"})["MMLAB_SEED"] == "1"
    with pytest.raises(SystemExit, match="--jobs must be a positive integer"):
        cli.run([], cli.Path("unused"), jobs=0)


@pytest.mark.parametrize("cores, jobs, threads", [(1, 1, None), (2, 1, None), (2, 2, "1"), (4, 2, "2"), (8, 2, "2"),
                                                  (8, 1, "2"), (16, 3, "2"), (3, 2, "1")])
def test_kernels_get_at_most_the_thread_counts_the_seed_tables_checked(monkeypatch, cores, jobs, threads):
    """A thread count acts like a seed: past MAX_THREADS (2) no seed table checked the figures (01 and 02 each missed a
    bar at one seed on 4 threads), so `mmlab run` gives a kernel its share of the cores, at most 2."""
    monkeypatch.delenv("MMLAB_THREADS", raising=False)
    monkeypatch.setattr(lanes, "cores", lambda: cores)
    env = lanes.lane_env(jobs)
    assert env.get("MMLAB_THREADS") == threads and env.get("OMP_NUM_THREADS") == threads


def test_ctrl_c_with_jobs_stops_every_kernel_and_leaves_notebooks_intact(tmp_path):
    """SIGINT during `mmlab run --jobs 2 --inplace`: the two running kernels are killed, the queued notebook never
    starts, the finished one is stored whole, the others are byte-identical, exit 130."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _nb(folder / "01_quick.ipynb", ["print('fine')"])
    for name in ("02_slow", "03_slow"):
        _nb(folder / f"{name}.ipynb", [f"import os, pathlib, time\npathlib.Path({str(tmp_path / name)!r} + '.pid')"
                                       f".write_text(str(os.getpid()))\ntime.sleep(120)"])
    never = tmp_path / "never"
    _nb(folder / "04_never.ipynb", [f"import pathlib\npathlib.Path({str(never)!r}).write_text('x')"])
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    build = tmp_path / "book"
    proc = subprocess.Popen([sys.executable, "-m", "mmlab.tools.cli", "run", "--jobs", "2", "--inplace", "--no-progress",
                             "--dir", str(folder), "--build", str(build)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for name in ("02_slow", "03_slow"):
        _wait_for(tmp_path / f"{name}.pid", proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert after["01_quick.ipynb"] != before["01_quick.ipynb"]
    assert all(after[n] == before[n] for n in ("02_slow.ipynb", "03_slow.ipynb", "04_never.ipynb"))
    summary = {r["name"]: r["status"] for r in json.loads((build / "summary.json").read_text())}
    assert summary == {"01_quick": "ok", "02_slow": "interrupted", "03_slow": "interrupted", "04_never": "interrupted"}
    assert not never.exists()
    for name in ("02_slow", "03_slow"):
        _assert_gone(int((tmp_path / f"{name}.pid").read_text()))


KILLED_WRITER = """
import os, sys, time
from pathlib import Path
from mmlab import files
target, marker = Path(sys.argv[1]), Path(sys.argv[2])
real_fsync = os.fsync
def slow_fsync(fd):
    marker.write_text("x")
    time.sleep(60)
os.fsync = slow_fsync
files.write_atomic(target, b"NEW" * 100000)
"""


def test_sigkill_during_an_atomic_write_leaves_the_old_file(tmp_path):
    target, marker = tmp_path / "01_x.ipynb", tmp_path / "marker"
    target.write_bytes(b"OLD notebook")
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(target), str(marker)], stderr=subprocess.PIPE, text=True)
    _wait_for(marker, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.read_bytes() == b"OLD notebook"  # the reader's file: the old complete state
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".01_x.ipynb.")]
    assert leftovers, "the half-written data went to a temporary file, not the notebook"
    from mmlab.files import write_atomic

    write_atomic(target, b"NEW")
    assert target.read_bytes() == b"NEW"


def test_inplace_keeps_permissions(nbdir, tmp_path):
    path = nbdir / "01_ok.ipynb"
    path.chmod(0o640)
    assert cli.main(["run", "01", "--dir", str(nbdir), "--build", str(tmp_path / "b"), "--inplace", "--no-progress"]) == 0
    assert (path.stat().st_mode & 0o777) == 0o640


def test_doctor_offline(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MMLAB_PRETRAINED", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "hub: https://huggingface.co does not answer" in out
    assert "pretrained path (use_pretrained): not taken — offline: HF_HUB_OFFLINE is set" in out
    assert "device:" in out and "torch" in out and "cache:" in out


def test_cache_lists_and_clears(monkeypatch, capsys, tmp_path):
    from mmlab import cache

    monkeypatch.setenv("MMLAB_CACHE", str(tmp_path / "cache"))
    cache.store("toy", {"a": 1}, b"x", lambda obj, folder: (folder / "w.bin").write_bytes(obj))
    assert cli.main(["cache"]) == 0 and "toy-" in capsys.readouterr().out
    assert cli.main(["cache", "--clear"]) == 0 and "cleared 1" in capsys.readouterr().out
    assert cache.entries() == []


def test_seed_pretrained_and_studies_flags_reach_the_kernel(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _nb(folder / "01_env.ipynb", ["import os\nfrom mmlab import claims\n"
                                  "claims.measure('seed', int(os.environ['MMLAB_SEED']))\n"
                                  "claims.measure('asked', os.environ['MMLAB_PRETRAINED'] == '1')\n"
                                  "claims.measure('studies', os.environ.get('MMLAB_STUDIES') == '1')"])
    build = tmp_path / "book"
    assert cli.main(["run", "--seed", "3", "--pretrained", "--studies", "--dir", str(folder), "--build", str(build), "--no-progress"]) == 0
    (record,) = json.loads((build / "summary.json").read_text())
    assert record["report"]["measured"] == {"seed": 3.0, "asked": 1.0, "studies": 1.0} and record["report"]["seed"] == 3


def test_seeds_command_writes_a_table(tmp_path, capsys):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _nb(folder / "01_toy.ipynb", ["import os\nfrom mmlab import claims\nfrom mmlab.settings import seed\n"
                                  "claims.measure('studies ran', os.environ['MMLAB_STUDIES'] == '1')\n"
                                  "claims.check('acc', 0.5 + seed() / 10, '>=', 0.5)\n"
                                  "assert seed() != 2, 'seed 2 misses the bar'"])
    before = os.environ.get("MMLAB_STUDIES")
    assert cli.main(["seeds", "01", "--seeds", "0", "1", "2", "--dir", str(folder)]) == 1  # seed 2 failed
    assert os.environ.get("MMLAB_STUDIES") == before  # set for the study's kernels only
    study = json.loads((folder / "seeds" / "01_toy.json").read_text())
    assert [r["status"] for r in study["rows"]] == ["ok", "ok", "failed"]
    assert study["summary"]["studies ran"]["min"] == 1.0  # every seed ran the optional studies
    # where it ran: the CPU kernels torch chose and the library releases (either can move a figure)
    assert torch.backends.cpu.get_cpu_capability() in study["machine"]
    assert study["versions"]["transformers"] == transformers.__version__
    assert set(study["versions"]) >= {"torch", "open_clip_torch", "diffusers", "shap"}
    agg = study["summary"]["acc"]
    assert agg["min"] == 0.5 and abs(agg["mean"] - 0.6) < 1e-9 and agg["n"] == 3
    out = capsys.readouterr().out
    assert "seed 2 misses the bar" in out and "notebook passed" in out


def test_seeds_adds_a_seed_and_stores_seed_0_in_place(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _nb(folder / "01_toy.ipynb", ["from mmlab import claims\nfrom mmlab.settings import seed\n"
                                  "claims.check('acc', 0.5 + seed() / 10, '>=', 0.5)",
                                  "from mmlab import seeds\nseeds.show('01_toy')"])
    assert cli.main(["seeds", "01", "--seeds", "1", "--dir", str(folder)]) == 0
    before = (folder / "01_toy.ipynb").read_bytes()
    assert cli.main(["seeds", "01", "--seeds", "0", "--dir", str(folder), "--inplace"]) == 0
    study = json.loads((folder / "seeds" / "01_toy.json").read_text())
    assert [r["seed"] for r in study["rows"]] == [0, 1]  # seed 1's row kept, seed 0's added
    assert study["summary"]["acc"]["n"] == 2
    nb = nbformat.read(folder / "01_toy.ipynb", as_version=4)
    assert (folder / "01_toy.ipynb").read_bytes() != before
    shown = nb.cells[2].outputs[0]["text"]
    assert "s0" in shown and "s1" in shown and "0.600" in shown  # the finished table, not the one seed 0's kernel saw
    assert "training seeds 0, 1" in shown.splitlines()[0] and "acc (>= 0.5)" in shown  # the bar from claims.check
    assert study["claims"] == {"acc": {"op": ">=", "bar": 0.5}}  # the table stores the bar the notebook declared


def test_run_shows_the_cell_and_forwards_training_progress(tmp_path, capsys, monkeypatch):
    from mmlab.tools import runner

    monkeypatch.setattr(runner, "LOG_EVERY", 0.0)
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _nb(folder / "01_train.ipynb", ["x = 1", "# Train the tiny model\nfrom tqdm import tqdm\nimport time\n"
                                    "for _ in tqdm(range(4), desc='steps', mininterval=0):\n    time.sleep(0.3)"])
    book = tmp_path / "book"
    assert cli.main(["run", "--dir", str(folder), "--book", str(book)]) == 0
    err = capsys.readouterr().err
    assert "cell 1/2: x = 1" in err and "cell 2/2: # Train the tiny model" in err
    assert "steps: 100%|" in err  # the kernel's tqdm, forwarded while the cell runs
    summary = json.loads((book / "summary.json").read_text())[0]
    # each code cell under its section (the last heading above it: the test notebooks' "# 问题 / The question")
    assert [c[:2] for c in summary["cells"]] == [[1, "问题 / The question | x = 1"], [2, "问题 / The question | # Train the tiny model"]]
    assert all(isinstance(c[2], float) for c in summary["cells"])  # each cell's time is recorded (never compared)
    assert "mmlab" not in summary["modules"]  # the kernel imported no mmlab module
    assert cli.main(["run", "--dir", str(folder), "--book", str(book)]) == 0
    out, err = capsys.readouterr()
    assert "(last run:" in out and "last run]" in err  # the expected time, from the previous summary.json


def test_copy_puts_editable_notebooks_where_the_reader_wants(nbdir, tmp_path, capsys):
    target = tmp_path / "mine"
    assert cli.main(["copy", str(target), "--dir", str(nbdir)]) == 0
    assert sorted(p.name for p in target.glob("*.ipynb")) == ["01_ok.ipynb", "02_bad.ipynb"]
    with pytest.raises(SystemExit, match="already exist .* pass --force"):
        cli.main(["copy", str(target), "--dir", str(nbdir)])
    (target / "01_ok.ipynb").write_text("edited")
    assert cli.main(["copy", str(target), "--dir", str(nbdir), "--force"]) == 0
    nbformat.read(target / "01_ok.ipynb", as_version=4)


def test_a_wheel_carries_the_notebooks(tmp_path):
    """Built as a wheel and installed in a fresh venv (not a clone): `mmlab list` finds the five notebooks and
    `mmlab copy` copies them."""
    import venv

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", root, "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels)],
                   check=True, capture_output=True)
    (wheel,) = wheels.glob("mmlab-*.whl")
    env_dir = tmp_path / "venv"
    # The dependencies come from the environment running this test: a .pth file adds its site-packages after the new
    # venv's own. (system_site_packages=True would add the *base* interpreter's instead, which a venv has not filled.)
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    inner = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                           capture_output=True, text=True).stdout.strip()
    outer = [p for p in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])]
    (Path(inner) / "outer-environment.pth").write_text("\n".join(dict.fromkeys(outer)) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(py), "-c", "import mmlab; print(mmlab.__file__)"], cwd=elsewhere, check=True,
                           capture_output=True, text=True).stdout
    assert str(env_dir) in where, where  # the wheel's copy, not the clone
    listed = subprocess.run([str(env_dir / "bin" / "mmlab"), "list"], cwd=elsewhere, check=True, capture_output=True, text=True)
    assert len(listed.stdout.strip().splitlines()) == 5 and "05_stable_diffusion" in listed.stdout
    subprocess.run([str(env_dir / "bin" / "mmlab"), "copy", "mine"], cwd=elsewhere, check=True, capture_output=True)
    assert len(list((elsewhere / "mine").glob("*.ipynb"))) == 5 and len(list((elsewhere / "mine" / "seeds").glob("*.json"))) == 5
    assert len(list((elsewhere / "mine" / "studies").glob("*.json"))) == 3  # the optional studies' stored results
    for command in ("bench", "seeds"):  # installed commands that read files shipped in the wheel
        shown = subprocess.run([str(env_dir / "bin" / "mmlab"), command, "--help"], cwd=elsewhere, check=True,
                               capture_output=True, text=True).stdout
        assert f"mmlab {command}" in shown
    budgets = subprocess.run([str(py), "-c", "from mmlab.tools import bench, run_all; "
                              "print(len(bench.reference_seconds(run_all.notebooks_dir())))"],
                             cwd=elsewhere, check=True, capture_output=True, text=True).stdout
    assert int(budgets) > 0  # the seed tables (both thread counts) the budgets come from are in the wheel


def test_bench_profile_lists_the_slowest_cells(tmp_path, capsys):
    from mmlab.tools import bench

    summary = [{"name": "01_a", "status": "ok", "seconds": 10.0, "cells": [[1, "x = 1", 1.0], [3, "train()", 8.0]]},
               {"name": "02_b", "status": "ok", "seconds": 5.0, "cells": [[2, "sample()", 4.0]]}]
    assert [(c[0], c[1]) for c in bench.profile(summary, top=2)] == [("01_a", 3), ("02_b", 2)]
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    cli.main(["bench", "--summary", str(path), "--no-micro", "--profile", "3"])
    out = capsys.readouterr().out
    assert "01_a cell 3: train()" in out and out.index("train()") < out.index("sample()") < out.index("x = 1")


def test_bench_shows_a_small_budget_as_it_is(tmp_path, capsys, monkeypatch):
    """A budget of 4.6 s (100 of 2,600 steps' 120 s) is shown as 4.6, not rounded to a 5 it beats."""
    from mmlab.tools import bench

    monkeypatch.setattr(bench, "micro_benchmarks", lambda notebooks=None: [("yardstick", 4.8, 100 * 120 / 2600)])
    assert bench.main(tmp_path / "absent.json") == 1
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("yardstick"))
    assert row.split()[1:] == ["4.8s", "4.6s", "MISSED"]


def _seed_table(path, notebook, threads, seconds):
    rows = [{"seed": s, "status": "ok", "training_seconds": {"train": t}} for s, t in enumerate(seconds)]
    rows.append({"seed": 9, "status": "failed", "training_seconds": {"train": 999.0}})   # a failed run is no reference
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"notebook": notebook, "threads": threads, "rows": rows}))


def test_bench_budgets_follow_the_seed_table_of_the_thread_count_the_training_ran_on(tmp_path, capsys):
    """A training's budget: DRIFT x the slowest ok run of the seed table made at the thread count it ran on; at a
    count no table was made at, no budget (printed as such, not missed)."""
    from mmlab.tools import bench

    _seed_table(tmp_path / "seeds" / "01_a.json", "01_a", 2, [10.0, 12.0, 11.0])
    _seed_table(tmp_path / "seeds" / "one-thread" / "01_a.json", "01_a", 1, [20.0, 16.0])
    _seed_table(tmp_path / "seeds" / "other-cpus" / "x" / "01_a.json", "01_a", 4, [1.0])   # another machine: ignored
    references = bench.reference_seconds(tmp_path)   # the made-up tables' figures, not this machine's speed
    assert references == {("01_a", 2): {"train": 12.0}, ("01_a", 1): {"train": 20.0}}

    def run(threads, seconds):
        return [{"name": "01_a", "status": "ok", "seconds": seconds, "report": {"threads": threads, "seconds": {"train": seconds}}}]

    assert bench.from_summary(run(2, 17.0), tmp_path) == [("01: train, 2 threads", 17.0, bench.DRIFT * 12.0)]
    assert bench.from_summary(run(1, 25.0), tmp_path) == [("01: train, 1 thread", 25.0, bench.DRIFT * 20.0)]
    assert bench.from_summary(run(4, 5.0), tmp_path) == [("01: train, 4 threads", 5.0, None)]
    assert bench.from_summary(run(2, 17.0)) == [("01: train, 2 threads", 17.0, None)]   # no folder, no budgets
    path = tmp_path / "summary.json"
    for threads, seconds, code in ((2, 18.1, 1), (2, 17.9, 0), (4, 500.0, 0)):
        path.write_text(json.dumps(run(threads, seconds)))
        assert bench.main(path, micro=False, notebooks=tmp_path) == code
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("01: train, 4 threads") and last.endswith("no reference")


def test_auto_jobs_two_on_a_cpu_with_the_cores_and_memory_else_one(monkeypatch):
    """The default of `mmlab run --jobs`: MMLAB_JOBS when set; one with --inplace (the seed tables' configuration);
    two on a CPU with 2+ cores and the memory; else one."""
    monkeypatch.delenv("MMLAB_JOBS", raising=False)
    monkeypatch.delenv("MMLAB_THREADS", raising=False)
    monkeypatch.setattr(lanes, "cores", lambda: 2)
    monkeypatch.setattr(lanes, "_memory_gb", lambda: 24.0)
    monkeypatch.setattr(lanes, "_accelerator", lambda: None)
    assert lanes.auto_jobs() == (2, "2 cores, no GPU: two notebooks side by side, 1 thread each")
    jobs, why = lanes.auto_jobs(inplace=True)
    assert jobs == 1 and "--inplace" in why and "seed tables" in why
    assert lanes.auto_jobs({"MMLAB_JOBS": "2"}, inplace=True) == (2, "MMLAB_JOBS")
    assert lanes.auto_jobs({"MMLAB_JOBS": "3"}) == (3, "MMLAB_JOBS")
    assert lanes.auto_jobs({"MMLAB_THREADS": "2"})[0] == 1          # 2 x 2 threads on 2 cores would oversubscribe them
    assert lanes.auto_jobs({"MMLAB_THREADS": "1"})[0] == 2
    monkeypatch.setattr(lanes, "cores", lambda: 16)                   # at most the thread counts the tables checked
    assert lanes.auto_jobs() == (2, "16 cores, no GPU: two notebooks side by side, 2 threads each")
    monkeypatch.setattr(lanes, "cores", lambda: 2)
    monkeypatch.setattr(lanes, "_memory_gb", lambda: 4.0)
    assert lanes.auto_jobs() == (1, "4.0 GB of memory: not enough for two kernels")
    monkeypatch.setattr(lanes, "_memory_gb", lambda: None)           # unknown: not a reason to refuse
    assert lanes.auto_jobs()[0] == 2
    monkeypatch.setattr(lanes, "_accelerator", lambda: "CUDA")
    assert lanes.auto_jobs() == (1, "a CUDA device: one notebook at a time on it")
    monkeypatch.setattr(lanes, "cores", lambda: 1)
    assert lanes.auto_jobs() == (1, "one core")
    with pytest.raises(SystemExit, match="MMLAB_JOBS must be a positive integer, got '0'"):
        lanes.auto_jobs({"MMLAB_JOBS": "0"})
    with pytest.raises(SystemExit):
        cli.main(["run", "--jobs", "two"])                       # argparse names --jobs and what it expected


def test_run_without_jobs_takes_auto_and_records_the_wall_time(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MMLAB_JOBS", raising=False)
    monkeypatch.setattr(cli, "auto_jobs", lambda env=None, inplace=False: (1, "a test"))
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _nb(folder / "01_a.ipynb", ["x = 1"])
    _nb(folder / "02_b.ipynb", ["y = 2"])
    assert cli.main(["run", "--dir", str(folder), "--build", str(tmp_path / "book"), "--no-progress"]) == 0
    assert "notebooks at once: 1 (a test; --jobs to choose)" in capsys.readouterr().out
    summary = json.loads((tmp_path / "book" / "summary.json").read_text())
    assert {r["run_jobs"] for r in summary} == {1}
    walls = {r["run_wall_seconds"] for r in summary}   # the run's, the same in every row
    assert len(walls) == 1 and None not in walls


def test_bench_compares_a_side_by_side_run_by_its_wall_time(tmp_path, capsys):
    from mmlab.tools import bench

    rows = [{"name": f"0{i}_x", "status": "ok", "seconds": 300.0, "run_jobs": 2, "run_wall_seconds": 780.0} for i in range(1, 6)]
    assert bench.from_summary(rows)[-1] == ("suite: five notebooks (mmlab run, 2 at a time: wall)", 780.0, 600)
    sequential = [dict(r, run_jobs=1, run_wall_seconds=1501.0) for r in rows]
    assert bench.from_summary(sequential)[-1] == ("suite: five notebooks (mmlab run)", 1500.0, 600)
    old = [{k: v for k, v in r.items() if not k.startswith("run_")} for r in rows]   # a summary from before the fields
    assert bench.from_summary(old)[-1][1] == 1500.0
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(rows))
    assert bench.main(path, micro=False) == 1
    line = "2 notebooks at a time, 780.0 s of wall time; the sum of notebook seconds 1500.0 s"   # the made-up rows above
    assert line in capsys.readouterr().out


def test_run_times_the_yardstick_alone_after_the_notebooks(nbdir, tmp_path, capsys, monkeypatch):
    """`mmlab run` gives its wall time in yardsticks (100 tiny-CLIP steps timed after the notebooks, alone), and
    records the yardstick in summary.json; --no-yardstick (or MMLAB_YARDSTICK=0) skips it."""
    from mmlab.tools import bench

    calls = []
    monkeypatch.setattr(bench, "yardstick", lambda cwd, env: calls.append(env) or 2.0)
    monkeypatch.setenv("MMLAB_YARDSTICK", "1")
    assert cli.main(["run", "01", "--dir", str(nbdir), "--build", str(tmp_path / "b"), "--no-progress", "--jobs", "1"]) == 0
    (record,) = json.loads((tmp_path / "b" / "summary.json").read_text())
    stick = record["yardstick_seconds"]
    assert stick == 2.0 and len(calls) == 1 and "MMLAB_THREADS" not in calls[0]
    assert "yardsticks" in capsys.readouterr().out
    assert cli.main(["run", "01", "--dir", str(nbdir), "--build", str(tmp_path / "c"), "--no-progress", "--no-yardstick"]) == 0
    (skipped,) = json.loads((tmp_path / "c" / "summary.json").read_text())
    no_stick = skipped["yardstick_seconds"]
    assert len(calls) == 1 and no_stick is None


def test_probe_command_rejects_an_unknown_field():
    with pytest.raises(SystemExit, match="num_stepz=3"):
        cli.main(["probe", "clip", "0", "num_stepz=3"])
    with pytest.raises(SystemExit, match="at least one training seed"):
        cli.main(["probe", "clip", "num_steps=3"])
