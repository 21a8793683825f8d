"""Seed studies: run a notebook once per training seed and store every figure its claims cell records.

Two kinds of table, one schema (:mod:`mmlab.seeds` prints both):

* ``mmlab seeds 01`` (:func:`run_study`): one notebook at a time on torch's default threads, each seed in a fresh
  kernel, written to ``notebooks/seeds/<stem>.json`` after every seed (a long study is never lost). Trained artefacts
  of other notebooks (the tiny CLIP) come from the cache.
* ``mmlab seeds 01 02 --suite`` (:func:`run_suite`): ``mmlab run`` as a reader's 2-core machine runs it — two
  notebooks side by side on one thread each — once per seed, each seed from an empty cache, so every artefact is
  trained at that thread count; written to ``notebooks/seeds/one-thread/`` with ``runs.json`` (wall time, sum of
  notebook seconds, peaks and the yardstick timed alone after the run).

A table stores each claim's operator and bar as the notebook's ``claims.check`` statements declared them
(:func:`declared_claims` reads them from the notebook's code, the test checks that the two agree).
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import operator
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import torch

from mmlab.files import write_atomic
from mmlab.provenance import library_versions, machine
from mmlab.seeds import load_study, show, study_path, summarise
from mmlab.tools.bench import yardstick

_ARITH = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.Pow: operator.pow}


def _constant(node: ast.AST) -> float:
    """A bar written as a number or an arithmetic expression of numbers (``8 / 24``), evaluated; else ValueError."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_constant(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        return float(_ARITH[type(node.op)](_constant(node.left), _constant(node.right)))
    raise ValueError(f"a bar must be a number or arithmetic of numbers, got {ast.unparse(node)!r}")


def _code(cell_source: str) -> ast.Module:
    """A code cell's AST (IPython magics and shell lines blanked)."""
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in cell_source.splitlines()]
    return ast.parse("\n".join(lines))


def _name_of(call: ast.Call) -> str:
    """A claim's name as written: a string literal, or an f-string (a claim stated in a loop, one per model), kept as
    its template with ``{...}`` for each placeholder (:func:`matches` tells which recorded names it covers)."""
    name = call.args[0] if call.args else None
    if isinstance(name, ast.Constant) and isinstance(name.value, str):
        return name.value
    if isinstance(name, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "{...}" for part in name.values)
    raise ValueError(f"claims.{call.func.attr}: the name must be a string literal or an f-string, got {ast.unparse(call)!r}")


def matches(declared: str, recorded: str) -> bool:
    """Whether a recorded claim name is the one ``declared`` (a literal, or an f-string template from :func:`_name_of`)."""
    pattern = ".+".join(re.escape(part) for part in declared.split("{...}"))
    return re.fullmatch(pattern, recorded) is not None


def declared_claims(nb: nbformat.NotebookNode) -> tuple[dict[str, dict], list[str]]:
    """The claims a notebook states (``{name: {"op", "bar"}}``) and the figures it measures (names), read from the
    literal arguments of its ``claims.check(name, value, op, bar)`` and ``claims.measure(name, value)`` calls."""
    declared: dict[str, dict] = {}
    measured: list[str] = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(_code(cell.source)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "claims"
                    and node.func.attr in ("check", "measure")):
                continue
            name = _name_of(node)
            if node.func.attr == "measure":
                measured.append(name)
                continue
            if len(node.args) != 4 or not (isinstance(node.args[2], ast.Constant) and isinstance(node.args[2].value, str)):
                raise ValueError(f"claims.check takes (name, value, op, bar) with a literal op, got {ast.unparse(node)!r}")
            if name in declared:
                raise ValueError(f"claim {name!r} is stated twice")
            declared[name] = {"op": node.args[2].value, "bar": _constant(node.args[3])}
    return declared, measured


