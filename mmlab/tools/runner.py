"""Execute one notebook headless in a fresh kernel, showing its progress, and store it back whole.

While a notebook runs, one line shows the cell being executed (its heading or first line), the training
progress the kernel prints (tqdm's text, forwarded), the elapsed time and, when a previous run left a
``summary.json``, the time it took then. Each cell's seconds go into ``RunResult.cells`` (the per-cell profile
that ``summary.json`` keeps).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from mmlab.files import write_atomic
from mmlab.tools import book, scratch, stamp

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PROGRESS = re.compile(r"\d+%\|")  # tqdm's text: "desc:  42%|####      | 420/1000 [...]"
LOG_EVERY = 30.0  # seconds between training-progress lines when stderr is a log file, not a terminal


@dataclass
class RunResult:
    """Outcome of executing one notebook."""

    name: str
    status: str  # "ok", "failed" or "interrupted"
    seconds: float
    peak_mb: float | None
    error: str = ""  # the failing cell and the error's last lines
    report: dict | None = None  # the notebook's claims, measured figures and training seconds (mmlab.claims)
    cells: list = field(default_factory=list)  # [cell index, "section | first line", seconds] per code cell
    modules: list = field(default_factory=list)  # the mmlab modules the kernel had loaded at the end
    shown: dict = field(default_factory=dict)  # "module.qualname" -> SHA-256 of each source mmlab.show printed
    allocator: str = ""  # the kernel's malloc: "tcmalloc", "jemalloc" or "system" (mmlab.tools.allocator)
    run_jobs: int = 1  # how many notebooks the run executed at once (mmlab run --jobs)
    run_wall_seconds: float | None = None  # the whole run's wall time: with run_jobs > 1, less than the sum of seconds
    yardstick_seconds: float | None = None  # the CPU yardstick timed alone after the run (mmlab.tools.bench.yardstick)


def _peak_rss_mb(pid: int | None) -> float | None:
    """Peak resident memory (VmHWM) of a Linux process in MB, or None where /proc is unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, TypeError):
        return None
    return None


def first_line(cell: nbformat.NotebookNode) -> str:
    """A cell's first non-empty line: what the progress line shows while it runs."""
    return next((line.strip() for line in cell.source.splitlines() if line.strip()), "")


def sections(nb: nbformat.NotebookNode) -> dict[int, str]:
    """Each code cell's section: the last markdown heading above it (how the profile names a cell)."""
    found, heading = {}, ""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            heading = next((line.lstrip("#").strip() for line in cell.source.splitlines() if line.startswith("#")), heading)
        else:
            found[i] = heading
    return found


