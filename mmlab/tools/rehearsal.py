"""The Colab path, rehearsed: each notebook's pretrained cells run in a kernel against a local hub mirror.

"Open in Colab → Run all" on a GPU loads real checkpoints; no machine here reaches the hub or has a GPU. The rehearsal
runs what it can of that path for real: the Settings cell and every cell tagged ``pretrained`` of 01, 02 and 05, through
the project's runner, with ``MMLAB_PRETRAINED=1`` and ``HF_ENDPOINT`` pointing at :class:`~mmlab.tools.hub_mirror.HubMirror`,
which serves checkpoints of the real classes under the real repository ids (:mod:`mmlab.tools.hub_fixtures`). Nothing
is mocked: open_clip, transformers and diffusers resolve, download and load the files as they would from the hub.

Two passes: as a CPU machine runs the cells (02 says why it skips BLIP-2; 05 loads the VAE and UNet only), and with
``MMLAB_PRETRAINED_ANY_DEVICE=1`` (:func:`mmlab.pretrained.any_device`), which runs the lines that need a CUDA GPU today
— 02's BLIP-2 captions and 05's pipeline and image — on the mirror's tiny checkpoints. What it records:

- the hub requests of each notebook and pass: the contract, compared with ``tests/rehearsal_requests.txt`` (sorted
  within a notebook and pass: loaders download in parallel threads);
- which lines of the tagged cells executed (``sys.settrace`` in the kernel): every statement must run in one pass
  or the other, except :data:`CUDA_ONLY`;
- the cells' outputs and a few checks per pass (:data:`CHECKS`: shapes, dtypes, an image displayed), and that each
  checkpoint's size row was printed before its first download.

What still runs only on a reader's GPU: fp16 on CUDA, and what the real weights output.
"""

from __future__ import annotations

import ast
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

TAG = "pretrained"
PASSES = {"default": {}, "any-device": {"MMLAB_PRETRAINED_ANY_DEVICE": "1"}}
NOTEBOOKS = {"default": ("01", "02", "05"), "any-device": ("02", "05")}  # 01's cell has no CUDA-only branch
# Statements of the tagged cells that only a CUDA device executes (their text, stripped), per notebook.
CUDA_ONLY = {"02": ['print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")']}
# Run after the tagged cells, per notebook and pass: random weights predict noise, so shapes and dtypes, not accuracy.
CHECKS = {
    ("01", "default"): "assert probs.shape == (7, 7) and probs.dtype == torch.float32, (probs.shape, probs.dtype)\n"
                   "assert pixels.shape == (7, 3, 224, 224) and clf_big.shape == (512, 7), (pixels.shape, clf_big.shape)",
    ("02", "default"): "assert 'big' not in globals()  # skipped on a CPU: BLIP-2 OPT-2.7b needs a CUDA GPU",
    ("02", "any-device"): "assert out.ndim == 2 and out.shape[0] == 1 and big.dtype == torch.float32, (out.shape, big.dtype)\n"
                          "assert inputs['pixel_values'].shape == (1, 3, 224, 224), inputs['pixel_values'].shape",
    ("05", "default"): "assert big_unet.dtype == torch.float32 and 'pipe' not in globals(), big_unet.dtype",
    ("05", "any-device"): "assert sd_image.size == (16, 16) and pipe.unet.dtype == torch.float32, (sd_image.size, pipe.unet.dtype)",
}
REPOS = {"01": "CLIP-ViT-B-32", "02": "Salesforce/blip2-opt-2.7b", "05": "stable-diffusion-v1-5/stable-diffusion-v1-5"}

_TRACE_START = ("from mmlab.tools.rehearsal import LineRecorder as _LR\n"
                "_rehearsal_lines = _LR(); _rehearsal_lines.start()")
_TRACE_TAKE = "_rehearsal_lines.take({index}, __import__('sys')._getframe().f_code.co_filename)"
_TRACE_SAVE = "_rehearsal_lines.stop(); _rehearsal_lines.save(__import__('os').environ['MMLAB_REHEARSAL_LINES'])"


class LineRecorder:
    """Kernel side: the lines executed in notebook cells (IPython's cell files), with the time each first ran."""

    def __init__(self) -> None:
        self.pending: dict[int, float] = {}  # line -> time.time() of its first event, not yet given to a cell
        self.cells: dict[int, dict[int, float]] = {}

    def start(self) -> None:
        import sys
        sys.settrace(self._call)

    def stop(self) -> None:
        import sys
        sys.settrace(None)

    def _call(self, frame, event, arg):
        name = frame.f_code.co_filename
        return self._line if ("ipykernel_" in name or name.startswith("<ipython-input")) else None

    def _line(self, frame, event, arg):
        if event == "line":
            self.pending.setdefault((frame.f_code.co_filename, frame.f_lineno), time.time())
        return self._line

    def take(self, index: int, own_file: str) -> None:
        """Give the lines recorded since the last call (other than this calling cell's) to cell ``index``."""
        self.cells[index] = {line: t for (name, line), t in self.pending.items() if name != own_file}
        self.pending = {}

    def save(self, path: str) -> None:
        Path(path).write_text(json.dumps({i: {str(k): v for k, v in lines.items()} for i, lines in self.cells.items()}))