def row_of(seed: int, status: str, error: str, seconds: float, report: dict | None, **extra) -> dict:
    """One seed's row: its status and every figure its kernel recorded (claims and measured figures alike)."""
    report = report or {}
    figures = {**report.get("measured", {}), **{k: c["value"] for k, c in report.get("claims", {}).items()}}
    return {"seed": seed, "status": status, "error": error, "seconds": round(seconds, 1), "bars": figures or None,
            "training_seconds": report.get("seconds"), "threads": report.get("threads"),
            **extra, "when": time.strftime("%Y-%m-%d %H:%M")}


def table(stem: str, rows: list[dict], claims: dict[str, dict], threads: int | None, **extra) -> dict:
    """A seed table: the rows, the claims' operators and bars, the machine and library versions, the summary."""
    rows = sorted(rows, key=lambda r: r["seed"])
    recorded = dict.fromkeys(k for r in rows for k in (r.get("bars") or {}))
    # a claim stated in a loop is declared once (an f-string template) and recorded once per name it took
    concrete = {name: dict(claims[t]) for name in recorded for t in claims if matches(t, name)}
    return {"notebook": stem, "when": time.strftime("%Y-%m-%d %H:%M"), "seeds": [r["seed"] for r in rows],
            "machine": machine(), "versions": library_versions(), "threads": threads, **extra,
            "claims": concrete, "rows": rows, "summary": summarise(rows)}


def _refresh_table_cells(nb, stem: str, directory: Path) -> int:
    """Replace the output of each ``seeds.show(...)`` cell by what that call prints now; return how many cells."""
    count = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and "seeds.show(" in cell.source:
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                show(stem, directory)
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed.getvalue())]
            count += 1
    return count


def run_study(path: Path, seeds: list[int], timeout: int = 3600, progress: bool = True, inplace: bool = False) -> dict:
    """Execute notebook ``path`` once per seed; write and return its seed table (see module doc).

    Rows of seeds not in ``seeds`` are kept from the stored table (each row says when it ran), so ``--seeds 4`` adds a
    seed to a study. ``inplace``: when seed 0 passes, its executed notebook is stored back into ``path`` (as
    ``mmlab run --inplace`` would: seed 0 is the default) once the study is done, with the output of its
    ``seeds.show`` cell refreshed from the finished table; when seed 0 was not in this run, only that cell's output is
    refreshed in the stored notebook.
    """
    from mmlab.tools.runner import execute, store

    target = study_path(path.parent, path.stem)
    target.parent.mkdir(parents=True, exist_ok=True)
    stored = load_study(path.parent, path.stem) or {}
    kept = [dict(r, when=r.get("when", stored["when"])) for r in stored.get("rows", []) if r["seed"] not in seeds]
    claims, _ = declared_claims(nbformat.read(path, as_version=4))
    rows: list[dict] = []
    seed0 = None
    for s in seeds:
        print(f"[seed {s}] {path.name}", flush=True)
        nb, result = execute(path, timeout=timeout, progress=progress, env={"MMLAB_SEED": str(s)})
        if s == 0 and result.status == "ok":
            seed0 = nb, result
        rows.append(row_of(s, result.status, result.error, result.seconds, result.report))
        print(f"    {result.status} in {result.seconds:.0f} s {result.error}", flush=True)
        threads = (result.report or {}).get("threads") or torch.get_num_threads()
        study = table(path.stem, kept + rows, claims, threads)
        write_atomic(target, (json.dumps(study, indent=1) + "\n").encode())  # after every seed
    if inplace and seed0 is not None:
        _refresh_table_cells(seed0[0], path.stem, path.parent)
        store(path, *seed0)
        print(f"    stored seed 0's executed run in {path.name}", flush=True)
    elif inplace:  # seed 0 not re-run: the committed run stays, its table cell shows the finished table
        stored_nb = nbformat.read(path, as_version=4)
        if _refresh_table_cells(stored_nb, path.stem, path.parent):
            write_atomic(path, (nbformat.writes(stored_nb) + "\n").encode())
            print(f"    refreshed the seed table shown in {path.name}", flush=True)
    return study


