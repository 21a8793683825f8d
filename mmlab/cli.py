"""The ``mmlab`` command: list the notebooks, execute them headless and write the HTML book.

    mmlab list                  # each notebook with the question it answers
    mmlab run [NAME ...]        # execute (all or the named) notebooks, write the HTML book into book/
    mmlab run --inplace 01      # also store the executed outputs back into notebooks/ (maintainers)
    mmlab run --jobs 1          # one notebook at a time (default on a CPU with 2+ cores: two side by side)
    mmlab run --studies 05      # also run the measured-only studies (default: their stored results are shown)
    mmlab book                  # the HTML book from the notebooks' stored outputs (executes nothing)
    mmlab copy DIR              # editable copies of the notebooks, e.g. beside a pip-installed mmlab
    mmlab seeds 01 | bench | doctor | cache
"""

from __future__ import annotations

import argparse
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

from mmlab import allocator, book, stamp
from mmlab.lanes import auto_jobs, lane_env
from mmlab.runner import RunResult, execute, store
from mmlab.runtime import write_atomic


def notebooks_dir() -> Path:
    """``./notebooks`` when run from a clone, else the clone's this package was installed from (editable), else the
    copies a wheel carries (``mmlab/notebooks``)."""
    package = Path(__file__).resolve().parent
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


def write_constraints(target: Path) -> None:
    """The exact versions behind the committed outputs: every installed distribution but mmlab, as pip constraints."""
    from importlib.metadata import distributions

    pins = sorted({f"{d.metadata['Name']}=={d.version}" for d in distributions()
                   if d.metadata["Name"] and d.metadata["Name"].lower() != "mmlab"}, key=str.lower)
    header = "# Versions of the run that produced the committed notebook outputs (written by `mmlab run --inplace`).\n"
    write_atomic(target, (header + "\n".join(pins) + "\n").encode())


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
        directory: Path | None = None, progress: bool = True, env: dict[str, str] | None = None, jobs: int = 1) -> int:
    """Execute notebooks; write their pages, the index and ``summary.json`` into ``build``; return the exit code.

    ``jobs`` > 1 runs that many notebooks at once (longest first, by their last time), each on its share of the cores:
    less wall time, the same per-notebook claims (they hold on 1 thread too), a larger sum of notebook seconds.
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
    for r in results:  # recorded beside the seconds: runs compare only on the same allocator and number of lanes
        r.allocator = allocator.name_of(env.get("LD_PRELOAD", os.environ.get("LD_PRELOAD", "")))
        r.run_jobs, r.run_wall_seconds = jobs, round(wall, 2)
    rows = {**before, **{r.name: _row(r) for r in results}}
    summary = [asdict(r) for r in results]  # this run only: `mmlab bench` sums it
    write_atomic(build / "summary.json", json.dumps(summary, indent=1).encode())
    book.write_index(pages, rows, build)
    if inplace and not interrupted and results and all(r.status == "ok" for r in results):
        write_constraints(paths[0].parent / "constraints.txt")
    print(f"{'notebook':<28} {'status':<11} {'seconds':>8} {'peak MB':>8}")
    for r in results:
        print(f"{r.name:<28} {r.status:<11} {r.seconds:>8.1f} {'' if r.peak_mb is None else f'{r.peak_mb:.0f}':>8}")
    print(f"{'sum of notebook seconds':<40} {sum(r.seconds for r in results):>8.1f}   wall {wall:.1f} s"
          + (f" ({jobs} at a time, {env.get('MMLAB_THREADS', os.environ.get('MMLAB_THREADS', 'default'))} thread(s) each)"
             if jobs > 1 else ""))
    print(f"HTML book: {build / 'index.html'}")
    for r in results:
        if r.status != "ok":
            print(f"{r.status.upper()}: {r.name}.ipynb {r.error}", file=sys.stderr)
    if interrupted:
        print("mmlab: interrupted; the kernel was stopped and no notebook was changed by the unfinished run", file=sys.stderr)
        return 130
    return 1 if any(r.status != "ok" for r in results) else 0


def write_book(build: Path, directory: Path | None = None) -> int:
    """The book from the notebooks' stored outputs, executing nothing (status and time from their stamps)."""
    paths = find_notebooks(directory or notebooks_dir(), [])
    notebooks = [(p, nbformat.read(p, as_version=4)) for p in paths]
    rows = {}
    for p, nb in notebooks:
        run_facts = nb.metadata.get("mmlab", {})
        reasons = stamp.stale(nb)
        rows[p.stem] = {"status": "stale" if reasons else "stored", "seconds": run_facts.get("seconds"),
                        "peak_mb": run_facts.get("peak_mb"), "when": run_facts.get("when", ""),
                        "error": "; ".join(reasons)}
    index = book.build(notebooks, build, rows)
    print(f"HTML book (stored outputs, nothing executed): {index}")
    return 0