def statements(source: str) -> dict[int, tuple[int, ...]]:
    """Each statement of ``source``: its first line -> the lines whose execution means it ran (a compound statement's
    header only, e.g. an ``if`` and its condition; a simple statement's every line)."""
    out = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.stmt):
            continue
        body = getattr(node, "body", None)
        compound = isinstance(body, list) and body and isinstance(body[0], ast.stmt)
        last = max(node.lineno, body[0].lineno - 1) if compound else node.end_lineno
        out[node.lineno] = tuple(range(node.lineno, last + 1))
    return out


@dataclass
class PassResult:
    """One notebook in one pass."""

    notebook: str
    run: str  # the pass: "default" or "any-device"
    status: str
    error: str = ""
    requests: list = field(default_factory=list)  # [(method, path)] in arrival order
    request_times: list = field(default_factory=list)
    lines: dict = field(default_factory=dict)  # tagged cell's index in the notebook -> {line: first time}
    outputs: dict = field(default_factory=dict)  # cell index (in the notebook) -> its text outputs
    images: dict = field(default_factory=dict)  # cell index -> number of images it displayed
    settings_output: str = ""


def tagged_cells(nb: nbformat.NotebookNode) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and TAG in c.metadata.get("tags", [])]


def settings_cell(nb: nbformat.NotebookNode) -> int:
    hits = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "settings()" in c.source]
    if len(hits) != 1:
        raise ValueError(f"expected one Settings cell calling settings(), found cells {hits}")
    return hits[0]


def selection(nb: nbformat.NotebookNode, check: str | None) -> tuple[nbformat.NotebookNode, dict[int, int]]:
    """Settings, the line recorder, each tagged cell and a take after it, then the pass's checks: a new notebook, and
    the map from its cell index to the original's."""
    cells, origin = [], {}

    def add(source: str, original: int | None = None) -> None:
        if original is not None:
            origin[len(cells)] = original
        cells.append(nbformat.v4.new_code_cell(source))

    add(nb.cells[settings_cell(nb)].source, settings_cell(nb))
    add(_TRACE_START)
    for i in tagged_cells(nb):
        add(nb.cells[i].source, i)
        add(_TRACE_TAKE.format(index=i))
    add(_TRACE_SAVE)
    if check:
        add(check)
    return nbformat.v4.new_notebook(cells=cells, metadata=nb.metadata), origin


def run_pass(notebook: Path, run: str, mirror, hf_home: Path, progress: bool = False) -> PassResult:
    """Run the selection of ``notebook`` in a fresh kernel against ``mirror``; the requests it made while it ran."""
    from mmlab.tools import runner

    name = notebook.name[:2]
    nb = nbformat.read(notebook, as_version=4)
    reduced, origin = selection(nb, CHECKS.get((name, run)))
    lines_file = Path(tempfile.mkstemp(prefix="mmlab-rehearsal-", suffix=".json")[1])
    env = {"MMLAB_PRETRAINED": "1", "HF_ENDPOINT": mirror.url, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_TELEMETRY": "1", "MMLAB_CACHE": str(hf_home / "mmlab"), "TORCH_HOME": str(hf_home / "torch"),
           "MMLAB_REHEARSAL_LINES": str(lines_file), "MMLAB_PRETRAINED_ANY_DEVICE": "0", **PASSES[run]}
    first = len(mirror.requests)
    executed, result = runner.execute(notebook, timeout=600, progress=progress, env=env, nb=reduced)
    out = PassResult(name, run, result.status, result.error, list(mirror.requests[first:]),
                     list(mirror.request_times[first:]))
    if lines_file.stat().st_size:
        out.lines = {int(i): {int(k): v for k, v in lines.items()} for i, lines in json.loads(lines_file.read_text()).items()}
    lines_file.unlink(missing_ok=True)
    for k, original in origin.items():
        texts, images = [], 0
        for o in executed.cells[k].get("outputs", []):
            if o.get("output_type") == "stream":
                texts.append(o.get("text", ""))
            elif o.get("output_type") in ("display_data", "execute_result"):
                texts.append(o.get("data", {}).get("text/plain", ""))
                images += "image/png" in o.get("data", {})
            elif o.get("output_type") == "error":
                texts.append("\n".join(o.get("traceback", [])))
        out.outputs[original], out.images[original] = "".join(texts), images
    out.settings_output = out.outputs.get(settings_cell(nb), "")
    return out


@dataclass
class Rehearsal:
    """All passes, and what the mirror could not answer (any request outside the hub's routes)."""

    results: list[PassResult]
    unexpected: list
    seconds: float


