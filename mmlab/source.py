"""``mmlab.show(fn)``: print a library function's source in the notebook, where the idea is the lesson.

The loss, the masks, the sampler step and the Shapley sum live in ``mmlab/`` (tested against the reference
libraries) and are *read* on the page: argument checks sit in small ``_check_*`` helpers so the printed source is
the idea itself.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable


def show(fn: Callable) -> None:
    """Print ``fn``'s source with the module it lives in (a function, method or class)."""
    if not callable(fn):
        raise TypeError(f"fn must be a function or class, got {type(fn).__name__}")
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError) as exc:
        raise TypeError(f"fn has no Python source to show ({exc})") from None
    print(f"# {fn.__module__}.{fn.__qualname__}")
    print(textwrap.dedent(source).rstrip())
