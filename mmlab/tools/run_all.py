"""``mmlab run``: execute notebooks (one at a time, or two side by side on a CPU), write the HTML book and a summary.

Each notebook runs in a fresh kernel (:mod:`mmlab.tools.runner`); ``--inplace`` stores the executed notebook back,
whole or not at all, and stamps it (:mod:`mmlab.tools.stamp`). After the notebooks, the yardstick of
:mod:`mmlab.tools.bench` (100 tiny-CLIP training steps) is timed alone, so that the run's total can be read in
yardsticks: a figure that compares across machines and hours, where seconds do not.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import nbformat

from mmlab.files import write_atomic
from mmlab.tools import allocator, book
from mmlab.tools.constraints import write_constraints
from mmlab.tools.lanes import lane_env
from mmlab.tools.runner import RunResult, execute, store


def notebooks_dir() -> Path:
    """``./notebooks`` when run from a clone, else the clone's this package was installed from (editable), else the
    copies a wheel carries (``mmlab/notebooks``)."""
    package = Path(__file__).resolve().parent.parent  # the mmlab package
    for candidate in (Path.cwd() / "notebooks", package.parent / "notebooks", package / "notebooks"):
        if candidate.is_dir() and any(candidate.glob("*.ipynb")):
            return candidate
    return package / "notebooks"


def find_notebooks(directory: Path, names: list[str]) -> list[Path]:
    """Notebooks ``NN_slug.ipynb`` in ``directory``; ``names`` select by file name, stem or prefix (``01``)."""
    if not directory.is_dir():
        raise SystemExit(f"mmlab: notebooks directory {directory} does not exist")
    all_nbs = sorted(p for p in directory.glob("*.ipynb") if not p.name.startswith("."))
    if not all_nbs:
        raise SystemExit(f"mmlab: no notebooks (*.ipynb) in {directory}; pass --dir with the notebooks folder")
    if not names:
        return all_nbs
    chosen = []
    for name in names:
        stem = Path(name).name.removesuffix(".ipynb")
        hits = [p for p in all_nbs if p.stem == stem] or [p for p in all_nbs if p.stem.startswith(stem)]
        if len(hits) != 1:
            options = ", ".join(p.stem for p in all_nbs)
            raise SystemExit(f"mmlab: notebook name {name!r} matches {len(hits)} notebooks; choose one of: {options}")
        chosen.append(hits[0])
    return chosen


def _stamped_seconds(path: Path) -> float:
    """The seconds of a notebook's committed run (its stamp), 0 when unknown."""
    try:
        return float(nbformat.read(path, as_version=4).metadata.get("mmlab", {}).get("seconds") or 0.0)
    except (OSError, ValueError, TypeError):
        return 0.0


def _previous_summary(folder: Path) -> dict[str, dict]:
    try:
        return {r["name"]: r for r in json.loads((folder / "summary.json").read_text())}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _row(r: RunResult) -> dict:
    return {"status": r.status, "seconds": r.seconds, "peak_mb": r.peak_mb, "error": r.error.splitlines()[0] if r.error else "",
            "when": time.strftime("%Y-%m-%d %H:%M")}


