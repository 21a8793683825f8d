"""The ``mmlab`` command: list the notebooks, execute them headless and write the HTML book.

    mmlab list                  # each notebook with the question it answers
    mmlab run [NAME ...]        # execute (all or the named) notebooks, write the HTML book into book/
    mmlab run --inplace 01      # also store the executed outputs back into notebooks/ (maintainers)
    mmlab run --jobs 1          # one notebook at a time (default on a CPU with 2+ cores: two side by side)
    mmlab run --studies 05      # also run the measured-only studies (default: their stored results are shown)
    mmlab book                  # the HTML book from the notebooks' stored outputs (executes nothing)
    mmlab copy DIR              # editable copies of the notebooks, e.g. beside a pip-installed mmlab
    mmlab seeds 01              # the seed table of notebook 01 (seeds 0-4), notebooks/seeds/
    mmlab seeds 01 02 --suite   # the one-thread tables: `mmlab run` two at a time per seed, notebooks/seeds/one-thread/
    mmlab run --smoke           # every cell, a few training steps, claims reported (a GPU machine or Colab, in minutes)
    mmlab rehearse              # the pretrained cells of 01, 02, 05 against a local hub mirror of tiny checkpoints
    mmlab probe clip 3 num_steps=3600   # a recipe with some fields changed, for the seeds given (docs/recipes.md)
    mmlab bench | doctor | cache
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import nbformat

from mmlab.files import write_atomic
from mmlab.tools import book, stamp
from mmlab.tools.lanes import auto_jobs
from mmlab.tools.run_all import find_notebooks, notebooks_dir, run


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


def _seeds(args: argparse.Namespace) -> int:
    """``mmlab seeds``: the notebooks' seed tables (see :mod:`mmlab.tools.seed_study`)."""
    from mmlab.seeds import format_table
    from mmlab.tools.seed_study import run_study, run_suite

    if any(s < 0 for s in args.seeds):
        raise SystemExit(f"mmlab: --seeds must be non-negative integers, got {args.seeds}")
    if args.threads is not None and (args.threads < 1 or not args.out or not args.suite):
        raise SystemExit("mmlab: --threads N (N >= 1) goes with --suite and --out: the one-thread tables are for two "
                         "notebooks side by side")
    if args.out and not args.suite:
        raise SystemExit("mmlab: --out goes with --suite")
    paths = find_notebooks(args.dir or notebooks_dir(), args.names)
    if args.suite:
        out = args.out or paths[0].parent / "seeds" / "one-thread"
        return 1 if run_suite(paths, args.seeds, out.resolve(), threads=args.threads) else 0
    failed = 0
    before = os.environ.get("MMLAB_STUDIES")
    os.environ["MMLAB_STUDIES"] = "1"  # the kernels run the measured-only studies: each seed's measured rows are its own
    try:
        for path in paths:
            study = run_study(path, args.seeds, timeout=args.timeout, inplace=args.inplace)
            print(format_table(study))
            failed += sum(r["status"] != "ok" for r in study["rows"])
    finally:
        if before is None:
            del os.environ["MMLAB_STUDIES"]
        else:
            os.environ["MMLAB_STUDIES"] = before
    return 1 if failed else 0


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
    p_run.add_argument("--no-yardstick", action="store_true",
                       help="skip the CPU yardstick timed after the notebooks (also MMLAB_YARDSTICK=0)")
    p_run.add_argument("--smoke", action="store_true",
                       help="MMLAB_SMOKE=1: every cell, a few training steps, claims reported not asserted (checks a GPU "
                            "machine or Colab end to end in minutes; the figures mean nothing; book in book-smoke/)")
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
    p_seeds.add_argument("--suite", action="store_true",
                         help="the one-thread tables: `mmlab run` (two notebooks at a time, one thread each) per seed, "
                              "each seed from an empty cache, into notebooks/seeds/one-thread/")
    p_seeds.add_argument("--out", type=Path, default=None, help="with --suite: write the tables here (another machine's evidence)")
    p_seeds.add_argument("--threads", type=int, default=None,
                         help="with --suite and --out: one notebook at a time on this many threads instead")
    p_bench = sub.add_parser("bench", help="time budgets: measured / budget, exit 1 when one is missed")
    p_bench.add_argument("--summary", type=Path, default=None,
                         help=f"summary.json of a `mmlab run` (default: {book.BOOK_DIR}/summary.json)")
    p_bench.add_argument("--no-micro", action="store_true", help="only the notebooks' recorded times")
    p_bench.add_argument("--profile", type=int, default=0, metavar="N", help="also list the N slowest cells of the run")
    p_probe = sub.add_parser("probe", help="train one recipe with some fields changed, for the seeds given, and score it")
    p_probe.add_argument("model", choices=["clip", "blip2", "dalle"])
    p_probe.add_argument("items", nargs="+", metavar="SEED|FIELD=VALUE",
                         help="training seeds (integers) and recipe fields to change, e.g. 0 1 2 num_steps=3600")
    p_rehearse = sub.add_parser("rehearse", help="run the pretrained cells of 01, 02 and 05 against a local hub mirror "
                                                 "of tiny checkpoints under the real ids (what tests/test_rehearsal.py runs)")
    p_rehearse.add_argument("--dir", type=Path, default=None, help="notebooks folder (default: ./notebooks)")
    p_rehearse.add_argument("--write", type=Path, default=None, metavar="FILE",
                            help="store the request log there (tests/rehearsal_requests.txt after a library upgrade)")
    sub.add_parser("doctor", help="versions, device, threads, cache, and what the pretrained switch would decide")
    p_cache = sub.add_parser("cache", help="list the cached trained models (and --clear them)")
    p_cache.add_argument("--clear", action="store_true", help="delete every cached artefact")
    args = parser.parse_args(argv)
    if args.command in ("doctor", "cache"):
        from mmlab.tools.doctor import cache_command, doctor

        return doctor() if args.command == "doctor" else cache_command(args.clear)
    if args.command == "bench":
        from mmlab.tools.bench import main as bench

        return bench(args.summary or book.BOOK_DIR / "summary.json", micro=not args.no_micro, top=args.profile,
                     notebooks=notebooks_dir())
    if args.command == "probe":
        from mmlab.tools.probes import main as probe

        seeds = [int(x) for x in args.items if x.isdigit()]
        if not seeds:
            raise SystemExit("mmlab probe: give at least one training seed, e.g. `mmlab probe clip 0 num_steps=3600`")
        return probe(args.model, seeds, [x for x in args.items if not x.isdigit()])
    if args.command == "rehearse":
        from mmlab.tools.rehearsal import main as rehearse

        return rehearse(args.dir or notebooks_dir(), write=args.write)
    if args.command == "book":
        return write_book(args.build, args.dir)
    if args.command == "copy":
        return copy_notebooks(args.target, force=args.force, directory=args.dir)
    if args.command == "seeds":
        return _seeds(args)
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
    build, yardstick = args.build, not args.no_yardstick and os.environ.get("MMLAB_YARDSTICK", "1").strip() != "0"
    if args.smoke:
        if args.inplace:
            raise SystemExit("mmlab: --smoke runs a few training steps; its outputs must not be stored (drop --inplace)")
        if args.studies:
            raise SystemExit("mmlab: --smoke with --studies would store a few steps' study results as the studies' own")
        env.update(MMLAB_SMOKE="1", MMLAB_CLAIMS="report")
        build = build if build != book.BOOK_DIR else Path("book-smoke")  # not the book of a real run
        yardstick = False
    jobs = args.jobs
    if jobs is None:
        jobs, why = auto_jobs(env, inplace=args.inplace)
        print(f"notebooks at once: {jobs} ({why}; --jobs to choose)", flush=True)
    return run(args.names, build, inplace=args.inplace, timeout=args.timeout, directory=args.dir,
               progress=not args.no_progress, env=env, jobs=jobs, yardstick=yardstick)


if __name__ == "__main__":
    sys.exit(main())
