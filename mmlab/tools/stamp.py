"""Stale-output stamps: which code a notebook's stored outputs came from.

``mmlab run --inplace`` writes ``metadata.mmlab`` into each notebook it stores: a digest of its code cells, one per
``mmlab`` module the kernel had loaded by the end of the run (read from the kernel's ``sys.modules``, so editing the
command line, which no notebook loads, makes no notebook stale), and one per function the notebook printed with
``mmlab.show``. Code is digested as it executes (:func:`mmlab.provenance.source_digest`: the AST without docstrings
and comments), so a docstring or comment edit leaves a notebook fresh — except in a function the notebook prints,
whose printed text is digested as it is. ``stale(nb)`` says what no longer matches; ``tests/test_stale.py`` runs it on
the five committed notebooks. Stamps of the older form (SHA-256 of raw bytes) are converted by
:mod:`mmlab.tools.migrate`, which checks each module against the code the stamp was made from.
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

import nbformat

from mmlab.provenance import cells_digest, module_digests
from mmlab.source import shown_source

FORMAT = 2
PACKAGE = Path(__file__).resolve().parent.parent  # the mmlab package whose modules are digested
# Appended to a notebook by the runner and removed after it ran: the mmlab modules the kernel loaded, what it showed.
MODULES_PROBE = ("import json as _j, os as _o, sys as _s\n"
                 "_j.dump({'modules': sorted(m for m in _s.modules if m.split('.')[0] == 'mmlab'),\n"
                 "         'shown': dict(getattr(_s.modules.get('mmlab.source'), 'SHOWN', {}))},\n"
                 "        open(_o.environ['MMLAB_MODULES'], 'w'))")


def code_digest(nb: nbformat.NotebookNode) -> str:
    """Digest of the code cells, in order, as they execute (markdown and outputs are not code)."""
    return cells_digest(cell.source for cell in nb.cells if cell.cell_type == "code")


def shown_digests(names: list[str]) -> dict[str, str]:
    """SHA-256 of the text ``mmlab.show`` prints now for each ``module.qualname`` ("missing" when it is gone)."""
    out = {}
    for name in names:
        module, _, qualname = name.partition(".")
        obj, digest = None, "missing"
        parts = name.split(".")
        for cut in range(len(parts) - 1, 0, -1):  # the longest importable module prefix, then the attribute path
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
                digest = hashlib.sha256(shown_source(obj).encode("utf-8")).hexdigest()
            except (AttributeError, OSError, TypeError):
                digest = "missing"
            break
        out[name] = digest
    return out


def stamp(nb: nbformat.NotebookNode, modules: list[str], shown: dict[str, str] | None = None, **run: object) -> dict:
    """Write ``metadata.mmlab``: the code digest, each loaded module's digest, each shown function's, and ``run``'s facts."""
    record = {"format": FORMAT, "code_digest": code_digest(nb),
              "library_digest": module_digests(sorted(modules), PACKAGE), "shown_sha256": dict(sorted((shown or {}).items())),
              **run}
    nb.metadata["mmlab"] = record
    return record


def stale(nb: nbformat.NotebookNode) -> list[str]:
    """Why the stored outputs may not come from the current code (empty when the stamp matches)."""
    record = nb.metadata.get("mmlab")
    if not isinstance(record, dict) or "code_digest" not in record and "code_sha256" not in record:
        return ["it has no stamp (metadata.mmlab): its outputs were not stored by `mmlab run --inplace`"]
    if record.get("format") != FORMAT:
        return ["its stamp is of an older form: convert it with `python -m mmlab.tools.migrate` or re-run it"]
    reasons = []
    if record["code_digest"] != code_digest(nb):
        reasons.append("its code cells changed")
    then = record.get("library_digest", {})
    changed = sorted(name for name, digest in module_digests(sorted(then), PACKAGE).items() if digest != then[name])
    if changed:
        reasons.append("mmlab modules it ran against changed: " + ", ".join(changed))
    shown = record.get("shown_sha256", {})
    edited = sorted(name for name, digest in shown_digests(sorted(shown)).items() if digest != shown[name])
    if edited:
        reasons.append("functions it prints changed: " + ", ".join(edited))
    return reasons


def stale_studies(nb: nbformat.NotebookNode, stored: dict) -> list[str]:
    """Why the stored studies of notebook ``nb`` may not come from its current code: its code up to the cell that runs
    a study changed since it ran, or an ``mmlab`` module it ran against did (empty when all match)."""
    from mmlab.studies import code_before

    sources = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    reasons = []
    for name, runs in stored.items():
        now = code_before(sources, name)
        for key, record in runs.items():
            if "code_digest" not in record:
                reasons.append(f"study {name!r} (seed {key}): stored in an older form (run `python -m mmlab.tools.migrate`)")
                continue
            if record["code_digest"] != now:
                reasons.append(f"study {name!r} (seed {key}): the notebook's code up to the study changed since it ran")
            then = record.get("library_digest", {})
            changed = sorted(m for m, d in module_digests(sorted(then), PACKAGE).items() if d != then[m])
            if changed:
                reasons.append(f"study {name!r} (seed {key}): mmlab modules it ran against changed: {', '.join(changed)}")
    return reasons
