"""One statement per claim: a measured figure, its operator and its bar, recorded and then asserted.

A notebook's claims cell states each claim once::

    claims.check("one prompt per pair, held-out", acc, ">", 8 / 24)   # 8 x chance: 24 pairs
    claims.measure("colour minus shape right", colour_ok - shape_ok)  # printed and recorded, not asserted

:func:`check` prints the figure beside its bar, records it (``MMLAB_REPORT``, the file ``mmlab run`` and
``mmlab seeds`` read back) and then asserts it, so a seed table stores the operator and bar the notebook declared:
nothing parses a bar out of a label. :func:`measure` records a figure that is reported, never asserted — a
comparison whose sign flips between seeds, or one that sits at the edge of its bar.

The rule a claim must meet before it is asserted (``tests/test_seed_tables.py`` enforces it on the stored tables): over
training seeds 0-4, ``min - bar >= (max - min) / 2`` for a lower bar, ``bar - max >= (max - min) / 2`` for an upper
one — about two standard deviations of the seeds' spread, because another CPU acts as a sixth seed. Equalities
(``"=="``: our code against a reference library, an exact count) are exempt.

``MMLAB_CLAIMS=report`` prints and records every claim without asserting it; so does a smoke run (``MMLAB_SMOKE=1``,
``mmlab run --smoke``: a few training steps, so the figures mean nothing and only the code path is checked).
"""

from __future__ import annotations

import json
import math
import operator
import os
from numbers import Real
from pathlib import Path

import torch

from mmlab.files import write_atomic
from mmlab.settings import seed, smoke

OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq}

_claims: dict[str, dict] = {}    # name -> {"value", "op", "bar"}
_measured: dict[str, float] = {}
_seconds: dict[str, float] = {}


def enforced() -> bool:
    """Whether :func:`check` asserts (the default) or only reports (``MMLAB_CLAIMS=report``, or a smoke run)."""
    mode = os.environ.get("MMLAB_CLAIMS", "assert").strip().lower() or "assert"
    if mode not in ("assert", "report"):
        raise ValueError(f"MMLAB_CLAIMS must be 'assert' or 'report', got {mode!r}")
    return mode == "assert" and not smoke()


def _number(name: str, x) -> float:
    """``x`` as a finite float (bools, ints, NumPy scalars and 0-d tensors included), else an error naming ``name``."""
    if isinstance(x, torch.Tensor):
        if x.numel() != 1:
            raise TypeError(f"{name} must be a number, got a tensor of shape {tuple(x.shape)}")
        x = x.item()
    if hasattr(x, "item") and not isinstance(x, Real):  # NumPy scalars
        x = x.item()
    if not isinstance(x, Real):
        raise TypeError(f"{name} must be a number, got {type(x).__name__}")
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    return x


def _name(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    return name


def _shown(x: float) -> str:
    return f"{x:.3f}" if x == 0 or 1e-3 <= abs(x) < 1e6 else f"{x:.2e}"


def label(name: str, op: str | None = None, bar: float | None = None) -> str:
    """How a figure is named in a seed table: ``"name (op bar)"`` for a claim, ``"name (measured)"`` otherwise."""
    return f"{name} ({op} {bar:.4g})" if op is not None else f"{name} (measured)"


def check(name: str, value, op: str, bar) -> float:
    """State a claim: print ``value`` beside its bar, record it, then assert ``value op bar``; returns ``value``.

    Args:
        name: the claim, as the seed table names it (unique in the notebook).
        value: the measured figure (a number, a bool, a NumPy scalar or a 0-d tensor).
        op: one of ``>``, ``>=``, ``<``, ``<=``, ``==`` (``==``: exact, exempt from the margin rule).
        bar: the threshold (a number), written once, here.
    Raises:
        AssertionError: the claim does not hold (unless ``MMLAB_CLAIMS=report``).
    """
    name = _name(name)
    if op not in OPS:
        raise ValueError(f"op must be one of {', '.join(OPS)}, got {op!r}")
    value, bar = _number("value", value), _number("bar", bar)
    before = _claims.get(name)
    if before is not None and (before["op"], before["bar"]) != (op, bar):
        raise ValueError(f"claim {name!r} is stated twice with different bars: {before['op']} {before['bar']} and {op} {bar}")
    if name in _measured:
        raise ValueError(f"{name!r} is already recorded as measured: a figure is a claim or measured, not both")
    _claims[name] = {"value": value, "op": op, "bar": bar}
    holds = OPS[op](value, bar)
    _write()
    verdict = "ok" if holds else ("MISSED" if enforced() else "MISSED (reported, not asserted: MMLAB_CLAIMS=report)")
    print(f"claim     {name:<52} {_shown(value):>9}  {op} {bar:.4g}  {verdict}")
    if not holds and enforced():
        raise AssertionError(f"claim {name!r}: {value!r} is not {op} {bar!r}")
    return value


def measure(name: str, value) -> float:
    """Record a figure that is printed and discussed, never asserted; returns it."""
    name = _name(name)
    if name in _claims:
        raise ValueError(f"{name!r} is already a claim: a figure is a claim or measured, not both")
    _measured[name] = value = _number("value", value)
    _write()
    print(f"measured  {name:<52} {_shown(value):>9}")
    return value


def seconds(times: dict[str, float]) -> None:
    """Print and record training times: reported, never asserted (``mmlab bench`` compares them with budgets)."""
    for key, value in times.items():
        _seconds[_name(key)] = _number(f"times[{key!r}]", value)
        print(f"{key:<36}{_seconds[key]:7.1f} s")
    _write()


def recorded() -> dict:
    """This kernel's record: seed, threads, claims (value, op, bar), measured figures and training seconds."""
    return {"seed": seed(), "threads": torch.get_num_threads(), "claims": {k: dict(v) for k, v in _claims.items()},
            "measured": dict(_measured), "seconds": dict(_seconds)}


def reset() -> None:
    """Forget what this kernel recorded (tests; a notebook never needs it)."""
    _claims.clear()
    _measured.clear()
    _seconds.clear()


def _write() -> None:
    """Write the record to ``MMLAB_REPORT`` (set by ``mmlab run`` and ``mmlab seeds``) after every statement, whole,
    so a seed that fails a claim still leaves every figure stated before it."""
    target = os.environ.get("MMLAB_REPORT")
    if target:
        write_atomic(Path(target), json.dumps(recorded(), indent=1).encode())