def rehearse(notebooks_dir: Path, progress: bool = False) -> Rehearsal:
    """Build the mirror's repositories, start it, and run every pass; ``HF_HOME`` is a temporary folder per pass."""
    from mmlab.tools.hub_fixtures import build_hub
    from mmlab.tools.hub_mirror import HubMirror

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mmlab-rehearsal-") as tmp:
        root = Path(tmp)
        build_hub(root / "hub")
        results = []
        with HubMirror(root / "hub") as mirror:
            for run, names in NOTEBOOKS.items():
                for name in names:
                    notebook = next(Path(notebooks_dir).glob(f"{name}_*.ipynb"))
                    hf_home = root / f"hf-home-{name}-{run}"
                    hf_home.mkdir()
                    results.append(run_pass(notebook, run, mirror, hf_home, progress))
            unexpected = mirror.unexpected
    return Rehearsal(results, unexpected, time.perf_counter() - t0)


def library_versions() -> str:
    """The releases whose requests the log records."""
    from importlib.metadata import version

    return ", ".join(f"{name} {version(name)}" for name in ("huggingface_hub", "transformers", "diffusers", "open_clip_torch"))


def requests_only(log: str) -> list[str]:
    """A request log's requests and section headers, its comment lines apart."""
    return [line for line in log.splitlines() if not line.startswith("#")]


def request_log(results: list[PassResult]) -> str:
    """The contract's text: per notebook and pass, its requests as ``METHOD path``, sorted; the releases in a comment."""
    parts = ["# Hub requests of the rehearsal (mmlab.tools.rehearsal), per notebook and pass, sorted within each.",
             f"# Recorded with {library_versions()}.",
             "# After a library upgrade: `mmlab rehearse --write tests/rehearsal_requests.txt`, then read the diff."]
    for r in results:
        parts.append(f"[{r.notebook} {r.run}]")
        parts += sorted(f"{method} {path}" for method, path in r.requests)
    return "\n".join(parts) + "\n"


def unexecuted(notebooks_dir: Path, results: list[PassResult]) -> dict[str, list[str]]:
    """Per notebook, the statements of its tagged cells that ran in no pass (text of their first line), CUDA_ONLY apart."""
    missing = {}
    for name in sorted({r.notebook for r in results}):
        nb = nbformat.read(next(Path(notebooks_dir).glob(f"{name}_*.ipynb")), as_version=4)
        for i in tagged_cells(nb):
            ran = set().union(*(r.lines.get(i, {}).keys() for r in results if r.notebook == name))
            source_lines = nb.cells[i].source.splitlines()
            for first, span in statements(nb.cells[i].source).items():
                text = source_lines[first - 1].strip()
                if not ran & set(span) and text not in CUDA_ONLY.get(name, []):
                    missing.setdefault(name, []).append(text)
    return missing


def announced_first(notebooks_dir: Path, result: PassResult) -> bool:
    """Whether the notebook's checkpoint row (``announce``) was printed before its first download from the mirror."""
    nb = nbformat.read(next(Path(notebooks_dir).glob(f"{result.notebook}_*.ipynb")), as_version=4)
    downloads = [t for (method, path), t in zip(result.requests, result.request_times) if REPOS[result.notebook] in path]
    if not downloads:
        return True
    for i in tagged_cells(nb):
        source = nb.cells[i].source.splitlines()
        announce = next((n for n, line in enumerate(source, 1) if "announce(" in line and "import" not in line), None)
        if announce is None:
            continue
        after = [t for line, t in result.lines.get(i, {}).items() if line > announce]
        return bool(after) and min(after) <= min(downloads)
    return False


def write_log(path: Path, results: list[PassResult]) -> None:
    from mmlab.files import write_atomic

    write_atomic(Path(path), request_log(results).encode())


def summary(rehearsal: Rehearsal) -> str:
    rows = [f"{r.notebook} {r.run:<10} {r.status:<6} {len(r.requests):>3} requests" + (f"  {r.error}" if r.error else "")
            for r in rehearsal.results]
    rows += [f"outside the hub's routes: {method} {path}" for method, path in rehearsal.unexpected]
    return "\n".join(rows + [f"rehearsal: {rehearsal.seconds:.0f} s"])


def main(notebooks_dir: Path, write: Path | None = None) -> int:
    """``mmlab rehearse``: run the rehearsal, print what ran; ``write``: store the request log there."""
    rehearsal = rehearse(notebooks_dir, progress=True)
    print(summary(rehearsal))
    missing = unexecuted(notebooks_dir, rehearsal.results)
    for name, texts in missing.items():
        print(f"{name}: never executed: " + "; ".join(texts))
    if write:
        write_log(write, rehearsal.results)
        print(f"wrote {write}")
    ok = all(r.status == "ok" for r in rehearsal.results) and not missing and not rehearsal.unexpected
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(Path(os.environ.get("MMLAB_NOTEBOOKS", "notebooks"))))
