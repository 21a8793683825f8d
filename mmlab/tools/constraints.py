"""``notebooks/constraints.txt``: the exact versions behind the committed notebook outputs.

``mmlab run --inplace`` writes it after a green run: every installed distribution in the dependency closure of
``mmlab[dev]`` — what the project needs, not whatever else the machine has installed.
"""

from __future__ import annotations

from pathlib import Path

from mmlab.files import write_atomic


def dependency_closure(root: str = "mmlab", extras: tuple[str, ...] = ("dev",)) -> dict[str, str]:
    """The installed distributions ``root[extras]`` needs, directly or through its dependencies: name -> version.

    Walks each installed distribution's declared requirements (markers evaluated for this interpreter, extras followed
    where a requirement names them); a requirement that is not installed here is skipped (its marker excluded it).
    """
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, str] = {}
    todo = [(root, set(extras))]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        name, wanted = todo.pop()
        key = (canonicalize_name(name), frozenset(wanted))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        if canonicalize_name(name) != canonicalize_name(root):
            found[dist.metadata["Name"]] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, set(req.extras)))
    return found


def write_constraints(target: Path) -> None:
    """The exact versions behind the committed outputs, as pip constraints: every installed distribution in the
    dependency closure of ``mmlab[dev]`` (not whatever else the machine has)."""
    pins = sorted((f"{name}=={version}" for name, version in dependency_closure().items()), key=str.lower)
    header = ("# Versions of the run that produced the committed notebook outputs (written by `mmlab run --inplace`):\n"
              "# the installed dependency closure of mmlab[dev]. pip install -e \".[dev]\" -c notebooks/constraints.txt\n")
    write_atomic(target, (header + "\n".join(pins) + "\n").encode())