class _Progress:
    """One status line on stderr: notebook, cell k/n and its first line, forwarded training progress, times."""

    def __init__(self, name: str, n_cells: int, expected: float | None, enabled: bool, lines: bool = False):
        self.name, self.n, self.expected, self.enabled = name, n_cells, expected, enabled
        self.t0 = time.perf_counter()
        self.k, self.what, self.training = 0, "", ""
        self.tty = sys.stderr.isatty() and not lines  # lines: one log line per update (notebooks running side by side)
        self.last_print = 0.0

    def cell(self, k: int, what: str) -> None:
        self.k, self.what, self.training = k, what[:60], ""
        self.show(force=not self.tty)

    def stream(self, text: str) -> None:
        last = text.replace("\r", "\n").rstrip("\n").rsplit("\n", 1)[-1]
        if _PROGRESS.search(last):
            self.training = _ANSI.sub("", last).strip()[:80]
            self.show()

    def show(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and not self.tty and now - self.last_print < LOG_EVERY:
            return
        self.last_print = now
        expected = f" / ~{self.expected:.0f} s last run" if self.expected else ""
        line = (f"  {self.name} [{now - self.t0:4.0f} s{expected}] cell {self.k}/{self.n}: {self.what}"
                + (f" · {self.training}" if self.training else ""))
        if self.tty:
            width = os.get_terminal_size(sys.stderr.fileno()).columns - 1
            sys.stderr.write("\r" + line[:width].ljust(width))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def _error_lines(exc: Exception, lines: int = 6) -> str:
    text = [line for line in _ANSI.sub("", str(exc)).strip().splitlines() if line.strip()]
    return "\n".join(text[-lines:]) or type(exc).__name__


def execute(path: Path, timeout: int = 1800, progress: bool = True, env: dict[str, str] | None = None,
            expected: float | None = None, stop: threading.Event | None = None,
            lines: bool = False, nb: nbformat.NotebookNode | None = None) -> tuple[nbformat.NotebookNode, RunResult]:
    """Execute one notebook top to bottom in a fresh kernel (cwd = its folder); ``env`` adds kernel variables.

    The kernel's ``MMLAB_REPORT`` file (see :mod:`mmlab.claims`) is read back into ``RunResult.report``, and
    the mmlab modules it loaded into ``RunResult.modules`` (for the stale-output stamp). The kernel's ``TMPDIR`` is
    a folder of its own (``mmlab.tools.scratch``), removed when the kernel is done, also when it was killed.
    ``stop`` (for a run in a worker thread, where no signal arrives): once set, the kernel is killed and the result
    is ``"interrupted"``. ``lines``: progress as log lines, not one rewritten terminal line. ``nb``: execute these
    cells instead of the file's (the rehearsal's selection of cells); ``path`` still names the run and its folder.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4) if nb is None else nb
    n_code = sum(c.cell_type == "code" for c in nb.cells)
    section = sections(nb)
    nb.cells.append(nbformat.v4.new_code_cell(stamp.MODULES_PROBE))  # removed again below
    show = _Progress(path.stem, n_code, expected, progress, lines)

    class Client(NotebookClient):
        def output(self, outs, msg, display_id, cell_index):
            if msg["msg_type"] == "stream":
                show.stream(msg["content"].get("text", ""))
            return super().output(outs, msg, display_id, cell_index)

    # coalesce_streams: a cell's stream output is stored as one text, carriage returns applied (tqdm's last state)
    client = Client(nb, timeout=timeout, kernel_name="python3", coalesce_streams=True,
                    resources={"metadata": {"path": str(path.parent)}})
    state: dict = {"cell": None, "peak": None, "start": 0.0, "k": 0, "cells": []}

    def on_start(cell, cell_index, **_):
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt  # nbclient shuts the kernel down on the way out
        if cell.cell_type != "code" or cell_index == len(nb.cells) - 1:  # markdown, or the modules probe
            return
        state.update(cell=cell_index, start=time.perf_counter(), k=state["k"] + 1)
        show.cell(min(state["k"], n_code), first_line(cell))

    def on_executed(cell, cell_index, **_):
        pid = getattr(getattr(client.km, "provisioner", None), "pid", None)
        peak = _peak_rss_mb(pid)
        if peak is not None:
            state["peak"] = max(state["peak"] or 0.0, peak)
        if cell.cell_type == "code" and cell_index < len(nb.cells) - 1:
            label = f"{section[cell_index][:40]} | {first_line(cell)[:50]}" if section[cell_index] else first_line(cell)[:80]
            state["cells"].append([cell_index, label, round(time.perf_counter() - state["start"], 2)])

    client.on_cell_start = on_start
    client.on_cell_executed = on_executed
    files = {}
    for key in ("MMLAB_REPORT", "MMLAB_MODULES"):
        fd, files[key] = tempfile.mkstemp(prefix=f"mmlab-{key[6:].lower()}-", suffix=".json")
        os.close(fd)
        os.remove(files[key])  # the kernel writes it (the report atomically) if it gets there
    kernel_env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel draws inline figures
    kernel_env.update(env or {})
    kernel_env.update(files)
    tmpdir = scratch.make("mmlab-kernel-")  # the kernel's TMPDIR: removed below even when the kernel was killed
    kernel_env["TMPDIR"] = str(tmpdir)
    finished = threading.Event()
    if stop is not None:
        threading.Thread(target=_kill_on_stop, args=(client, stop, finished), daemon=True).start()
    t0 = time.perf_counter()
    try:
        client.execute(env=kernel_env)
        result = RunResult(path.stem, "ok", time.perf_counter() - t0, state["peak"])
    except KeyboardInterrupt:
        if stop is None or not stop.is_set():
            raise
        result = RunResult(path.stem, "interrupted", time.perf_counter() - t0, state["peak"], "not finished: the run was interrupted")
    except CellExecutionError as exc:
        result = RunResult(path.stem, "failed", time.perf_counter() - t0, state["peak"],
                           f"cell {state['cell']}: {_error_lines(exc)}")
    except Exception as exc:  # noqa: BLE001 - a dead kernel or a timeout fails this notebook, not the run
        result = RunResult(path.stem, "failed", time.perf_counter() - t0, state["peak"],
                           f"cell {state['cell']}: {type(exc).__name__}: {exc}")
    finally:
        finished.set()
        show.close()
        nb.cells.pop()
        shutil.rmtree(tmpdir, ignore_errors=True)
    if stop is not None and stop.is_set() and result.status == "failed":  # its kernel was killed by stop
        result = RunResult(path.stem, "interrupted", result.seconds, result.peak_mb, "not finished: the run was interrupted")
    if getattr(client, "_async_cleanup_kernel_future", None) is not None:  # nbclient saw SIGINT/SIGTERM, killed the kernel
        for f in files.values():
            Path(f).unlink(missing_ok=True)
        raise KeyboardInterrupt
    result.cells = state["cells"]
    for key in ("MMLAB_REPORT", "MMLAB_MODULES"):
        written = Path(files[key])  # absent when the notebook stopped before the cell that writes it
        if written.is_file():
            data = json.loads(written.read_text())
            written.unlink()
            if key == "MMLAB_REPORT":
                result.report = data
            else:
                result.modules, result.shown = data["modules"], data["shown"]
    return nb, result


def _kill_on_stop(client, stop: threading.Event, finished: threading.Event) -> None:
    """Kill the kernel of ``client`` as soon as ``stop`` is set (unless the notebook finished first)."""
    while not finished.is_set():
        if stop.wait(0.2):
            pid = getattr(getattr(client.km, "provisioner", None), "pid", None)
            if pid is not None and not finished.is_set():
                with contextlib.suppress(ProcessLookupError):  # the kernel exited on its own: nothing left to kill
                    os.kill(pid, signal.SIGKILL)
            return


def store(path: Path, nb: nbformat.NotebookNode, result: RunResult) -> None:
    """Write an executed notebook back to ``path``, whole or not at all: progress as final text, stamped."""
    book.final_text_outputs(nb)
    stamp.stamp(nb, result.modules, result.shown, when=time.strftime("%Y-%m-%d %H:%M"), seconds=round(result.seconds, 1),
                peak_mb=None if result.peak_mb is None else round(result.peak_mb), seed=(result.report or {}).get("seed"),
                threads=(result.report or {}).get("threads"))
    write_atomic(path, (nbformat.writes(nb) + "\n").encode())
