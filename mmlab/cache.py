"""The one "cached, else train" helper: every trained artefact is written whole or not at all, and verified on load.

An artefact is a folder ``<cache>/<name>-<recipe hash>/`` (the hash covers the recipe and the library versions, so a
cache written by another version is never loaded) holding the files a ``save`` function writes — safetensors weights
and JSON configs — plus ``mmlab_manifest.json`` with the SHA-256 of every file. :func:`cached`:

1. takes a file lock beside the folder, so two processes (Jupyter and ``mmlab run``) never train the same artefact
   twice: the second waits, then loads what the first saved;
2. loads the folder if every file matches its manifest; anything missing, truncated or altered is removed with one
   line saying so, and rebuilt;
3. otherwise builds the object, saves it into a temporary folder beside the final one, writes the manifest last,
   and renames the folder into place in one step. A run killed mid-write leaves only a temporary folder, which the
   next run removes.

When the cache cannot be written (read-only, full disk), the object is saved to a temporary folder instead, with a
warning naming ``MMLAB_CACHE``: the reader loses the cache, never the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from filelock import FileLock

from mmlab.files import write_atomic
from mmlab.settings import device as runtime_device
from mmlab.settings import smoke

T = TypeVar("T")
MANIFEST = "mmlab_manifest.json"
FORMAT = 1  # the manifest's layout; a different value means "written by an incompatible mmlab": rebuild


_warned_cache: set[str] = set()


def cache_dir() -> Path:
    """The weights cache: ``$MMLAB_CACHE``, else ``$XDG_CACHE_HOME/mmlab``, else ``~/.cache/mmlab``.

    A folder that cannot be created or written is replaced by a temporary one, with one warning naming
    ``MMLAB_CACHE`` (trained models then last for this machine's session only).
    """
    if os.environ.get("MMLAB_CACHE"):
        path = Path(os.environ["MMLAB_CACHE"])
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        path = Path(base) / "mmlab"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
        return path
    except OSError as exc:
        fallback = Path(tempfile.gettempdir()) / f"mmlab-cache-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
        fallback.mkdir(parents=True, exist_ok=True)
        if str(path) not in _warned_cache:
            _warned_cache.add(str(path))
            warnings.warn(f"mmlab cache: {path} is not a writable folder ({type(exc).__name__}: {exc}); using {fallback}. "
                          "Set MMLAB_CACHE to a writable folder to keep trained models.", stacklevel=2)
        return fallback


def recipe_key(recipe: dict) -> str:
    """A short stable hash (12 hex digits) of a JSON-serialisable recipe: names cache entries by what built them."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]



def keyed(recipe: dict, device=None) -> dict:
    """What a cache entry is keyed by: ``recipe``, plus the device type it was trained on when that is not the CPU (a
    model trained on a GPU is another model: other float sums), plus ``"smoke"`` in a smoke run (a few steps only).

    ``device`` defaults to ``settings.device()``, where ``build`` trains when it is given none. CPU keys carry no
    device, so CPU caches made before the device entered the key stay valid.
    """
    device_type = getattr(device, "type", device) or runtime_device().type
    extra = {} if device_type == "cpu" else {"device": device_type}
    if smoke():
        extra["smoke"] = True
    return {**recipe, **extra} if extra else recipe


def artefact_dir(name: str, recipe: dict) -> Path:
    """The folder of artefact ``name`` built by ``recipe``: ``<cache>/<name>-<12 hex digits>``."""
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a non-empty folder name without '/', got {name!r}")
    return cache_dir() / f"{name}-{recipe_key(recipe)}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory: Path, recipe: dict) -> None:
    """Checksum every file of ``directory`` into its manifest (written last, atomically)."""
    files = {str(p.relative_to(directory)): _sha256(p) for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST}
    if not files:
        raise ValueError(f"save wrote no file into {directory}")
    manifest = {"format": FORMAT, "recipe": recipe, "files": files}
    write_atomic(directory / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True, default=str).encode())


def verify(directory: Path) -> str | None:
    """None when ``directory`` is a complete artefact; else what is wrong with it (``"missing"`` when absent)."""
    if not directory.exists():
        return "missing"
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"has no readable manifest ({type(exc).__name__})"
    if manifest.get("format") != FORMAT:
        return f"was written in cache format {manifest.get('format')!r}, not {FORMAT}"
    for rel, digest in files.items():
        path = directory / rel
        if not path.is_file():
            return f"is missing {rel}"
        if _sha256(path) != digest:
            return f"has a corrupt {rel} (checksum mismatch)"
    return None


def _lock(directory: Path) -> FileLock:
    """The lock of one artefact, kept in ``<cache>/.locks/`` so the cache lists only artefacts."""
    locks = directory.parent / ".locks"
    locks.mkdir(exist_ok=True)
    return FileLock(str(locks / f"{directory.name}.lock"))