def run(names: list[str], build: Path, inplace: bool = False, timeout: int = 1800,
        directory: Path | None = None, progress: bool = True, env: dict[str, str] | None = None, jobs: int = 1,
        yardstick: bool = True) -> int:
    """Execute notebooks; write their pages, the index and ``summary.json`` into ``build``; return the exit code.

    ``jobs`` > 1 runs that many notebooks at once (longest first, by their last time), each on its share of the cores:
    less wall time, the same per-notebook claims (they hold on 1 thread too), a larger sum of notebook seconds.
    ``yardstick``: after the notebooks, time :func:`mmlab.tools.bench.yardstick` alone and give the wall time in
    yardsticks too (recorded in ``summary.json``).
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise SystemExit(f"mmlab: --jobs must be a positive integer, got {jobs!r}")
    folder = directory or notebooks_dir()
    everything = find_notebooks(folder, [])
    paths = find_notebooks(folder, names)
    try:
        build.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=build, prefix=".mmlab-write-test-")
        probe.close()
    except OSError as exc:
        raise SystemExit(f"mmlab: cannot write the book to --book {build}: {exc.strerror or exc}") from None
    pages = [book.page_of(nbformat.read(p, as_version=4), p.stem) for p in everything]
    before = _previous_summary(build)
    book.install_assets(build)
    env = lane_env(jobs, env)
    try:
        _, why = allocator.resolve({**os.environ, **env})
    except (ValueError, RuntimeError) as exc:
        raise SystemExit(f"mmlab: {exc}") from None
    env.update(allocator.preload_env({**os.environ, **env}))
    print(f"kernels' memory allocator: {why}", flush=True)
    done: dict[Path, RunResult] = {}
    lock = threading.Lock()

    def expected_seconds(path: Path) -> float | None:
        last = before.get(path.stem, {})
        return last.get("seconds") if last.get("status") == "ok" else None

    def finish(path: Path, nb: nbformat.NotebookNode, result: RunResult) -> None:
        with lock:  # pages, stores and prints one notebook at a time
            if result.status != "interrupted":
                book.write_page(book.final_text_outputs(nb), pages, everything.index(path), build)
            if inplace and result.status == "ok":  # whole or not at all: the reader's notebook is never half-written
                store(path, nb, result)
            peak = "" if result.peak_mb is None else f", peak {result.peak_mb:.0f} MB"
            print(f"    {path.stem}: {result.status} in {result.seconds:.1f} s{peak}", flush=True)
            if result.error and result.status != "interrupted":
                print(f"FAILED: {path.name}, {result.error}", file=sys.stderr, flush=True)
            done[path] = result

    def announce(i: int, path: Path) -> None:
        expected = expected_seconds(path)
        print(f"[{i}/{len(paths)}] {path.name}" + (f" (last run: {expected:.0f} s)" if expected else ""), flush=True)

    interrupted = False
    t0 = time.perf_counter()
    if jobs == 1:
        for i, path in enumerate(paths, 1):
            announce(i, path)
            try:
                finish(path, *execute(path, timeout=timeout, progress=progress, env=env, expected=expected_seconds(path)))
            except KeyboardInterrupt:
                interrupted = True
                break
    else:
        stop = threading.Event()
        order = sorted(paths, key=lambda p: -(expected_seconds(p) or _stamped_seconds(p)))  # longest first
        counter = iter(range(1, len(paths) + 1))

        def lane(path: Path) -> None:
            if stop.is_set():
                return
            with lock:
                announce(next(counter), path)
            finish(path, *execute(path, timeout=timeout, progress=progress, env=env, expected=expected_seconds(path),
                                  stop=stop, lines=True))

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(lane, p) for p in order]
            try:
                for future in futures:
                    future.result()
            except KeyboardInterrupt:
                interrupted = True
                stop.set()  # every running kernel is killed; notebooks not started never start
                for future in futures:
                    future.cancel()
    wall = time.perf_counter() - t0
    interrupted = interrupted or any(r.status == "interrupted" for r in done.values())
    results = [done.get(p) or RunResult(p.stem, "interrupted", 0.0, None, "not finished: the run was interrupted")
               for p in paths if p in done or interrupted]
    stick = None
    if yardstick and not interrupted and results:
        from mmlab.tools.bench import yardstick as time_yardstick

        print("timing the yardstick (100 tiny-CLIP steps, alone, on all the cores) ...", flush=True)
        alone = {k: v for k, v in {**os.environ, **env}.items() if k not in ("MMLAB_THREADS", "OMP_NUM_THREADS")}
        stick = time_yardstick(Path.cwd(), alone)
    for r in results:  # recorded beside the seconds: runs compare only on the same allocator and number of lanes
        r.allocator = allocator.name_of(env.get("LD_PRELOAD", os.environ.get("LD_PRELOAD", "")))
        r.run_jobs, r.run_wall_seconds = jobs, round(wall, 2)
        r.yardstick_seconds = None if stick is None else round(stick, 2)
    rows = {**before, **{r.name: _row(r) for r in results}}
    summary = [asdict(r) for r in results]  # this run only: `mmlab bench` sums it
    write_atomic(build / "summary.json", json.dumps(summary, indent=1).encode())
    book.write_review([nbformat.read(p, as_version=4) for p in everything], pages, build)  # markdown only: from disk
    book.write_index(pages, rows, build)
    if inplace and not interrupted and results and all(r.status == "ok" for r in results):
        write_constraints(paths[0].parent / "constraints.txt")
    print(f"{'notebook':<28} {'status':<11} {'seconds':>8} {'peak MB':>8}")
    for r in results:
        print(f"{r.name:<28} {r.status:<11} {r.seconds:>8.1f} {'' if r.peak_mb is None else f'{r.peak_mb:.0f}':>8}")
    print(f"{'sum of notebook seconds':<40} {sum(r.seconds for r in results):>8.1f}   wall {wall:.1f} s"
          + (f" ({jobs} at a time, {env.get('MMLAB_THREADS', os.environ.get('MMLAB_THREADS', 'default'))} thread(s) each)"
             if jobs > 1 else ""))
    if stick:
        print(f"yardstick: {stick:.1f} s for 100 tiny-CLIP steps; the wall time is {wall / stick:.0f} yardsticks "
              f"(compare runs on other CPUs and hours in yardsticks, not seconds)")
    print(f"HTML book: {build / 'index.html'}")
    for r in results:
        if r.status != "ok":
            print(f"{r.status.upper()}: {r.name}.ipynb {r.error}", file=sys.stderr)
    if interrupted:
        print("mmlab: interrupted; the kernel was stopped and no notebook was changed by the unfinished run", file=sys.stderr)
        return 130
    return 1 if any(r.status != "ok" for r in results) else 0
