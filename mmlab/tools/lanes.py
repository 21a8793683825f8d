"""How many notebooks ``mmlab run`` executes at once, and the threads each kernel gets.

On a CPU one kernel keeps its second thread only partly busy (docs/recipes.md), so two notebooks
side by side on one thread each finish sooner than one after the other on two (docs/measurements.md, "Run time"). Every
bar holds for seeds 0-4 that way too (``notebooks/seeds/one-thread``, ``mmlab seeds --suite``), so two at a
time is the default on a CPU with the cores and memory for two kernels (``auto_jobs``).
"""

from __future__ import annotations

import os


def cores() -> int:
    """CPU cores this process may use (its affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


KERNEL_PEAK_GB = 1.6  # the largest kernel peak any cold run recorded (docs/measurements.md, "Run time")


def _memory_gb() -> float | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (AttributeError, ValueError, OSError):  # not a POSIX system that reports it
        return None


def _accelerator() -> str | None:
    """The accelerator the notebooks would train on (``settings.device()``, e.g. "CUDA"), or None on a CPU."""
    from mmlab.settings import device  # imports torch: only when --jobs is left to choose

    kind = device().type
    return None if kind == "cpu" else kind.upper()


def auto_jobs(env: dict[str, str] | None = None, inplace: bool = False) -> tuple[int, str]:
    """How many notebooks ``mmlab run`` runs at once when ``--jobs`` is not given, and why.

    ``MMLAB_JOBS`` decides when set. Otherwise two on a CPU with the cores for two kernels (each gets half of them, at
    most ``MAX_THREADS``, or the caller's ``MMLAB_THREADS``) and the memory (2 x 1.6 GB plus room): the tiny models keep
    a second thread of one kernel only partly busy, so two side by side on one thread each finish sooner than one after
    the other on two, and every bar holds for seeds 0-4 on one thread (``notebooks/seeds/one-thread``). One on a GPU
    (one device, where the training is not CPU-bound), where the cores or memory are short, and with ``inplace``: the outputs stored in the
    notebooks come from the configuration of their seed tables (one at a time, two threads), so they match them.
    """
    env = {**os.environ, **(env or {})}
    if env.get("MMLAB_JOBS"):
        value = env["MMLAB_JOBS"]
        if not value.isdigit() or int(value) < 1:
            raise SystemExit(f"mmlab: MMLAB_JOBS must be a positive integer, got {value!r}")
        return int(value), "MMLAB_JOBS"
    if inplace:
        return 1, "--inplace stores the outputs of the seed tables' configuration: one at a time on all the cores"
    n = cores()
    if n < 2:
        return 1, "one core"
    threads = env.get("MMLAB_THREADS")
    if threads and threads.isdigit() and 2 * int(threads) > n:
        return 1, f"MMLAB_THREADS={threads} on {n} cores leaves no cores for a second notebook"
    memory = _memory_gb()
    if memory is not None and memory < 2 * KERNEL_PEAK_GB + 2:
        return 1, f"{memory:.1f} GB of memory: not enough for two kernels"
    accelerator = _accelerator()
    if accelerator:
        return 1, f"a {accelerator} device: one notebook at a time on it"
    each = int(threads) if threads and threads.isdigit() else kernel_threads(2)
    return 2, f"{n} cores, no GPU: two notebooks side by side, {each} thread{'s' if each > 1 else ''} each"


# The most threads a kernel gets unless MMLAB_THREADS says otherwise. A thread count acts like a seed, and the seed
# tables cover 1 and 2 threads (notebooks/seeds/, seeds/one-thread/); on 4 threads notebooks 01 and 02 each missed a
# bar at one seed (notebooks/seeds/other-cpus/2026-12-05-intel-xeon-amx-four-threads/). The tiny models gain little
# from more threads (docs/measurements.md).
MAX_THREADS = 2


def kernel_threads(jobs: int) -> int:
    """Threads for each of ``jobs`` kernels sharing this machine's cores: its share, at most ``MAX_THREADS``."""
    return max(1, min(MAX_THREADS, cores() // jobs))


def lane_env(jobs: int, env: dict[str, str] | None = None) -> dict[str, str]:
    """Kernel variables for ``jobs`` notebooks side by side: the cores split between them, at most ``MAX_THREADS``
    each (MMLAB_THREADS and OMP_NUM_THREADS), unless the caller set MMLAB_THREADS. More threads than cores slow torch
    down many times over; more than ``MAX_THREADS`` give figures no seed table checked."""
    env = dict(env or {})
    if "MMLAB_THREADS" in env or "MMLAB_THREADS" in os.environ:
        return env
    threads = kernel_threads(jobs)
    if jobs > 1 or threads < cores():  # one kernel on at most 2 cores keeps torch's default (one thread a core)
        env.update(MMLAB_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    return env
