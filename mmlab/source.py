"""``mmlab.show(fn)``: print a library function's source in the notebook, where the idea is the lesson.

The loss, the masks, the sampler step and the Shapley sum live in ``mmlab/`` (tested against the reference
libraries) and are *read* on the page: argument checks sit in small ``_check_*`` helpers so the printed source is
the idea itself. What was shown is remembered (:data:`SHOWN`), so a notebook's stamp covers the printed text too: a
docstring edit elsewhere leaves a notebook fresh, but not one of a function the notebook prints.
"""

from __future__ import annotations

import hashlib
import inspect
import textwrap
from collections.abc import Callable

SHOWN: dict[str, str] = {}  # "module.qualname" -> SHA-256 of the source printed, in this kernel


def shown_source(fn: Callable) -> str:
    """The text :func:`show` prints for ``fn``: its dedented source."""
    return textwrap.dedent(inspect.getsource(fn)).rstrip()


def show(fn: Callable) -> None:
    """Print ``fn``'s source with the module it lives in (a function, method or class)."""
    if not callable(fn):
        raise TypeError(f"fn must be a function or class, got {type(fn).__name__}")
    try:
        source = shown_source(fn)
    except (OSError, TypeError) as exc:
        raise TypeError(f"fn has no Python source to show ({exc})") from None
    name = f"{fn.__module__}.{fn.__qualname__}"
    SHOWN[name] = hashlib.sha256(source.encode("utf-8")).hexdigest()
    print(f"# {name}")
    print(source)
