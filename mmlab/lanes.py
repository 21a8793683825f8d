"""How many notebooks ``mmlab run`` executes at once, and the threads each kernel gets.

On a CPU one kernel keeps its second thread only partly busy (``scripts/thread_scaling_probe.py``), so two notebooks
side by side on one thread each finish sooner than one after the other on two (README, "Measured CPU runtime"); the
default stays one at a time, the configuration the seed tables verify (``auto_jobs``).
"""

from __future__ import annotations

import os


def cores() -> int:
    """CPU cores this process may use (its affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_jobs(env: dict[str, str] | None = None) -> tuple[int, str]:
    """How many notebooks ``mmlab run`` runs at once when ``--jobs`` is not given, and why.

    ``MMLAB_JOBS`` decides when set. Otherwise one, on all the cores: how the notebooks' seed tables ran. Two side by
    side on one thread each finish sooner on 2 cores, but a thread count acts like a seed, and on one thread seeds 3
    and 4 missed bars of notebooks 02 and 05 (``notebooks/seeds/one-thread``, ``scripts/suite_seed_study.py``), so
    side by side is for those who ask (``--jobs 2``), not the default.
    """
    env = {**os.environ, **(env or {})}
    if env.get("MMLAB_JOBS"):
        value = env["MMLAB_JOBS"]
        if not value.isdigit() or int(value) < 1:
            raise SystemExit(f"mmlab: MMLAB_JOBS must be a positive integer, got {value!r}")
        return int(value), "MMLAB_JOBS"
    return 1, "one at a time on all the cores, as the seed tables ran; --jobs 2 runs two side by side, one thread each"


def lane_env(jobs: int, env: dict[str, str] | None = None) -> dict[str, str]:
    """Kernel variables for ``jobs`` notebooks side by side: the cores split between them (MMLAB_THREADS and
    OMP_NUM_THREADS), unless the caller set MMLAB_THREADS. More threads than cores slow torch down many times over."""
    env = dict(env or {})
    if jobs > 1 and "MMLAB_THREADS" not in env and "MMLAB_THREADS" not in os.environ:
        threads = str(max(1, cores() // jobs))
        env.update(MMLAB_THREADS=threads, OMP_NUM_THREADS=threads)
    return env
