"""The ``mmlab`` command: list the notebooks, execute them headless and write the HTML book.

    mmlab list                  # each notebook with the question it answers
    mmlab run [NAME ...]        # execute (all or the named) notebooks, write build/*.html + build/index.html
    mmlab run --inplace 01      # also store the executed outputs back into notebooks/ (maintainers)
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat

from mmlab.runtime import write_atomic

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class RunResult:
    """Outcome of executing one notebook."""

    name: str
    status: str  # "ok" or "failed"
    seconds: float
    peak_mb: float | None
    error: str = ""
    report: dict | None = None  # the notebook's asserted figures and training seconds (mmlab.runtime.report)


def notebooks_dir() -> Path:
    """``./notebooks`` when run from a checkout, else the one beside the installed package."""
    here = Path.cwd() / "notebooks"
    return here if here.is_dir() else Path(__file__).resolve().parent.parent / "notebooks"


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


def question(path: Path) -> str:
    """The first heading of the notebook's first markdown cell (its question)."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("# ").strip()
    return ""


def _peak_rss_mb(pid: int | None) -> float | None:
    """Peak resident memory (VmHWM) of a Linux process in MB, or None where /proc is unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, TypeError):
        return None
    return None


def execute(path: Path, timeout: int = 1800, progress: bool = True,
            env: dict[str, str] | None = None) -> tuple[nbformat.NotebookNode, RunResult]:
    """Execute one notebook top to bottom in a fresh kernel (cwd = its folder); ``env`` adds kernel variables.

    The kernel's ``MMLAB_REPORT`` file (see ``mmlab.runtime.report``) is read back into ``RunResult.report``.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from tqdm import tqdm

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    n_code = sum(c.cell_type == "code" for c in nb.cells)
    bar = tqdm(total=n_code, desc=path.stem, unit="cell", disable=not progress, leave=True)
    state: dict = {"cell": None, "peak": None}

    def on_start(cell, cell_index, **_):
        state["cell"] = cell_index

    def on_executed(cell, cell_index, **_):
        pid = getattr(getattr(client.km, "provisioner", None), "pid", None)
        peak = _peak_rss_mb(pid)
        if peak is not None:
            state["peak"] = max(state["peak"] or 0.0, peak)
        bar.update(1)

    client.on_cell_start = on_start
    client.on_cell_executed = on_executed
    report_fd, report_path = tempfile.mkstemp(prefix="mmlab-report-", suffix=".json")
    os.close(report_fd)
    os.remove(report_path)  # the notebook writes it (atomically) if it reaches its claims cell
    kernel_env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel draws inline figures
    kernel_env.update(env or {})
    kernel_env["MMLAB_REPORT"] = report_path
    t0 = time.perf_counter()
    try:
        client.execute(env=kernel_env)
        result = RunResult(path.stem, "ok", time.perf_counter() - t0, state["peak"])
    except CellExecutionError as exc:
        first = _ANSI.sub("", str(exc)).strip().splitlines()
        summary = next((line for line in reversed(first) if line.strip()), "error")
        result = RunResult(path.stem, "failed", time.perf_counter() - t0, state["peak"],
                           f"cell {state['cell']}: {summary}")
    except Exception as exc:  # noqa: BLE001 - a dead kernel or a timeout fails this notebook, not the run
        result = RunResult(path.stem, "failed", time.perf_counter() - t0, state["peak"],
                           f"cell {state['cell']}: {type(exc).__name__}: {exc}")
    finally:
        bar.close()
    if getattr(client, "_async_cleanup_kernel_future", None) is not None:  # nbclient saw SIGINT/SIGTERM, killed the kernel
        Path(report_path).unlink(missing_ok=True)
        raise KeyboardInterrupt
    try:
        result.report = json.loads(Path(report_path).read_text())
    except (OSError, ValueError):
        result.report = None
    finally:
        Path(report_path).unlink(missing_ok=True)
    return nb, result


