"""Re-stamp stored studies after a change meant to change no figure, checked twice rather than re-run.

    python -m mmlab.tools.migrate --restamp [--dir notebooks] [--rev HEAD] [--write]

A study is stored per training seed (``notebooks/studies/``); re-making its five seeds means five runs of the whole
notebook. When a change touches code a study ran against but not the arithmetic it computes (reading losses back in
batches, a device default that is the CPU here, a timing that waits for the device), a record is re-stamped with the
current digests only if:

1. it was current at ``--rev``: its code digest equals that of the notebook's cells up to the study at ``rev``, and
   each module digest equals the digest of that module's source at ``rev``; and
2. the notebook, re-executed with the current code (``mmlab run --inplace``), printed exactly the claims and measured
   figures it printed at ``rev`` (:func:`figures`; rows whose name says they are timings apart).

A record that fails either check is left as it is (re-run it: ``mmlab seeds NN``); each re-stamped record keeps
``"restamped": {"from": rev, "checked": ...}``. Without ``--write`` nothing is changed (a dry run).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import nbformat

from mmlab.provenance import module_digests, source_digest
from mmlab.studies import code_before
from mmlab.tools.migrate import ROOT, _source_at, write_studies
from mmlab.tools.stamp import PACKAGE

_ROW = re.compile(r"^(claim|measured)\s+(.+?)\s{2,}(-?[\d.]+(?:e-?\d+)?)")
_TIMING = re.compile(r"speed|seconds|\bms\b|\btime", re.I)


def figures(nb: nbformat.NotebookNode) -> dict[str, str]:
    """The claims and measured figures a notebook's stored run printed (its claims cell), timings apart."""
    out = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and "claims.check(" in cell.source:
            for output in cell.get("outputs", []):
                for line in output.get("text", "").splitlines():
                    row = _ROW.match(line)
                    if row and not _TIMING.search(row.group(2)):
                        out[f"{row.group(1)} {row.group(2)}"] = row.group(3)
    return out


def _notebook_at(path: Path, rev: str) -> nbformat.NotebookNode | None:
    rel = path.resolve().relative_to(ROOT).as_posix()
    shown = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=ROOT, capture_output=True, text=True)
    return nbformat.reads(shown.stdout, as_version=4) if shown.returncode == 0 else None


def restamp_studies(path: Path, notebook: Path, rev: str, write: bool) -> list[str]:
    """Check and re-stamp the records of one studies file (see the module doc); one line per record."""
    stored = json.loads(path.read_text())
    nb, old_nb = nbformat.read(notebook, as_version=4), _notebook_at(notebook, rev)
    if old_nb is None:
        return [f"  {path.name}: {notebook.name} is not in {rev}: nothing to check against"]
    now_figures, then_figures = figures(nb), figures(old_nb)
    if not then_figures or now_figures != then_figures:
        moved = sorted(k for k in then_figures.keys() | now_figures.keys() if then_figures.get(k) != now_figures.get(k))
        return [f"  {path.name}: the re-executed notebook's figures differ from {rev}'s ({'; '.join(moved[:4]) or 'none'}): re-run"]
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    old_sources = [c.source for c in old_nb.cells if c.cell_type == "code"]
    lines, changed = [], False
    for name, runs in stored.items():
        for key, record in runs.items():
            then = record.get("library_digest", {})
            now = {"code_digest": code_before(sources, name), "library_digest": module_digests(sorted(then), PACKAGE)}
            if (record.get("code_digest"), then) == (now["code_digest"], now["library_digest"]):
                lines.append(f"  study {name!r} seed {key}: current")
                continue
            at_rev = {m: source_digest(src) for m in then if (src := _source_at(m, rev)) is not None}
            if record.get("code_digest") != code_before(old_sources, name) or at_rev != then:
                lines.append(f"  study {name!r} seed {key}: not current at {rev}: re-run")
                continue
            record.update(now, restamped={"from": rev, "checked": f"{len(now_figures)} claims and measured figures of the "
                                          "re-executed notebook equal those at the revision"})
            lines.append(f"  study {name!r} seed {key}: re-stamped")
            changed = True
    if write and changed:
        write_studies(path, stored)
    return lines