def _backup(directory: Path) -> Path:
    return directory.parent / f".{directory.name}.old"


def _clean_stale(directory: Path) -> None:
    """Undo what a killed run left (we hold the lock, so no writer is alive): temporary folders are removed; a
    complete old artefact set aside by an interrupted replacement is put back."""
    for tmp in directory.parent.glob(f".{directory.name}.*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
    backup = _backup(directory)
    if backup.exists():
        if not directory.exists() and verify(backup) is None:
            os.replace(backup, directory)
        else:
            shutil.rmtree(backup, ignore_errors=True)


def _save_whole(obj, save: Callable[[object, Path], None], directory: Path, recipe: dict) -> None:
    """Save into a temporary folder beside ``directory``, checksum it, then rename it into place."""
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
    try:
        save(obj, tmp)
        write_manifest(tmp, recipe)
        if directory.exists():  # replacing (retrain): the old folder stays complete until the new one is
            os.replace(directory, _backup(directory))
        os.replace(tmp, directory)  # one rename: the folder appears complete or not at all
        shutil.rmtree(_backup(directory), ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fallback(name: str, recipe: dict, obj: T, save: Callable[[T, Path], None], directory: Path, exc: OSError) -> Path:
    """Save into a fresh temporary folder when the cache cannot be written; warn once, naming MMLAB_CACHE."""
    fallback = Path(tempfile.mkdtemp(prefix=f"mmlab-{name}-"))
    warnings.warn(f"mmlab cache: could not write {directory} ({exc}); using {fallback} for this session. "
                  "Set MMLAB_CACHE to a writable folder with free space to keep trained models.", stacklevel=3)
    save(obj, fallback)
    write_manifest(fallback, recipe)
    return fallback


def store(name: str, recipe: dict, obj: T, save: Callable[[T, Path], None]) -> Path:
    """Save an object trained elsewhere (e.g. on a notebook's page) as artefact ``name``, whole or not at all.

    Returns the artefact's folder; when the cache cannot be written, a temporary folder (with a warning).
    """
    directory = artefact_dir(name, recipe)
    try:
        with _lock(directory):
            _clean_stale(directory)
            _save_whole(obj, save, directory, recipe)
        return directory
    except OSError as exc:
        return _fallback(name, recipe, obj, save, directory, exc)


def cached(name: str, recipe: dict, build: Callable[[], T], save: Callable[[T, Path], None],
           load: Callable[[Path], T], retrain: bool = False, device=None) -> T:
    """``load`` artefact ``name`` of ``recipe`` from the cache, else ``build()`` it, ``save`` it whole, and load it.

    Args:
        name: short artefact name, e.g. ``"tiny_clip"``; with the hash of ``recipe`` it names the folder.
        recipe: JSON-serialisable: everything that determines the result (sizes, steps, seed, library versions).
        build: trains the object.
        save: ``save(obj, folder)`` writes the object's files into ``folder`` (safetensors and JSON, no pickle).
        load: ``load(folder)`` reads it back; the result of :func:`cached` is always what ``load`` returns, so the
            first run and every later run see the same object.
        retrain: ignore an existing artefact and rebuild it.
        device: where ``build`` trains (default ``settings.device()``): its type enters the key (:func:`keyed`).
    """
    recipe = keyed(recipe, device)
    directory = artefact_dir(name, recipe)
    try:
        lock = _lock(directory)
        lock.acquire()
    except OSError as exc:  # no lock file can be made here: the cache folder is not writable
        return load(_fallback(name, recipe, build(), save, directory, exc))
    try:
        _clean_stale(directory)
        problem = "retrain" if retrain else verify(directory)
        if problem is None:
            try:
                return load(directory)
            except Exception as exc:  # noqa: BLE001 - a folder that verifies but does not load is rebuilt, loudly
                problem = f"does not load ({type(exc).__name__}: {exc})"
        if problem not in ("missing", "retrain"):  # a retrained artefact's old folder stays until the new one is whole
            print(f"mmlab cache: {directory.name} {problem}; removing it and rebuilding")
            shutil.rmtree(directory, ignore_errors=True)
        obj = build()
        try:
            _save_whole(obj, save, directory, recipe)
        except OSError as exc:
            return load(_fallback(name, recipe, obj, save, directory, exc))
        return load(directory)
    finally:
        lock.release()


def entries() -> list[tuple[Path, int, float]]:
    """The cached artefacts: ``(folder, bytes, modified time)``, newest first (for ``mmlab cache``)."""
    out = []
    for path in cache_dir().iterdir():
        if path.is_dir() and not path.name.startswith("."):
            size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            out.append((path, size, path.stat().st_mtime))
    return sorted(out, key=lambda e: -e[2])