def write_html(nb: nbformat.NotebookNode, target: Path) -> None:
    """Render an executed notebook to a standalone HTML page."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    target.write_text(body, encoding="utf-8")


def write_constraints(target: Path) -> None:
    """The exact versions behind the committed outputs: every installed distribution but mmlab, as pip constraints."""
    from importlib.metadata import distributions

    pins = sorted({f"{d.metadata['Name']}=={d.version}" for d in distributions()
                   if d.metadata["Name"] and d.metadata["Name"].lower() != "mmlab"}, key=str.lower)
    header = "# Versions of the run that produced the committed notebook outputs (written by `mmlab run --inplace`).\n"
    write_atomic(target, (header + "\n".join(pins) + "\n").encode())


def write_index(results: list[RunResult], questions: dict[str, str], build: Path) -> None:
    """``build/index.html`` (links, status, seconds, peak memory) and ``build/summary.json``."""
    rows = "\n".join(
        f"<tr><td><a href='{html.escape(r.name)}.html'>{html.escape(r.name)}</a></td>"
        f"<td>{html.escape(questions.get(r.name, ''))}</td><td>{r.status}</td><td>{r.seconds:.0f}</td>"
        f"<td>{'' if r.peak_mb is None else f'{r.peak_mb:.0f}'}</td><td>{html.escape(r.error)}</td></tr>"
        for r in results
    )
    page = (
        "<!doctype html><meta charset='utf-8'><title>mmlab</title>"
        "<h1>mmlab: multimodal interview questions, run for real</h1>"
        "<table border=1 cellpadding=4><tr><th>notebook</th><th>question</th><th>status</th>"
        f"<th>seconds</th><th>peak MB</th><th>error</th></tr>\n{rows}\n</table>"
    )
    (build / "index.html").write_text(page, encoding="utf-8")
    (build / "summary.json").write_text(json.dumps([asdict(r) for r in results], indent=1), encoding="utf-8")


def run(names: list[str], build: Path, inplace: bool = False, timeout: int = 1800,
        directory: Path | None = None, progress: bool = True, env: dict[str, str] | None = None) -> int:
    """Execute notebooks; write HTML and the index into ``build``; return the exit code (0 = all ok)."""
    paths = find_notebooks(directory or notebooks_dir(), names)
    try:
        build.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=build, prefix=".mmlab-write-test-")
        probe.close()
    except OSError as exc:
        raise SystemExit(f"mmlab: cannot write the book to --build {build}: {exc.strerror or exc}") from None
    results, questions = [], {}
    interrupted = False
    for i, path in enumerate(paths, 1):
        print(f"[{i}/{len(paths)}] {path.name}", flush=True)
        questions[path.stem] = question(path)
        try:
            nb, result = execute(path, timeout=timeout, progress=progress, env=env)
        except KeyboardInterrupt:
            interrupted = True
            results += [RunResult(p.stem, "interrupted", 0.0, None, "not finished: the run was interrupted")
                        for p in paths[i - 1:]]
            questions.update({p.stem: question(p) for p in paths[i - 1:]})
            break
        write_html(nb, build / f"{path.stem}.html")
        if inplace and result.status == "ok":  # whole or not at all: the reader's notebook is never half-written
            write_atomic(path, (nbformat.writes(nb) + "\n").encode())
        peak = "" if result.peak_mb is None else f", peak {result.peak_mb:.0f} MB"
        print(f"    {result.status} in {result.seconds:.1f} s{peak} {result.error}", flush=True)
        results.append(result)
    write_index(results, questions, build)
    if inplace and not interrupted and results and all(r.status == "ok" for r in results):
        write_constraints(paths[0].parent / "constraints.txt")
    print(f"{'notebook':<28} {'status':<7} {'seconds':>8} {'peak MB':>8}")
    for r in results:
        print(f"{r.name:<28} {r.status:<7} {r.seconds:>8.1f} {'' if r.peak_mb is None else f'{r.peak_mb:.0f}':>8}")
    print(f"HTML book: {build / 'index.html'}")
    failed = [r for r in results if r.status != "ok"]
    for r in failed:
        print(f"{r.status.upper()}: {r.name}.ipynb {r.error}", file=sys.stderr)
    if interrupted:
        print("mmlab: interrupted; the kernel was stopped and no notebook was changed by the unfinished run", file=sys.stderr)
        return 130
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmlab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="list the notebooks and their questions")
    p_list.add_argument("--dir", type=Path, default=None, help="notebooks folder (default: ./notebooks)")
    p_run = sub.add_parser("run", help="execute notebooks headless and write the HTML book")
    p_run.add_argument("names", nargs="*", help="notebooks to run (file name, stem or prefix such as 01); default all")
    p_run.add_argument("--build", type=Path, default=Path("build"), help="output folder (default: build)")
    p_run.add_argument("--inplace", action="store_true", help="store executed outputs back into the notebooks")
    p_run.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell (default 1800)")
    p_run.add_argument("--dir", type=Path, default=None, help="notebooks folder (default: ./notebooks)")
    p_run.add_argument("--no-progress", action="store_true", help="no progress bars")
    p_run.add_argument("--seed", type=int, default=None, help="MMLAB_SEED for the notebooks (default 0)")
    p_run.add_argument("--pretrained", action="store_true", help="MMLAB_PRETRAINED=1: also load real checkpoints if the hub answers")
    p_seeds = sub.add_parser("seeds", help="run notebooks once per seed and store their seed tables in notebooks/seeds/")
    p_seeds.add_argument("names", nargs="+", help="notebooks (file name, stem or prefix such as 01)")
    p_seeds.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds (default 0 1 2 3 4)")
    p_seeds.add_argument("--dir", type=Path, default=None, help="notebooks folder (default: ./notebooks)")
    p_seeds.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell (default 3600)")
    p_seeds.add_argument("--inplace", action="store_true",
                         help="store seed 0's executed run back into the notebook (its seed table refreshed at the end)")
    p_bench = sub.add_parser("bench", help="time budgets: measured / budget, exit 1 when one is missed")
    p_bench.add_argument("--summary", type=Path, default=None, help="summary.json of a `mmlab run` (default: <build>/summary.json)")
    p_bench.add_argument("--no-micro", action="store_true", help="only the notebooks' recorded times")
    sub.add_parser("doctor", help="versions, device, threads, cache, and what the pretrained switch would decide")
    p_cache = sub.add_parser("cache", help="list the cached trained models (and --clear them)")
    p_cache.add_argument("--clear", action="store_true", help="delete every cached artefact")
    args = parser.parse_args(argv)
    if args.command in ("doctor", "cache"):
        from mmlab.doctor import cache_command, doctor

        return doctor() if args.command == "doctor" else cache_command(args.clear)
    if args.command == "bench":
        from mmlab.bench import main as bench

        return bench(args.summary or Path("build") / "summary.json", micro=not args.no_micro)
    if args.command == "seeds":
        from mmlab.seeds import format_table, run_study

        if any(s < 0 for s in args.seeds):
            raise SystemExit(f"mmlab: --seeds must be non-negative integers, got {args.seeds}")
        failed = 0
        for path in find_notebooks(args.dir or notebooks_dir(), args.names):
            study = run_study(path, args.seeds, timeout=args.timeout, inplace=args.inplace)
            print(format_table(study))
            failed += sum(r["status"] != "ok" for r in study["rows"])
        return 1 if failed else 0
    if args.command == "list":
        for path in find_notebooks(args.dir or notebooks_dir(), []):
            print(f"{path.stem:<28} {question(path)}")
        return 0
    env = {}
    if args.seed is not None:
        if args.seed < 0:
            raise SystemExit(f"mmlab: --seed must be a non-negative integer, got {args.seed}")
        env["MMLAB_SEED"] = str(args.seed)
    if args.pretrained:
        env["MMLAB_PRETRAINED"] = "1"
    return run(args.names, args.build, inplace=args.inplace, timeout=args.timeout, directory=args.dir,
               progress=not args.no_progress, env=env)


if __name__ == "__main__":
    sys.exit(main())
