"""Files written whole or not at all, and safetensors files that carry a checksum of their tensors.

:func:`write_atomic` writes a temporary file in the target's folder, fsyncs it and renames it into place, so a
reader (or a killed run) never sees half a file. :func:`save_state` / :func:`load_state` keep tensors in
safetensors with a SHA-256 of their bytes: a truncated or corrupted file is detected, removed and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all: a temporary file in the same folder, fsync, rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_state(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> Path:
    """Atomically write ``tensors`` to a safetensors file with a SHA-256 and JSON ``metadata``.

    Args:
        path: target file; its directory is created.
        tensors: name -> tensor (copied to CPU, made contiguous; shared storage is cloned).
        metadata: JSON-serialisable extra information (e.g. the recipe that produced the weights).
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta = {"sha256": tensor_digest(tensors), "mmlab": json.dumps(metadata or {}, sort_keys=True)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict] | None:
    """Load a file written by :func:`save_state`; returns ``(tensors, metadata)``.

    Returns None when the file is absent. A truncated or corrupted file (unreadable, or whose tensors no
    longer match their SHA-256) is removed and None is returned, so the caller rebuilds it.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("sha256") != tensor_digest(tensors):
            raise ValueError("checksum mismatch")
        return tensors, json.loads(meta.get("mmlab", "{}"))
    except Exception as exc:  # noqa: BLE001 - any failure to read means the file is bad
        print(f"mmlab cache: {path.name} is corrupt ({type(exc).__name__}: {exc}); removing it and rebuilding")
        path.unlink(missing_ok=True)
        return None
