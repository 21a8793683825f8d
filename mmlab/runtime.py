"""Where and how the notebooks run: device, seeds, offline/pretrained switch, and the weights cache.

The cache stores trained tiny models as safetensors files under ``MMLAB_CACHE`` (default
``$XDG_CACHE_HOME/mmlab`` or ``~/.cache/mmlab``). Writes are atomic (temp file + rename) and every file
carries a SHA-256 of its tensors, so a truncated or corrupted file is detected, removed and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

HUB_URL = "https://huggingface.co"
_TRUTHY = {"1", "true", "yes", "on"}


def device() -> torch.device:
    """The best available device: CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global RNGs; returns a CPU ``torch.Generator`` seeded alike."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def online(url: str = HUB_URL, timeout: float = 3.0) -> bool:
    """Whether the model hub answers, decided within ``timeout`` seconds and never hanging.

    Returns False at once when ``HF_HUB_OFFLINE`` is set to a true value. Otherwise sends a HEAD request
    from a daemon thread and waits at most ``timeout`` seconds for any HTTP answer (DNS included).
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUTHY:
        return False
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    answer: list[bool] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
            answer.append(True)
        except urllib.error.HTTPError:  # the server answered (e.g. 403/404): it is reachable
            answer.append(True)
        except Exception:  # noqa: BLE001 - any failure to connect means "offline"
            answer.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


def cache_dir() -> Path:
    """The weights cache: ``$MMLAB_CACHE``, else ``$XDG_CACHE_HOME/mmlab``, else ``~/.cache/mmlab``."""
    if os.environ.get("MMLAB_CACHE"):
        path = Path(os.environ["MMLAB_CACHE"])
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        path = Path(base) / "mmlab"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _digest(tensors: dict[str, torch.Tensor]) -> str:
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
    meta = {"sha256": _digest(tensors), "mmlab": json.dumps(metadata or {}, sort_keys=True)}
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
        if meta.get("sha256") != _digest(tensors):
            raise ValueError("checksum mismatch")
        return tensors, json.loads(meta.get("mmlab", "{}"))
    except Exception as exc:  # noqa: BLE001 - any failure to read means the file is bad
        print(f"mmlab cache: {path.name} is corrupt ({type(exc).__name__}: {exc}); removing it and rebuilding")
        path.unlink(missing_ok=True)
        return None


def recipe_key(recipe: dict) -> str:
    """A short stable hash (12 hex digits) of a JSON-serialisable recipe: names cache entries by what built them."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def cached_state(
    name: str,
    build: Callable[[], dict[str, torch.Tensor]],
    recipe: dict,
    retrain: bool = False,
) -> dict[str, torch.Tensor]:
    """Tensors of ``name`` built by ``build()`` once, then read from the cache.

    The file name carries a hash of ``recipe`` (a JSON-serialisable dict), so changing the recipe
    trains anew instead of loading stale weights.

    Args:
        name: short name of the artefact, e.g. ``"tiny_clip"``.
        build: function returning the tensors (e.g. a trained model's ``state_dict()``).
        recipe: everything that determines the result (sizes, steps, seed, version).
        retrain: ignore an existing file and rebuild it.
    """
    path = cache_dir() / f"{name}-{recipe_key(recipe)}.safetensors"
    loaded = None if retrain else load_state(path)
    if loaded is not None:
        return loaded[0]
    tensors = build()
    save_state(path, tensors, metadata={"name": name, "recipe": recipe})
    return tensors
