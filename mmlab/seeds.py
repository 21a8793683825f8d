"""The seed study behind every asserted bar: run a notebook for seeds 0-4 and tabulate what it asserts.

A claim is asserted only if it holds for every training seed (another CPU acts as another seed). ``mmlab seeds 01``
executes notebook 01 once per seed with ``MMLAB_SEED`` set (trained artefacts of other notebooks come from the cache),
reads back the figures its claims cell records with :func:`mmlab.runtime.report`, and writes
``notebooks/seeds/NN_slug.json``: each seed's figures and pass/fail, the mean and minimum of each figure, and when,
where and with how many threads the study ran. The notebooks print that table; nothing in it is typed in.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path

import torch

from mmlab.runtime import library_versions, machine, write_atomic


def study_path(directory: Path, stem: str) -> Path:
    """Where the seed table of notebook ``stem`` lives: ``<notebooks>/seeds/<stem>.json``."""
    return directory / "seeds" / f"{stem}.json"


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per figure: mean, min and max over the seeds that recorded it."""
    names = list(dict.fromkeys(k for r in rows if r.get("bars") for k in r["bars"]))
    out = {}
    for name in names:
        values = [r["bars"][name] for r in rows if r.get("bars") and name in r["bars"]]
        out[name] = {"mean": sum(values) / len(values), "min": min(values), "max": max(values), "n": len(values)}
    return out


def format_table(study: dict) -> str:
    """The seed table as text: one row per figure, one column per seed, then mean, min and max (the worst case of a
    lower bar is the min, of an upper bar such as an error the max)."""
    rows = study["rows"]
    seeds = [r["seed"] for r in rows]
    runs = sorted({r.get("when", study["when"]) for r in rows})
    when = runs[0] if len(runs) == 1 else f"{runs[0]} to {runs[-1]}"
    versions = ", ".join(f"{k} {v}" for k, v in study.get("versions", {}).items() if k != "torch")  # torch: in machine
    lines = [f"seed study of {study['notebook']}: run {when} on {study['machine']}, {study['threads']} threads"
             + (f"; {versions}" if versions else ""),
             f"{'figure (its bar)':<58}" + "".join(f"{'s' + str(s):>7}" for s in seeds) + f"{'mean':>7}{'min':>7}{'max':>7}"]
    for name, agg in study["summary"].items():
        cells = "".join(f"{r['bars'][name]:>7.3f}" if r.get("bars") and name in r["bars"] else f"{'-':>7}" for r in rows)
        lines.append(f"{name[:57]:<58}{cells}{agg['mean']:>7.3f}{agg['min']:>7.3f}{agg['max']:>7.3f}")
    lines.append(f"{'notebook passed':<58}" + "".join(f"{'yes' if r['status'] == 'ok' else 'NO':>7}" for r in rows))
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"  seed {r['seed']}: {r['error']}")
    return "\n".join(lines)


def _refresh_table_cells(nb, stem: str, directory: Path) -> int:
    """Replace the output of each ``seeds.show(...)`` cell by what that call prints now; return how many cells."""
    import nbformat  # here: a kernel imports this module to print a table, and nbformat's import takes ~1 s

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
    ``seeds.show`` cell refreshed from the finished table — that cell only prints the stored file; when seed 0 was
    not in this run, only that cell's output is refreshed in the stored notebook.
    """
    from mmlab.runner import execute, store  # here: the notebooks import this module only for `show`

    target = study_path(path.parent, path.stem)
    target.parent.mkdir(parents=True, exist_ok=True)
    stored = load_study(path.parent, path.stem)
    kept = [dict(r, when=r.get("when", stored["when"])) for r in (stored or {}).get("rows", []) if r["seed"] not in seeds]
    rows: list[dict] = []
    seed0_nb = None
    for s in seeds:
        print(f"[seed {s}] {path.name}", flush=True)
        nb, result = execute(path, timeout=timeout, progress=progress, env={"MMLAB_SEED": str(s)})
        if s == 0 and result.status == "ok":
            seed0_nb, seed0_result = nb, result
        report = result.report or {}
        rows.append({"seed": s, "status": result.status, "error": result.error, "seconds": round(result.seconds, 1),
                     "bars": report.get("bars"), "training_seconds": report.get("seconds"),
                     "threads": report.get("threads"), "when": time.strftime("%Y-%m-%d %H:%M")})
        print(f"    {result.status} in {result.seconds:.0f} s {result.error}", flush=True)
        all_rows = sorted(kept + rows, key=lambda r: r["seed"])
        study = {"notebook": path.stem, "when": time.strftime("%Y-%m-%d %H:%M"), "seeds": [r["seed"] for r in all_rows],
                 "machine": machine(), "versions": library_versions(),
                 "threads": report.get("threads") or torch.get_num_threads(), "rows": all_rows,
                 "summary": summarise(all_rows)}
        write_atomic(target, (json.dumps(study, indent=1) + "\n").encode())  # after every seed: a long study is never lost
    if inplace and seed0_nb is not None:
        _refresh_table_cells(seed0_nb, path.stem, path.parent)
        store(path, seed0_nb, seed0_result)
        print(f"    stored seed 0's executed run in {path.name}", flush=True)
    elif inplace:  # seed 0 not re-run: the committed run stays, its table cell shows the finished table
        import nbformat

        stored_nb = nbformat.read(path, as_version=4)
        if _refresh_table_cells(stored_nb, path.stem, path.parent):
            write_atomic(path, (nbformat.writes(stored_nb) + "\n").encode())
            print(f"    refreshed the seed table shown in {path.name}", flush=True)
    return study


def load_study(directory: Path, stem: str) -> dict | None:
    """The stored seed table of notebook ``stem``, or None when no study has been run."""
    path = study_path(directory, stem)
    return json.loads(path.read_text()) if path.is_file() else None


def show(stem: str, directory: str | Path | None = None) -> None:
    """Print the stored seed table of notebook ``stem`` (how each notebook shows its study).

    Looked up in ``directory``, else beside the running notebook (``./seeds``), else in ``./notebooks/seeds``.
    """
    candidates = [Path(directory)] if directory is not None else [Path("."), Path("notebooks")]
    study = next((s for s in (load_study(d, stem) for d in candidates) if s is not None), None)
    if study is None:
        print(f"no seed study stored for {stem}: run `mmlab seeds {stem[:2]}`")
        return
    print(format_table(study))
