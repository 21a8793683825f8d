"""Stale-output stamps: which code a notebook's stored outputs came from.

``mmlab run --inplace`` writes ``metadata.mmlab`` into each notebook it stores: a SHA-256 of its code cells, and
one per ``mmlab`` module the kernel had loaded by the end of the run (read from the kernel's ``sys.modules``, so
editing the runner or the book, which no notebook loads, does not make a notebook stale). ``stale(nb)`` says what
no longer matches; ``tests/test_stale.py`` runs it on the five committed notebooks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nbformat

PACKAGE = Path(__file__).resolve().parent
# Appended to a notebook by the runner and removed after it ran: the mmlab modules the kernel loaded.
MODULES_PROBE = ("import json as _j, os as _o, sys as _s\n"
                 "_j.dump(sorted(m for m in _s.modules if m.split('.')[0] == 'mmlab'), open(_o.environ['MMLAB_MODULES'], 'w'))")


def code_digest(nb: nbformat.NotebookNode) -> str:
    """SHA-256 of the code cells' sources, in order (markdown and outputs are not code)."""
    h = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            h.update(cell.source.encode("utf-8") + b"\x00")
    return h.hexdigest()


def module_file(name: str) -> Path | None:
    """The source file of an ``mmlab`` module of this installation (None when it no longer exists)."""
    rel = Path(*name.split(".")[1:])
    for candidate in (PACKAGE / rel / "__init__.py", (PACKAGE / rel).with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def library_digests(modules: list[str]) -> dict[str, str]:
    """SHA-256 of each named module's source file ("missing" for a module that is gone)."""
    digests = {}
    for name in modules:
        path = module_file(name)
        digests[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path else "missing"
    return digests


def stamp(nb: nbformat.NotebookNode, modules: list[str], **run: object) -> dict:
    """Write ``metadata.mmlab``: the code digest, the digest of each module the run loaded, and ``run``'s facts."""
    record = {"code_sha256": code_digest(nb), "library_sha256": library_digests(sorted(modules)), **run}
    nb.metadata["mmlab"] = record
    return record


def stale(nb: nbformat.NotebookNode) -> list[str]:
    """Why the stored outputs may not come from the current code (empty when the stamp matches)."""
    record = nb.metadata.get("mmlab")
    if not isinstance(record, dict) or "code_sha256" not in record:
        return ["it has no stamp (metadata.mmlab): its outputs were not stored by `mmlab run --inplace`"]
    reasons = []
    if record["code_sha256"] != code_digest(nb):
        reasons.append("its code cells changed")
    then = record.get("library_sha256", {})
    changed = sorted(name for name, digest in library_digests(sorted(then)).items() if digest != then[name])
    if changed:
        reasons.append("mmlab modules it ran against changed: " + ", ".join(changed))
    return reasons