def run_suite(paths: list[Path], seeds: list[int], out: Path, threads: int | None = None) -> int:
    """The one-thread tables (see module doc): ``mmlab run`` of ``paths`` per seed from an empty cache; returns the
    number of failed notebook runs. ``threads``: one notebook at a time on that many threads instead (another
    machine's thread count, checked here: write it to another ``out``)."""
    root = paths[0].parent.parent
    how = (f"mmlab run --jobs 1, MMLAB_THREADS={threads}: one notebook at a time, {threads} threads" if threads else
           "mmlab run --jobs 2: two notebooks side by side, one thread each") + ", each seed from an empty cache"
    isa = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA") if k in os.environ}
    if isa:  # the settings that make torch, MKL and oneDNN take another CPU's kernels
        how += "; kernels limited by " + " ".join(f"{k}={v}" for k, v in isa.items())
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for seed in seeds:
        work = Path(tempfile.mkdtemp(prefix=f"mmlab-suite-seed{seed}-"))
        env = dict(os.environ, MMLAB_SEED=str(seed), MMLAB_CACHE=str(work / "cache"), MMLAB_JOBS="2")
        env.pop("MMLAB_THREADS", None)  # each kernel on its share of the cores
        if threads:
            env.update(MMLAB_THREADS=str(threads), MMLAB_JOBS="1")
        print(f"[seed {seed}] mmlab run, cache {work / 'cache'}", flush=True)
        t0 = time.perf_counter()
        cli = "import sys; from mmlab.tools.cli import main; sys.exit(main())"  # the `mmlab` command, under this Python
        proc = subprocess.run([sys.executable, "-c", cli, "run", "--no-progress", "--book", str(work / "book"),
                               "--dir", str(paths[0].parent), *[p.stem for p in paths]], cwd=root, env=env)
        wall = time.perf_counter() - t0
        summary = json.loads((work / "book" / "summary.json").read_text())
        stick = yardstick(root, env)
        for row in summary:
            target = out / f"{row['name']}.json"
            stored = json.loads(target.read_text()) if target.is_file() else {}
            kept = [r for r in stored.get("rows", []) if r["seed"] != seed]
            new = row_of(seed, row["status"], row["error"], row["seconds"], row.get("report"), peak_mb=row.get("peak_mb"))
            claims, _ = declared_claims(nbformat.read(paths[0].parent / f"{row['name']}.ipynb", as_version=4))
            study = table(row["name"], kept + [new], claims, (row.get("report") or {}).get("threads"), how=how)
            write_atomic(target, (json.dumps(study, indent=1) + "\n").encode())
            failed += row["status"] != "ok"
        ran = sorted(r["name"] for r in summary)  # a run of other notebooks at this seed stays on record
        runs_path = out / "runs.json"
        runs = [r for r in (json.loads(runs_path.read_text()) if runs_path.is_file() else [])
                if r["seed"] != seed or sorted(r["notebook_seconds"]) != ran]
        runs.append({"seed": seed, "when": time.strftime("%Y-%m-%d %H:%M"), "exit_code": proc.returncode,
                     "wall_seconds": round(summary[0].get("run_wall_seconds") or wall, 1),
                     "sum_seconds": round(sum(r["seconds"] for r in summary), 1),
                     "jobs": summary[0].get("run_jobs"), "yardstick_seconds": round(stick, 2),
                     "notebook_seconds": {r["name"]: round(r["seconds"], 1) for r in summary},
                     "peak_mb": {r["name"]: round(r["peak_mb"]) for r in summary if r.get("peak_mb")},
                     "status": {r["name"]: r["status"] for r in summary}})
        write_atomic(runs_path, (json.dumps(sorted(runs, key=lambda r: r["seed"]), indent=1) + "\n").encode())
        print(f"[seed {seed}] exit {proc.returncode}, wall {wall:.0f} s, yardstick {stick:.1f} s, "
              + ", ".join(f"{r['name'][:2]} {r['status']}" for r in summary), flush=True)
        shutil.rmtree(work, ignore_errors=True)
    return failed
