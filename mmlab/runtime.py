"""Where and how the notebooks run: device, seeds, offline/pretrained switch, and the weights cache.

The cache stores trained tiny models as safetensors files under ``MMLAB_CACHE`` (default
``$XDG_CACHE_HOME/mmlab`` or ``~/.cache/mmlab``). Writes are atomic (temp file + rename) and every file
carries a SHA-256 of its tensors, so a truncated or corrupted file is detected, removed and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HUB_URL = "https://huggingface.co"
_TRUTHY = {"1", "true", "yes", "on"}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUTHY


def _env_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def seed() -> int:
    """The seed of the whole pipeline: ``MMLAB_SEED`` (``mmlab run --seed N``), default 0."""
    return _env_int("MMLAB_SEED", 0, 0)


def set_threads() -> int:
    """Set torch's intra-op threads to ``MMLAB_THREADS`` when it is given; returns the count in force.

    Without it torch's own default (one per physical core) stays: no notebook caps the thread count.
    """
    threads = _env_int("MMLAB_THREADS", 0, 1)
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def report(notebook: str, bars: dict[str, float], seconds: dict[str, float] | None = None) -> None:
    """Record a notebook's asserted figures (``bars``) and its training times (``seconds``).

    Prints the times (they are reported, never asserted: ``mmlab bench`` compares them with budgets) and, when
    ``MMLAB_REPORT`` names a file (``mmlab run`` and ``mmlab seeds`` set it), writes both there as JSON.
    Called by each notebook's claims cell *before* its asserts, so a failing seed is recorded too.
    """
    seconds = {k: float(v) for k, v in (seconds or {}).items()}
    for name, value in seconds.items():
        print(f"{name:<36}{value:7.1f} s")
    target = os.environ.get("MMLAB_REPORT")
    if not target:
        return
    record = {"notebook": notebook, "seed": seed(), "threads": torch.get_num_threads(),
              "bars": {k: float(v) for k, v in bars.items()}, "seconds": seconds}
    write_atomic(Path(target), json.dumps(record, indent=1).encode())


def machine() -> str:
    """The CPU's model name, cores, and torch with the CPU kernels it chose (another CPU acts as another seed)."""
    cpuinfo = Path("/proc/cpuinfo")  # Linux only; elsewhere platform's (coarser) name
    models = ([line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
              if cpuinfo.is_file() else [])
    name = models[0] if models else platform.processor() or platform.machine()
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{name} ({os.cpu_count()} cores{gpu}), torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})"


def library_versions() -> dict[str, str]:
    """The versions of the libraries whose classes the notebooks train (a new release can move a figure)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "open_clip_torch", "diffusers", "shap", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


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


def device() -> torch.device:
    """The best available device: CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global RNGs; returns a CPU ``torch.Generator`` seeded alike.

    What ``transformers.set_seed`` does for these three, written out: the page shows which RNGs a run depends on,
    and notebooks without transformers do not import it (seconds) just to seed.
    """
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


def hub_url() -> str:
    """The model hub the pretrained path would use: ``HF_ENDPOINT`` (a mirror) when set, else huggingface.co."""
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or HUB_URL


def pretrained_decision(timeout: float = 3.0) -> tuple[bool, str]:
    """Whether to take the pretrained path, and why, in words for the Settings cell.

    Offline is the default. Pretrained only when asked — ``MMLAB_PRETRAINED=1`` (``mmlab run --pretrained`` sets
    it) or on Colab with a CUDA GPU — and then only when ``HF_HUB_OFFLINE`` is not set and the hub
    (:func:`hub_url`, honouring ``HF_ENDPOINT``) answers within ``timeout`` seconds.
    """
    if _env_flag("HF_HUB_OFFLINE"):
        return False, "offline: HF_HUB_OFFLINE is set"
    raw = os.environ.get("MMLAB_PRETRAINED", "").strip()
    if raw and raw.lower() not in _TRUTHY:
        return False, f"offline: MMLAB_PRETRAINED={raw}"
    if raw:
        why = "MMLAB_PRETRAINED=1"
    elif "google.colab" in sys.modules and torch.cuda.is_available():
        why = "Colab + CUDA"
    else:
        return False, "offline: MMLAB_PRETRAINED not set (set it to 1, or run on Colab with a GPU, for real checkpoints)"
    url = hub_url()
    if not online(url, timeout=timeout):
        return False, f"offline: {why}, but the hub {url} did not answer within {timeout:g} s"
    return True, f"pretrained: {why}, hub {url} answered"


@dataclass(frozen=True)
class Settings:
    """What a notebook's run depends on, resolved once by its Settings cell (see :func:`settings`)."""

    seed: int            # MMLAB_SEED (`mmlab run --seed N`), default 0 as CI runs
    device: torch.device  # CUDA, else MPS, else CPU: every model trains and samples here
    threads: int         # MMLAB_THREADS when set, else torch's default
    pretrained: bool     # offline unless asked (MMLAB_PRETRAINED=1, or Colab with a GPU) and the hub answers
    why: str             # the pretrained decision in words


def settings() -> Settings:
    """Resolve a notebook's settings, seed every RNG with its seed, print one line saying what was decided and why."""
    resolved = Settings(seed(), device(), set_threads(), *pretrained_decision())
    seed_everything(resolved.seed)
    print(f"seed={resolved.seed} device={resolved.device} threads={resolved.threads}; {resolved.why}")
    return resolved


def use_pretrained(timeout: float = 3.0) -> bool:
    """True only when the reader asked for the pretrained path and the hub answers (see :func:`pretrained_decision`)."""
    return pretrained_decision(timeout)[0]


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


def recipe_key(recipe: dict) -> str:
    """A short stable hash (12 hex digits) of a JSON-serialisable recipe: names cache entries by what built them."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
