"""Optional studies: experiments a notebook reports but asserts nothing about, behind a switch that is off by default.

Training a second model only to *measure* a comparison (SigLIP against InfoNCE at small batch, a flow-matching model
beside the DDPM) costs every reader and every CI run its minutes, yet no claim rests on it. Such a study is written as
one function in the notebook and called through :func:`run`:

* ``MMLAB_STUDIES=1`` (``mmlab run --studies``; ``mmlab seeds`` always sets it): the function runs here, and what it
  returns is stored in ``studies/<notebook>.json`` beside the notebook, per seed, with the function's source, the
  SHA-256 of the notebook's code cells and of every ``mmlab`` module loaded at the time (the digests of the
  notebook's own stamp, :mod:`mmlab.stamp`), and the CPU, threads and time of the run. Runs of other seeds made with
  other code are dropped from the file.
* Otherwise (the default): the stored result is shown, labelled with where and when it ran.

A stored result is refused when the function's source differs from the one that produced it (the reader edited the
study: it must run); ``tests/test_studies.py`` fails when the notebook's code cells or a module the study ran against
have changed since (the rule ``tests/test_stale.py`` applies to the notebook's own outputs), so CI never shows a result
of other code.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmlab.runtime import _env_flag, library_versions, machine, seed, write_atomic


def enabled() -> bool:
    """Whether optional studies run here: ``MMLAB_STUDIES=1`` (off by default)."""
    return _env_flag("MMLAB_STUDIES")


def describe() -> str:
    """One line for a Settings cell."""
    if enabled():
        return "optional studies: run here (MMLAB_STUDIES=1), results stored in studies/"
    return "optional studies: stored results shown (MMLAB_STUDIES=1 runs them here)"


def study_path(notebook: str, directory: str | Path | None = None) -> Path:
    """``studies/<notebook>.json`` in ``directory``, else beside the running notebook, else under ``./notebooks``."""
    if directory is not None:
        return Path(directory) / f"{notebook}.json"
    here = Path("studies") / f"{notebook}.json"
    elsewhere = Path("notebooks") / "studies" / f"{notebook}.json"
    return elsewhere if not here.is_file() and elsewhere.is_file() else here


def load(notebook: str, directory: str | Path | None = None) -> dict:
    """All stored studies of ``notebook``: ``{study name: {seed (str): record}}`` (empty when none)."""
    path = study_path(notebook, directory)
    return json.loads(path.read_text()) if path.is_file() else {}


@dataclass(frozen=True)
class Result:
    """A study's value, whether it ran here (``live``), and a line saying where it came from."""

    value: Any
    live: bool
    label: str


def run(notebook: str, name: str, fn: Callable[[], Any], directory: str | Path | None = None) -> Result:
    """Run study ``name`` of ``notebook`` (``fn()``, JSON-serialisable) or show its stored result; see the module doc.

    Args:
        notebook: the notebook's stem, e.g. ``"01_clip_dalle"``.
        name: the study's key in the stored file.
        fn: the study; takes no arguments and returns plain data (numbers, strings, lists, dicts with str keys).
        directory: the studies folder (default: ``studies/`` beside the notebook).
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function taking no arguments, got {type(fn).__name__}")
    source = inspect.getsource(fn)
    path = study_path(notebook, directory)
    current = seed()
    if enabled():
        t0 = time.perf_counter()
        value = fn()
        record = {"value": value, "source": source, "seconds": round(time.perf_counter() - t0, 1),
                  "when": time.strftime("%Y-%m-%d %H:%M"), "threads": torch.get_num_threads(),
                  "machine": machine(), "versions": library_versions(),
                  "code_sha256": _notebook_code(notebook), "library_sha256": _loaded_library()}
        stored = load(notebook, directory)
        same_code = {k: r for k, r in stored.get(name, {}).items()   # other seeds' runs of other code are dropped
                     if (r.get("code_sha256"), r.get("library_sha256")) == (record["code_sha256"], record["library_sha256"])}
        stored[name] = {**same_code, str(current): record}
        json.dumps(stored)  # a value that is not plain data fails here, before anything is written
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, (json.dumps(stored, indent=1, sort_keys=True) + "\n").encode())
        return Result(value, True, f"study {name!r}: ran here ({record['seconds']:.0f} s), stored in {path}")
    runs = load(notebook, directory).get(name, {})
    if not runs:
        raise LookupError(f"no stored result of study {name!r} in {path}: set MMLAB_STUDIES=1 to run it here")
    key = str(current) if str(current) in runs else min(runs, key=int)
    record = runs[key]
    if record["source"] != source:
        raise ValueError(f"study {name!r} changed since its stored run (its function's source differs from the one in "
                         f"{path}): set MMLAB_STUDIES=1 to run it here")
    other = "" if key == str(current) else f" (none stored for this run's seed {current})"
    return Result(record["value"], False,
                  f"study {name!r}: stored run, seed {key}{other}, {record['when']}, {record['threads']} threads, "
                  f"{record['machine']}; {record['seconds']:.0f} s there. MMLAB_STUDIES=1 runs it here")


def _notebook_code(notebook: str) -> str | None:
    """SHA-256 of the code cells of ``<notebook>.ipynb`` in the working folder (a kernel runs beside its notebook), as
    :func:`mmlab.stamp.code_digest` computes it; None when the file is not there."""
    path = Path(f"{notebook}.ipynb")
    if not path.is_file():
        return None
    import nbformat

    h = hashlib.sha256()
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code":
            h.update(cell.source.encode("utf-8") + b"\x00")
    return h.hexdigest()


def _loaded_library() -> dict[str, str]:
    """SHA-256 of the source file of every ``mmlab`` module loaded now (as :mod:`mmlab.stamp` digests them; that module
    is not imported here, so a kernel never loads it and editing it makes no notebook stale)."""
    return {name: hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()
            for name, module in sorted(sys.modules.items())
            if name.split(".")[0] == "mmlab" and getattr(module, "__file__", None)}


def stale(nb, stored: dict) -> list[str]:
    """Why the stored studies of notebook ``nb`` may not come from its current code: its code cells changed since a
    study ran, or an ``mmlab`` module it ran against did (empty when all match). Called by the tests."""
    from mmlab.stamp import code_digest, library_digests

    reasons = []
    for name, runs in stored.items():
        for key, record in runs.items():
            if record.get("code_sha256") != code_digest(nb):
                reasons.append(f"study {name!r} (seed {key}): the notebook's code cells changed since it ran")
            then = record.get("library_sha256", {})
            changed = sorted(m for m, d in library_digests(sorted(then)).items() if d != then[m])
            if changed:
                reasons.append(f"study {name!r} (seed {key}): mmlab modules it ran against changed: {', '.join(changed)}")
    return reasons
