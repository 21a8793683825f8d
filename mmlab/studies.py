"""Optional studies: experiments a notebook reports but asserts nothing about, behind a switch that is off by default.

Training a second model only to *measure* a comparison (SigLIP against InfoNCE at small batch, a flow-matching model
beside the DDPM) costs every reader and every CI run its minutes, yet no claim rests on it. Such a study is written as
one function in the notebook and called through :func:`run`:

* ``MMLAB_STUDIES=1`` (``mmlab run --studies``; ``mmlab seeds`` always sets it): the function runs here, and what it
  returns is stored in ``studies/<notebook>.json`` beside the notebook, per seed, with the function's source, a
  digest of the notebook's code cells up to the one that runs the study (cells below it cannot change its result)
  and of every ``mmlab`` module loaded at the time (digests of the code as it executes, as the notebook's own stamp
  takes them: :mod:`mmlab.provenance`), and the CPU, threads and time of the run. Runs of other seeds made with other
  code are dropped from the file.
* Otherwise (the default): the stored result is shown, labelled with its seed and threads (the file says where and when).

A stored result is refused when the function's source differs from the one that produced it (the reader edited the
study: it must run); ``tests/test_studies.py`` fails when the notebook's code up to the study or a module the study ran
against has changed since (the rule ``tests/test_stale.py`` applies to the notebook's own outputs), so CI never shows a result
of other code.
"""

from __future__ import annotations

import inspect
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmlab.files import write_atomic
from mmlab.provenance import cells_digest, library_versions, machine, module_digests
from mmlab.settings import _env_flag, seed


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
                  "code_digest": _code_before(notebook, name), "library_digest": _loaded_library()}
        stored = load(notebook, directory)
        same_code = {k: r for k, r in stored.get(name, {}).items()   # other seeds' runs of other code are dropped
                     if (r.get("code_digest"), r.get("library_digest")) == (record["code_digest"], record["library_digest"])}
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
    # Where and when it ran is in the stored file (a lesson shows no machine history).
    return Result(record["value"], False,
                  f"study {name!r}: stored run, seed {key}{other}, {record['threads']} threads, {record['seconds']:.0f} s "
                  f"there ({path.as_posix()} says where and when). MMLAB_STUDIES=1 runs it here")


def calls_study(source: str, name: str) -> bool:
    """Whether a code cell's source runs study ``name`` (a ``studies.run(...)`` call naming it)."""
    return "studies.run(" in source and (f'"{name}"' in source or f"'{name}'" in source)


def code_before(sources: list[str], name: str) -> str | None:
    """Digest of the code cells up to and including the first that runs study ``name`` (None when none does)."""
    for k, source in enumerate(sources):
        if calls_study(source, name):
            return cells_digest(sources[:k + 1])
    return None


def _code_before(notebook: str, name: str) -> str | None:
    """:func:`code_before` of ``<notebook>.ipynb`` in the working folder (a kernel runs beside its notebook); None
    when the file is not there."""
    path = Path(f"{notebook}.ipynb")
    if not path.is_file():
        return None
    import nbformat

    return code_before([c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"], name)


def _loaded_library() -> dict[str, str]:
    """Digest of every ``mmlab`` module loaded now, as the notebook's stamp takes them."""
    return module_digests(sorted(name for name, module in sys.modules.items()
                                 if name.split(".")[0] == "mmlab" and getattr(module, "__file__", None)))
