"""Convert stamps and stored studies of the older form (SHA-256 of each file's bytes) to digests of executing code,
checked against the code they were made from, so that a pure move or a new digest form re-runs nothing.

    python -m mmlab.tools.migrate [--dir notebooks] [--rev REV] [--write]

For every module an old record names, the script finds the source the record was made from: the file's version in
git history (at ``--rev`` and before, under its old path) whose bytes hash to the recorded SHA-256. That old source
must execute as the current code does — the same AST without docstrings, module for module, or, for modules that
moved or were split (:data:`MOVED`), the same top-level definitions across the group — and the notebook's code cells
must hash to the recorded SHA-256 (for a study: the cells up to the study; a notebook's cells are compared as they
are now). Only then is the record re-stamped, with the current digests; anything else is listed as "re-run". Without
``--write`` nothing is changed (a dry run).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import subprocess
from pathlib import Path

import nbformat

from mmlab.files import write_atomic
from mmlab.provenance import module_digests, module_file
from mmlab.tools import stamp

ROOT = Path(__file__).resolve().parent.parent.parent
# Modules that moved (old name -> the modules that hold its definitions now). Modules not listed kept their name.
MOVED: dict[str, tuple[str, ...]] = {
    "mmlab.clip": ("mmlab.clip", "mmlab.clip.loss", "mmlab.clip.model", "mmlab.clip.views", "mmlab.clip.zero_shot",
                   "mmlab.clip.training"),
    "mmlab.clip_training": ("mmlab.clip.training",),
    "mmlab.runtime": ("mmlab.settings", "mmlab.files", "mmlab.provenance", "mmlab.cache"),
    **{f"mmlab.{m}": (f"mmlab.tools.{m}",) for m in ("cli", "runner", "book", "stamp", "bench", "doctor", "lanes",
                                                      "allocator", "scratch")},
}

# Definitions a move removed on purpose, by old module: the plumbing of the old layout, not code a figure depends on.
REMOVED: dict[str, tuple[str, ...]] = {"mmlab.clip": ("_TRAINING", "__getattr__"),
                                       "mmlab.runtime": ("report",)}  # report() became mmlab.claims
# Definitions a move added, by new module: the digest machinery of the new stamps (no figure depends on it).
ADDED: dict[str, tuple[str, ...]] = {"mmlab.provenance": ("_without_docstrings", "cells_digest", "module_digests",
                                                          "module_file", "source_digest")}
# Modules that store and label a study's result but never run inside it (the study's function does not call them):
# their edits cannot change a stored figure.
BOOKKEEPING = ("mmlab.studies", "mmlab.seeds", "mmlab.source")  # store, print, show: no figure

# Import lines of a notebook's code cells that a move rewrote: old line -> (new lines, names that exist on one side
# only, which must not be used in the cells a study depends on). ``report`` became ``mmlab.claims``, used only in the
# claims cell, below every study.
IMPORT_REWRITES: dict[str, tuple[str, tuple[str, ...]]] = {
    "from mmlab.runtime import report, settings": ("from mmlab.settings import settings\nfrom mmlab import claims",
                                                   ("report", "claims")),
}


def _old_path(name: str) -> list[str]:
    rel = Path(*name.split(".")[1:])
    return [str(Path("mmlab") / rel / "__init__.py"), str((Path("mmlab") / rel).with_suffix(".py"))]


def old_source(name: str, sha256: str, rev: str) -> str | None:
    """The version of module ``name`` (under its path at the time) whose bytes hash to ``sha256``, from git history."""
    for path in _old_path(name):
        revs = subprocess.run(["git", "log", "--format=%H", rev, "--", path], cwd=ROOT, capture_output=True, text=True).stdout.split()
        for commit in revs:
            blob = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True)
            if blob.returncode == 0 and hashlib.sha256(blob.stdout).hexdigest() == sha256:
                return blob.stdout.decode("utf-8")
    return None


def _source_at(name: str, rev: str) -> str | None:
    """Module ``name``'s source at ``rev`` (under its path then), or None when it did not exist."""
    for path in _old_path(name):
        shown = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True)
        if shown.returncode == 0:
            return shown.stdout.decode("utf-8")
    return None


