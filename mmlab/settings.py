"""Where and how a notebook runs: its seed, device and threads, and whether it takes the pretrained path.

Each notebook's Settings cell calls :func:`settings` once: it reads ``MMLAB_SEED``, ``MMLAB_THREADS``,
``MMLAB_PRETRAINED`` (and ``HF_HUB_OFFLINE`` / ``HF_ENDPOINT``), seeds every RNG and prints what it decided and why.
Offline is the default; the pretrained path is taken only when asked and the hub answers (:func:`pretrained_decision`).
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

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


def device() -> torch.device:
    """The best available device: CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def exact_float32(device: torch.device) -> str:
    """On CUDA, turn TF32 off for matmuls and cuDNN convolutions; return what was done, in words ("" elsewhere).

    On Ampere and later GPUs torch may run float32 matmuls and convolutions in TF32 (a 10-bit mantissa): fast, but
    the notebooks' exact comparisons with the reference libraries (e.g. notebook 03's Shapley sum against shap,
    tolerance 1e-6) would then fail on a GPU only. Uses torch's ``fp32_precision`` flags (the legacy ``allow_tf32``
    flags must not be mixed with them).
    """
    if device.type != "cuda":
        return ""
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    torch.backends.cudnn.fp32_precision = "ieee"
    return "TF32 off (float32 matmuls and convolutions in full precision)"


def clock(device: torch.device | None = None) -> float:
    """``time.perf_counter()`` once ``device`` has finished its queued work: the clock to time GPU code with.

    CUDA (and MPS) run kernels asynchronously: without the synchronize, a timing measures only the kernel
    launches. On the CPU it is ``time.perf_counter()``.
    """
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device is not None and device.type == "mps":
        torch.mps.synchronize()
    return time.perf_counter()


def smoke() -> bool:
    """Whether this is a smoke run (``MMLAB_SMOKE=1``, set by ``mmlab run --smoke``): every training loop stops after
    :data:`SMOKE_STEPS` steps, so a GPU machine or Colab checks every cell in minutes; claims are then only reported."""
    return _env_flag("MMLAB_SMOKE")


SMOKE_STEPS = 3


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global RNGs; returns a CPU ``torch.Generator`` seeded alike.

    What ``transformers.set_seed`` does for these three, written out: the page shows which RNGs a run depends on,
    and notebooks without transformers do not import it (seconds) just to seed. The generator is a CPU one on
    purpose: noise drawn from it is the same on every device (move the tensor after drawing it), which is how the
    samplers here and diffusers' ``randn_tensor`` keep a seed's images device-independent.
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
    notes = [note for note in (exact_float32(resolved.device),
                               "smoke run: every training loop stops after a few steps, claims only reported" if smoke() else "")
             if note]
    print(f"seed={resolved.seed} device={resolved.device} threads={resolved.threads}; {resolved.why}"
          + "".join(f"; {note}" for note in notes))
    return resolved


def use_pretrained(timeout: float = 3.0) -> bool:
    """True only when the reader asked for the pretrained path and the hub answers (see :func:`pretrained_decision`)."""
    return pretrained_decision(timeout)[0]
