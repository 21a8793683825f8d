"""Private temporary folders for notebook kernels, removed with everything in it when the kernel is done.

A notebook's temporary files (notebook 04's ``BatchStore`` writes ~1 GB of batches) are deleted by the kernel at exit.
A kernel that is killed instead (pytest's nbval stops its kernels that way; Ctrl-C, a timeout) never gets there, and
each such run used to leave its files in ``/tmp``. So ``mmlab run`` gives every kernel, and ``pytest`` its whole
session, a folder of its own as ``TMPDIR``, and removes it afterwards; a folder whose owner died before it could
(``kill -9``) is removed by the next run. Folder names carry the owner's process id: ``mmlab-kernel-<pid>-<random>``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sweep(prefix: str, parent: str | Path | None = None) -> list[Path]:
    """Remove the ``<prefix><pid>-*`` folders in ``parent`` (default: the temporary folder) whose owner is gone."""
    parent = Path(parent if parent is not None else tempfile.gettempdir())
    pattern = re.compile(re.escape(prefix) + r"(\d+)-")
    removed = []
    for folder in parent.glob(f"{prefix}*"):
        owner = pattern.match(folder.name)
        if owner and folder.is_dir() and not _alive(int(owner.group(1))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def make(prefix: str, parent: str | Path | None = None) -> Path:
    """A new empty folder ``<parent>/<prefix><this pid>-<random>`` (after sweeping the orphans of ``prefix``)."""
    if not prefix or os.sep in prefix:
        raise ValueError(f"prefix must be a non-empty folder-name prefix, got {prefix!r}")
    sweep(prefix, parent)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))