def definitions(source: str, removed: tuple[str, ...] = ()) -> list[str]:
    """The top-level statements of a module as they execute (no imports, docstrings, ``__all__``, nor the definitions
    named in ``removed``), sorted: what a move must keep."""
    from mmlab.provenance import _without_docstrings

    tree = _without_docstrings(ast.parse(source))
    keep = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.Pass)):
            continue
        names = ([t.id for t in node.targets if isinstance(t, ast.Name)] if isinstance(node, ast.Assign)
                 else [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else [])
        if "__all__" in names or set(names) & set(removed):
            continue
        keep.append(ast.dump(node, include_attributes=False))
    return sorted(keep)


def _groups(moved_old: list[str]) -> list[tuple[list[str], list[str]]]:
    """Old modules that moved, grouped with the modules now holding their definitions (groups sharing a target merge)."""
    groups: list[tuple[set[str], set[str]]] = []
    for name in moved_old:
        olds, news = {name}, set(MOVED[name])
        for g in [g for g in groups if g[1] & news]:
            groups.remove(g)
            olds |= g[0]
            news |= g[1]
        groups.append((olds, news))
    return [(sorted(o), sorted(n)) for o, n in groups]


def convert_modules(old: dict[str, str], rev: str) -> tuple[dict[str, str] | None, str]:
    """New-form digests for an old ``{module: sha256 of bytes}``, or None and why the code is not the same."""
    sources = {}
    for name, digest in old.items():
        source = old_source(name, digest, rev)
        if source is None:
            return None, f"{name}: no version in git history hashes to the recorded SHA-256"
        sources[name] = source
    new_names: set[str] = set()
    grouped: set[str] = set()
    for olds, news in _groups([n for n in old if n in MOVED]):
        olds = sorted(set(olds) | {n for n in news if n in old and n not in MOVED})  # a target that existed before
        files = {n: module_file(n) for n in news}
        if any(f is None for f in files.values()):
            return None, f"modules missing now: {sorted(n for n, f in files.items() if f is None)}"
        before = [d for n in olds for d in definitions(sources[n], REMOVED.get(n, ()))]
        for n in (n for n in news if n not in old and n not in MOVED):  # a target the record did not load: as at rev
            before += definitions(_source_at(n, rev) or "")
        before = sorted(before)
        after = sorted(d for n, f in files.items() for d in definitions(f.read_text(encoding="utf-8"), ADDED.get(n, ())))
        if before != after:
            return None, f"{', '.join(olds)} -> {', '.join(news)}: not the same definitions"
        new_names |= set(news)
        grouped |= set(olds)
    for name in (n for n in old if n not in MOVED and n not in grouped and n not in BOOKKEEPING):
        path = module_file(name)
        if path is None or definitions(path.read_text(encoding="utf-8")) != definitions(sources[name]):
            return None, f"{name}: its code changed"
    return module_digests(sorted(new_names | {n for n in old if n not in MOVED}), stamp.PACKAGE), "same code"


def migrate_notebook(path: Path, rev: str, write: bool) -> str:
    nb = nbformat.read(path, as_version=4)
    record = nb.metadata.get("mmlab", {})
    if record.get("format") == stamp.FORMAT:
        return "current form"
    raw = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            raw.update(cell.source.encode("utf-8") + b"\x00")
    if raw.hexdigest() != record.get("code_sha256"):
        return "re-run: its code cells changed"
    digests, why = convert_modules(record.get("library_sha256", {}), rev)
    if digests is None:
        return f"re-run: {why}"
    new = {k: v for k, v in record.items() if k not in ("code_sha256", "library_sha256")}
    nb.metadata["mmlab"] = {"format": stamp.FORMAT, "code_digest": stamp.code_digest(nb), "library_digest": digests,
                            "shown_sha256": {}, **new}
    if write:
        write_atomic(path, (nbformat.writes(nb) + "\n").encode())
    return "converted (functions it prints are digested from its next run)"


def _raw_digest(sources: list[str]) -> str:
    raw = hashlib.sha256()
    for source in sources:
        raw.update(source.encode("utf-8") + b"\x00")
    return raw.hexdigest()


def same_code_up_to(old: list[str], new: list[str], name: str) -> tuple[bool, str]:
    """Whether the code cells up to the one running study ``name`` execute the same in ``old`` (the notebook the study
    ran in) and ``new``: the same AST cell for cell, once the old cells' import lines in :data:`IMPORT_REWRITES` are
    rewritten — and only if no name such a rewrite removes or adds is used in those cells."""
    from mmlab.provenance import source_digest
    from mmlab.studies import calls_study

    k_old = next((k for k, s in enumerate(old) if calls_study(s, name)), None)
    k_new = next((k for k, s in enumerate(new) if calls_study(s, name)), None)
    if k_old is None or k_new is None or k_old != k_new:
        return False, "the cells up to the study differ in number"
    before, after = old[:k_old + 1], new[:k_new + 1]
    rewritten = []
    for source in before:
        for line, (replacement, names) in IMPORT_REWRITES.items():
            if line in source:
                rest = source.replace(line, "")
                used = [n for n in names if re.search(rf"\b{n}\b", rest + "".join(before[before.index(source) + 1:]))]
                if used:
                    return False, f"a rewritten import's names are used before the study: {used}"
                source = source.replace(line, replacement)
        rewritten.append(source)
    if [source_digest(s) for s in rewritten] == [source_digest(s) for s in after]:
        return True, "the same code up to the study"
    if [_without_printed_text(s) for s in rewritten] == [_without_printed_text(s) for s in after]:
        return True, "the same code up to the study but for the text of print() calls"
    return False, "the code up to the study changed"


def _without_printed_text(source: str) -> str:
    """A cell's AST with the string literals inside ``print(...)`` calls blanked (a label a cell prints cannot change
    what a later study computes); the source itself when it does not parse."""
    from mmlab.provenance import _without_docstrings

    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
    try:
        tree = _without_docstrings(ast.parse("\n".join(lines)))
    except SyntaxError:
        return source
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            for inner in ast.walk(node):
                if isinstance(inner, ast.Constant) and isinstance(inner.value, str):
                    inner.value = ""
    return ast.dump(tree, include_attributes=False)


def migrate_studies(path: Path, notebook: Path, rev: str, write: bool) -> list[str]:
    from mmlab.studies import code_before

    stored = json.loads(path.read_text())
    nb = nbformat.read(notebook, as_version=4)
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    rel = notebook.resolve().relative_to(ROOT).as_posix()
    shown = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=ROOT, capture_output=True, text=True)
    old = ([c.source for c in nbformat.reads(shown.stdout, as_version=4).cells if c.cell_type == "code"]
           if shown.returncode == 0 else [])
    lines, changed = [], False
    for name, runs in stored.items():
        for key, record in runs.items():
            if "code_digest" in record:
                lines.append(f"  study {name!r} seed {key}: current form")
                continue
            if record.get("code_sha256") not in (_raw_digest(sources), _raw_digest(old)):
                lines.append(f"  study {name!r} seed {key}: re-run: the notebook's code cells are not those it ran with")
                continue
            ok, why = same_code_up_to(old if record["code_sha256"] == _raw_digest(old) else sources, sources, name)
            if not ok:
                lines.append(f"  study {name!r} seed {key}: re-run: {why}")
                continue
            digests, why = convert_modules(record.get("library_sha256", {}), rev)
            if digests is None:
                lines.append(f"  study {name!r} seed {key}: re-run: {why}")
                continue
            record["code_digest"], record["library_digest"] = code_before(sources, name), digests
            del record["code_sha256"], record["library_sha256"]
            lines.append(f"  study {name!r} seed {key}: converted")
            changed = True
    if write and changed:
        write_studies(path, stored)
    return lines


def write_studies(path: Path, stored: dict) -> None:
    """A studies file, written whole, in the layout ``mmlab.studies`` writes."""
    write_atomic(path, (json.dumps(stored, indent=1, sort_keys=True) + "\n").encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=ROOT / "notebooks")
    parser.add_argument("--rev", default="HEAD", help="git history to search for the old sources (default HEAD)")
    parser.add_argument("--write", action="store_true", help="write the converted records (default: a dry run)")
    parser.add_argument("--restamp", action="store_true",
                        help="re-stamp stored studies after a change that keeps every figure (mmlab.tools.restamp)")
    args = parser.parse_args(argv)
    for path in sorted(args.dir.glob("*.ipynb")):
        studies = args.dir / "studies" / f"{path.stem}.json"
        if args.restamp:
            from mmlab.tools.restamp import restamp_studies

            if studies.is_file():
                print(f"{studies.name}:\n" + "\n".join(restamp_studies(studies, path, args.rev, args.write)))
            continue
        print(f"{path.name}: {migrate_notebook(path, args.rev, args.write)}")
        if studies.is_file():
            print("\n".join(migrate_studies(studies, path, args.rev, args.write)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
