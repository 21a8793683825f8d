"""Static checks over the package and the notebooks: no pickle loading, no remote code, no device hard-coded outside
the code that chooses the device, no wall-clock assertion in a notebook or a test; teaching code apart from the
tooling (no notebook imports `mmlab.tools`, the teaching modules never import it at load time) and no import cycle."""

import ast
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = sorted((ROOT / "mmlab").rglob("*.py"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
DEVICE_CHOOSERS = {"settings.py", "pretrained.py", "lanes.py"}  # where the device (dtype, lanes per device) is chosen


def code_of(path: Path) -> str:
    if path.suffix == ".ipynb":
        return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    return path.read_text()


SOURCES = PACKAGE + NOTEBOOKS


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_pickle_loading_and_no_remote_code(path):
    code = code_of(path)
    assert not re.search(r"^\s*import pickle|^\s*from pickle|pickle\.load|cloudpickle|dill\.load", code, re.M), path
    assert "trust_remote_code=True" not in code, path
    for call in re.findall(r"torch\.load\([^)]*\)", code):
        assert "weights_only=True" in call, f"{path}: {call}"


@pytest.mark.parametrize("path", [p for p in PACKAGE if p.name not in DEVICE_CHOOSERS], ids=lambda p: p.name)
def test_no_hard_coded_device(path):
    code = path.read_text()
    assert ".cuda()" not in code, path
    code = re.sub(r"""(==|!=)\s*["'](cpu|cuda|mps)["']""", "", code)  # asking which device a tensor is on chooses none
    hits = re.findall(r"""["'](cpu|cuda|mps)(:\d+)?["']""", code)
    assert not hits, f"{path.name} names a device ({hits}): take a device argument, defaulting to the model's or settings.device()"


TIME_NAMES = r"(seconds|_s\b|_ms\b|speed|speedup|timing|elapsed|perf_counter|time\.time|BUDGET)"


@pytest.mark.parametrize("path", NOTEBOOKS + sorted((ROOT / "tests").glob("test_*.py")), ids=lambda p: p.name)
def test_no_wall_clock_assertion(path):
    """Time is printed and benchmarked (`mmlab bench`), never asserted: another machine is slower, not wrong.
    Tests may bound how long a call *waits* (a timeout), which is behaviour, not speed: those lines say so."""
    for line in code_of(path).splitlines():
        recorded_only = re.search(r">\s*0\b", line)  # "time was recorded", not "fast enough"
        if re.match(r"\s*assert\b", line) and re.search(TIME_NAMES, line) and "timeout" not in line.lower() and not recorded_only:
            pytest.fail(f"{path.name}: a wall-clock assertion: {line.strip()}")


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def load_time_imports(path: Path, root: Path = ROOT, files: list[Path] = PACKAGE) -> set[str]:
    """The mmlab modules a module imports when it is loaded (top level, not inside a function: a lazy import is how a
    module reaches the tooling or a heavy library only when asked)."""
    name = _module_name(path, root)
    known = {_module_name(p, root) for p in files}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "mmlab"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(kept + ([base] if base else []))
            if base.split(".")[0] == "mmlab":  # `from mmlab import clip` imports the module mmlab.clip
                out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return out - {name}


def find_cycle(root: Path = ROOT, files: list[Path] = PACKAGE) -> list[str] | None:
    """An import cycle among the modules' load-time imports, or None."""
    graph = {_module_name(p, root): load_time_imports(p, root, files) for p in files}
    for m in graph:  # a submodule importing a name from its own package is not a cycle of modules
        graph[m] = {d for d in graph[m] if d in graph and not m.startswith(d + ".")}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return path[path.index(d):] + [d]
            if d not in state and (found := visit(d, path + [d])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def test_no_import_cycle():
    cycle = find_cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_sees_a_cycle_and_not_a_lazy_import(tmp_path):
    (tmp_path / "mmlab").mkdir()
    a, b, c = (tmp_path / "mmlab" / f"{n}.py" for n in "abc")
    a.write_text("from mmlab import b\n")
    b.write_text("import torch\n\ndef f():\n    from mmlab.a import x\n")
    c.write_text("from mmlab.a import y\n")
    assert load_time_imports(b, tmp_path, [a, b, c]) == set()  # the import inside f is not a load-time import
    assert find_cycle(tmp_path, [a, b, c]) is None
    b.write_text("from mmlab.c import z\n")
    assert find_cycle(tmp_path, [a, b, c]) == ["mmlab.a", "mmlab.b", "mmlab.c", "mmlab.a"]