def copy_notebooks(target: Path, force: bool = False, directory: Path | None = None) -> int:
    """Editable copies of the notebooks (and their seed tables) in ``target``; existing files only with ``force``."""
    source = directory or notebooks_dir()
    files = find_notebooks(source, []) + sorted((source / "seeds").glob("*.json")) + sorted((source / "studies").glob("*.json"))
    clashes = [target / f.relative_to(source) for f in files if (target / f.relative_to(source)).exists()]
    if clashes and not force:
        raise SystemExit(f"mmlab: {len(clashes)} files already exist in {target} (e.g. {clashes[0].name}); "
                         "pass --force to overwrite them")
    for f in files:
        dest = target / f.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dest, f.read_bytes())
    print(f"copied {len(files)} files to {target}: jupyter lab {target}")
    return 0


def _jobs(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmlab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="list the notebooks and their questions")
    p_list.add_argument("--dir", type=Path, default=None, help="notebooks folder (default: ./notebooks)")
    p_run = sub.add_parser("run", help="execute notebooks headless and write the HTML book")
    p_run.add_argument("names", nargs="*", help="notebooks to run (file name, stem or prefix such as 01); default all")
    p_run.add_argument("--book", "--build", dest="build", type=Path, default=book.BOOK_DIR,
                       help=f"the HTML book's folder (default: {book.BOOK_DIR})")
    p_run.add_argument("--inplace", action="store_true", help="store executed outputs back into the notebooks")
    p_run.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell (default 1800)")
    p_run.add_argument("--dir", type=Path, default=None, help="notebooks folder (default: ./notebooks)")
    p_run.add_argument("--no-progress", action="store_true", help="no progress bars")
    p_run.add_argument("--seed", type=int, default=None, help="MMLAB_SEED for the notebooks (default 0)")
    p_run.add_argument("--pretrained", action="store_true", help="MMLAB_PRETRAINED=1: also load real checkpoints if the hub answers")
    p_run.add_argument("--studies", action="store_true",
                       help="MMLAB_STUDIES=1: run the measured-only studies (stored in notebooks/studies/) instead of showing them")
    p_run.add_argument("--jobs", "-j", type=_jobs, default=None,
                       help="notebooks run at once, the cores split between them (default: MMLAB_JOBS, else 1 with --inplace, "
                            "2 on a CPU with 2+ cores and the memory for two, else 1)")
    p_book = sub.add_parser("book", help="write the HTML book from the notebooks' stored outputs (executes nothing)")
    p_book.add_argument("--book", "--build", dest="build", type=Path, default=book.BOOK_DIR,
                        help=f"the HTML book's folder (default: {book.BOOK_DIR})")
    p_book.add_argument("--dir", type=Path, default=None, help="notebooks folder (default: ./notebooks)")
    p_copy = sub.add_parser("copy", help="copy the notebooks (and their seed tables and studies) into DIR to open and edit them")
    p_copy.add_argument("target", type=Path, metavar="DIR")
    p_copy.add_argument("--force", action="store_true", help="overwrite files that already exist in DIR")
    p_copy.add_argument("--dir", type=Path, default=None, help="notebooks folder (default: the installed ones)")
    p_seeds = sub.add_parser("seeds", help="run notebooks once per seed and store their seed tables in notebooks/seeds/")
    p_seeds.add_argument("names", nargs="+", help="notebooks (file name, stem or prefix such as 01)")
    p_seeds.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds (default 0 1 2 3 4)")
    p_seeds.add_argument("--dir", type=Path, default=None, help="notebooks folder (default: ./notebooks)")
    p_seeds.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell (default 3600)")
    p_seeds.add_argument("--inplace", action="store_true",
                         help="store seed 0's executed run back into the notebook (its seed table refreshed at the end)")
    p_bench = sub.add_parser("bench", help="time budgets: measured / budget, exit 1 when one is missed")
    p_bench.add_argument("--summary", type=Path, default=None,
                         help=f"summary.json of a `mmlab run` (default: {book.BOOK_DIR}/summary.json)")
    p_bench.add_argument("--no-micro", action="store_true", help="only the notebooks' recorded times")
    p_bench.add_argument("--profile", type=int, default=0, metavar="N", help="also list the N slowest cells of the run")
    sub.add_parser("doctor", help="versions, device, threads, cache, and what the pretrained switch would decide")
    p_cache = sub.add_parser("cache", help="list the cached trained models (and --clear them)")
    p_cache.add_argument("--clear", action="store_true", help="delete every cached artefact")
    args = parser.parse_args(argv)
    if args.command in ("doctor", "cache"):
        from mmlab.doctor import cache_command, doctor

        return doctor() if args.command == "doctor" else cache_command(args.clear)
    if args.command == "bench":
        from mmlab.bench import main as bench

        return bench(args.summary or book.BOOK_DIR / "summary.json", micro=not args.no_micro, top=args.profile,
                     notebooks=notebooks_dir())
    if args.command == "book":
        return write_book(args.build, args.dir)
    if args.command == "copy":
        return copy_notebooks(args.target, force=args.force, directory=args.dir)
    if args.command == "seeds":
        from mmlab.seeds import format_table, run_study

        if any(s < 0 for s in args.seeds):
            raise SystemExit(f"mmlab: --seeds must be non-negative integers, got {args.seeds}")
        failed = 0
        before = os.environ.get("MMLAB_STUDIES")
        os.environ["MMLAB_STUDIES"] = "1"  # the kernels run the measured-only studies: each seed's "(measured)" rows are its own
        try:
            for path in find_notebooks(args.dir or notebooks_dir(), args.names):
                study = run_study(path, args.seeds, timeout=args.timeout, inplace=args.inplace)
                print(format_table(study))
                failed += sum(r["status"] != "ok" for r in study["rows"])
        finally:
            if before is None:
                del os.environ["MMLAB_STUDIES"]
            else:
                os.environ["MMLAB_STUDIES"] = before
        return 1 if failed else 0
    if args.command == "list":
        for path in find_notebooks(args.dir or notebooks_dir(), []):
            print(f"{path.stem:<28} {book.page_of(nbformat.read(path, as_version=4), path.stem).question_zh}")
        return 0
    env = {}
    if args.seed is not None:
        if args.seed < 0:
            raise SystemExit(f"mmlab: --seed must be a non-negative integer, got {args.seed}")
        env["MMLAB_SEED"] = str(args.seed)
    if args.pretrained:
        env["MMLAB_PRETRAINED"] = "1"
    if args.studies:
        env["MMLAB_STUDIES"] = "1"
    jobs = args.jobs
    if jobs is None:
        jobs, why = auto_jobs(env, inplace=args.inplace)
        print(f"notebooks at once: {jobs} ({why}; --jobs to choose)", flush=True)
    return run(args.names, args.build, inplace=args.inplace, timeout=args.timeout, directory=args.dir,
               progress=not args.no_progress, env=env, jobs=jobs)


if __name__ == "__main__":
    sys.exit(main())
