"""The memory allocator of the kernels that run the notebooks: TCMalloc where this system has it.

A training step on the CPU allocates and frees hundreds of tensors, most of them small; glibc's malloc serves them
from shared arenas, TCMalloc (gperftools' thread-caching malloc) from per-thread caches. PyTorch's performance tuning
guide ("CPU specific optimizations: switch memory allocator") and its CPU launcher (``torch.backends.xeon.run_cpu``)
preload TCMalloc or jemalloc for this reason. Measured on this project's models (docs/recipes.md),
TCMalloc made the training steps of notebook 05's UNets and VAE and of the tiny CLIP faster, and left every trained
parameter bit for bit the same: the allocator decides where a tensor lives, never what is computed (PyTorch aligns
every CPU tensor to 64 bytes itself).

A process's allocator is fixed when it starts, so this never changes the running process: it gives the variables
for the processes mmlab starts (the notebook kernels of ``mmlab run``; under pytest, the workers and their kernels).
``MMLAB_ALLOCATOR=system`` keeps glibc's malloc; ``MMLAB_ALLOCATOR=tcmalloc`` insists on TCMalloc (an error when it
is missing); unset, TCMalloc is used where it is installed (Debian/Ubuntu: ``apt-get install libtcmalloc-minimal4``).
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Mapping

ENV_VAR = "MMLAB_ALLOCATOR"
CHOICES = ("tcmalloc", "system")
LIBRARY = "tcmalloc_minimal"  # libtcmalloc_minimal.so.4: the allocator alone, without gperftools' profilers
INSTALL_HINT = "apt-get install libtcmalloc-minimal4"


def find_tcmalloc() -> str | None:
    """The soname of TCMalloc on this system's library path (``libtcmalloc_minimal.so.4``), or None (and off Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.util.find_library(LIBRARY)  # ldconfig's cache: the dynamic loader finds the same file by this name


def resolve(environ: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """Which allocator the started processes get: (the library to preload or None for the system's, and why).

    Raises:
        ValueError: ``MMLAB_ALLOCATOR`` is set to something other than ``tcmalloc`` or ``system``.
        RuntimeError: ``MMLAB_ALLOCATOR=tcmalloc`` and TCMalloc is not installed.
    """
    environ = os.environ if environ is None else environ
    choice = environ.get(ENV_VAR, "").strip().lower()
    if choice and choice not in CHOICES:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(CHOICES)} (or unset), got {environ[ENV_VAR]!r}")
    if choice == "system":
        return None, f"the system's malloc ({ENV_VAR}=system)"
    preloaded = environ.get("LD_PRELOAD", "")
    if name_of(preloaded) != "system":  # Colab preloads TCMalloc itself: keep what is there
        return None, f"already preloaded (LD_PRELOAD={preloaded})"
    library = find_tcmalloc()
    if library is None:
        if choice == "tcmalloc":
            raise RuntimeError(f"{ENV_VAR}=tcmalloc, but no lib{LIBRARY} is installed ({INSTALL_HINT})")
        where = "not Linux" if not sys.platform.startswith("linux") else f"TCMalloc not installed: {INSTALL_HINT}"
        return None, f"the system's malloc ({where})"
    return library, f"TCMalloc ({library}; {ENV_VAR}=system for the system's malloc)"


def preload_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{"LD_PRELOAD": ...}`` that makes a started process use TCMalloc, or ``{}``; existing entries are kept."""
    environ = os.environ if environ is None else environ
    library, _ = resolve(environ)
    if library is None:
        return {}
    existing = environ.get("LD_PRELOAD", "")
    return {"LD_PRELOAD": f"{library} {existing}".strip()}


def name_of(ld_preload: str) -> str:
    """The allocator a process started with this ``LD_PRELOAD`` uses: ``tcmalloc``, ``jemalloc`` or ``system``."""
    return next((name for name in ("tcmalloc", "jemalloc") if name in ld_preload), "system")
