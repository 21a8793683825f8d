"""The suite's set-up for pytest-xdist (``pyproject.toml``: ``-n auto --dist loadfile``): two workers, each notebook on
one worker from start to end, the longest notebooks first, and each worker on its share of the cores.

Two notebooks at once on 2 cores, one thread each, finish sooner than one after the other on two threads (the tiny
models do not keep two threads busy: 100 tiny-CLIP steps take 1.2-1.4x longer on one thread, not 2x), while more
threads than cores slow torch down many times over. The notebooks run training seed 0 here; on one thread every bar
holds for seeds 0-4 (notebooks/seeds/one-thread/, tests/test_seed_tables.py). ``pytest -n 0`` runs everything in one process, as before.

The processes started from here (workers, notebook kernels) get TCMalloc where it is installed (``mmlab.tools.allocator``),
as ``mmlab run`` gives its kernels: faster training steps and bit-identical figures. They also get the session's own
``TMPDIR`` (``mmlab.tools.scratch``), removed when the session ends: nbval kills its kernels, so their temporary files
(notebook 04's ~1 GB ``BatchStore``) would otherwise stay in ``/tmp`` after every run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from mmlab.tools import allocator, lanes, scratch

MAX_WORKERS = 2  # memory: a worker and its notebook kernel take up to ~2.5 GB; and 05 alone sets the wall time


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    return max(1, min(MAX_WORKERS, lanes.cores()))


def pytest_configure(config):
    try:  # TCMalloc for the processes started from here on (workers, kernels): faster steps, the same figures
        os.environ.update(allocator.preload_env())
    except (ValueError, RuntimeError) as exc:
        raise pytest.UsageError(str(exc)) from None
    if not hasattr(config, "workerinput"):  # the controller (or the only process); the workers inherit its TMPDIR
        config._mmlab_tmpdir = (os.environ.get("TMPDIR"), scratch.make("mmlab-pytest-"))
        os.environ["TMPDIR"] = str(config._mmlab_tmpdir[1])
    # `mmlab run` in a test runs one notebook at a time unless the test asks for more (pytest's workers share the cores)
    os.environ.setdefault("MMLAB_JOBS", "1")
    # nor time the yardstick after each run (tests/test_cli.py checks it with a stand-in)
    os.environ.setdefault("MMLAB_YARDSTICK", "0")
    # a worker's (or the only process's) share of the cores, at most 2 threads (lanes.MAX_THREADS); its kernels inherit it
    pinned = lanes.lane_env(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1))
    if pinned:
        os.environ.update(pinned)
        import torch

        torch.set_num_threads(int(pinned["MMLAB_THREADS"]))  # the unit tests in this process


def pytest_unconfigure(config):
    before, folder = getattr(config, "_mmlab_tmpdir", (None, None))
    if folder is None:
        return
    shutil.rmtree(folder, ignore_errors=True)  # the workers and their kernels have exited by now
    if before is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before


def _committed_seconds(path: Path) -> float:
    """How long a notebook's committed run took (its stamp), 0 when unknown."""
    try:
        return float(json.loads(path.read_text()).get("metadata", {}).get("mmlab", {}).get("seconds") or 0.0)
    except (OSError, ValueError, AttributeError):
        return 0.0


def pytest_collection_modifyitems(config, items):
    """Under xdist: notebooks first, longest first, then the unit tests (the scheduler hands files out in this order,
    so the longest notebook starts at once and the short files fill the gaps at the end)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    seconds = {}
    for item in items:
        path = Path(str(item.fspath))
        if path not in seconds:
            seconds[path] = _committed_seconds(path) if path.suffix == ".ipynb" else 0.0
    position = {path: i for i, path in enumerate(dict.fromkeys(Path(str(item.fspath)) for item in items))}
    items.sort(key=lambda item: (-seconds[Path(str(item.fspath))], position[Path(str(item.fspath))]))
