"""Where a stored figure came from: the machine and library releases it was measured with, and digests of the code.

Another CPU acts as another seed, and a new library release can move a figure, so every seed table and stored study
records :func:`machine` and :func:`library_versions`. A stored output is trusted only while the code it came from is
unchanged; :func:`source_digest` hashes what *executes* — a module's or a cell's syntax tree without its docstrings
and comments — so editing a docstring or a comment leaves stored results fresh, while any code edit makes them stale.
"""

from __future__ import annotations

import ast
import hashlib
import os
import platform
from collections.abc import Iterable
from pathlib import Path

import torch


def machine() -> str:
    """The CPU's model name, cores, and torch with the CPU kernels it chose (another CPU acts as another seed)."""
    cpuinfo = Path("/proc/cpuinfo")  # Linux only; elsewhere platform's (coarser) name
    models = ([line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
              if cpuinfo.is_file() else [])
    name = models[0] if models else platform.processor() or platform.machine()
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{name} ({os.cpu_count()} cores{gpu}), torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})"


def library_versions() -> dict[str, str]:
    """The versions of the libraries whose classes the notebooks train (a new release can move a figure)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "open_clip_torch", "diffusers", "shap", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def source_digest(text: str) -> str:
    """SHA-256 of Python source as it executes: its AST without docstrings (comments are not in the AST).

    A notebook cell's IPython magics and shell lines (``%…``, ``!…``) are kept as text; source that does not parse
    is hashed as it is.
    """
    lines = text.splitlines()
    magics = [line.strip() for line in lines if line.lstrip().startswith(("%", "!"))]
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines)
    try:
        tree = _without_docstrings(ast.parse(code))
    except SyntaxError:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()
    return hashlib.sha256((ast.dump(tree, include_attributes=False) + "\x00".join(magics)).encode("utf-8")).hexdigest()


def cells_digest(sources: Iterable[str]) -> str:
    """One digest of code cells, in order (each by :func:`source_digest`)."""
    h = hashlib.sha256()
    for source in sources:
        h.update(source_digest(source).encode() + b"\x00")
    return h.hexdigest()


def module_file(name: str, package: Path | None = None) -> Path | None:
    """The source file of ``mmlab`` module ``name`` (``mmlab.clip.loss``) in ``package`` (default: this installation's
    ``mmlab`` folder); None when it does not exist."""
    package = package or Path(__file__).resolve().parent
    rel = Path(*name.split(".")[1:])
    for candidate in (package / rel / "__init__.py", (package / rel).with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def module_digests(modules: Iterable[str], package: Path | None = None) -> dict[str, str]:
    """:func:`source_digest` of each named ``mmlab`` module's file ("missing" for a module that is gone)."""
    out = {}
    for name in modules:
        path = module_file(name, package)
        out[name] = source_digest(path.read_text(encoding="utf-8")) if path else "missing"
    return out
