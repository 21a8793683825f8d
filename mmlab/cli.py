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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class RunResult:
    """Outcome of executing one notebook."""

    name: str
    status: str  # "ok" or "failed"
    seconds: float
    peak_mb: float | None
    error: str = ""


def notebooks_dir() -> Path:
    """``./notebooks`` when run from a checkout, else the one beside the installed package."""
    here = Path.cwd() / "notebooks"
    return here if here.is_dir() else Path(__file__).resolve().parent.parent / "notebooks"


def find_notebooks(directory: Path, names: list[str]) -> list[Path]:
    """Notebooks ``NN_slug.ipynb`` in ``directory``; ``names`` select by file name, stem or prefix (``01``)."""
    if not directory.is_dir():
        raise SystemExit(f"mmlab: notebooks directory {directory} does not exist")
    all_nbs = sorted(p for p in directory.glob("*.ipynb") if not p.name.startswith("."))
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


def execute(path: Path, timeout: int = 1800, progress: bool = True) -> tuple[nbformat.NotebookNode, RunResult]:
    """Execute one notebook top to bottom in a fresh kernel (cwd = its folder)."""
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
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel draws inline figures
    t0 = time.perf_counter()
    try:
        client.execute(env=env)
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
    return nb, result


def write_html(nb: nbformat.NotebookNode, target: Path) -> None:
    """Render an executed notebook to a standalone HTML page."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    target.write_text(body, encoding="utf-8")


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
        directory: Path | None = None, progress: bool = True) -> int:
    """Execute notebooks; write HTML and the index into ``build``; return the exit code (0 = all ok)."""
    paths = find_notebooks(directory or notebooks_dir(), names)
    build.mkdir(parents=True, exist_ok=True)
    results, questions = [], {}
    for i, path in enumerate(paths, 1):
        print(f"[{i}/{len(paths)}] {path.name}", flush=True)
        questions[path.stem] = question(path)
        nb, result = execute(path, timeout=timeout, progress=progress)
        write_html(nb, build / f"{path.stem}.html")
        if inplace and result.status == "ok":
            nbformat.write(nb, path)
        peak = "" if result.peak_mb is None else f", peak {result.peak_mb:.0f} MB"
        print(f"    {result.status} in {result.seconds:.1f} s{peak} {result.error}", flush=True)
        results.append(result)
    write_index(results, questions, build)
    print(f"{'notebook':<28} {'status':<7} {'seconds':>8} {'peak MB':>8}")
    for r in results:
        print(f"{r.name:<28} {r.status:<7} {r.seconds:>8.1f} {'' if r.peak_mb is None else f'{r.peak_mb:.0f}':>8}")
    print(f"HTML book: {build / 'index.html'}")
    failed = [r for r in results if r.status != "ok"]
    for r in failed:
        print(f"FAILED: {r.name}.ipynb {r.error}", file=sys.stderr)
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
    args = parser.parse_args(argv)
    if args.command == "list":
        for path in find_notebooks(args.dir or notebooks_dir(), []):
            print(f"{path.stem:<28} {question(path)}")
        return 0
    return run(args.names, args.build, inplace=args.inplace, timeout=args.timeout, directory=args.dir,
               progress=not args.no_progress)


if __name__ == "__main__":
    sys.exit(main())
