"""The seed tables behind every asserted claim: how a notebook shows the table its seed study stored.

A claim is asserted only if it holds for training seeds 0-4 with room (:mod:`mmlab.claims`). ``mmlab seeds 01``
(:mod:`mmlab.tools.seed_study`) executes notebook 01 once per seed and writes ``notebooks/seeds/01_clip_dalle.json``:
each seed's figures and pass/fail, the operator and bar of each claim as the notebook's ``claims.check`` declared
them, the mean, minimum and maximum of each figure, and when, where and with how many threads it ran.
:func:`show` prints that file; nothing in it is typed in.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmlab.claims import label


def study_path(directory: Path, stem: str) -> Path:
    """Where the seed table of notebook ``stem`` lives: ``<notebooks>/seeds/<stem>.json``."""
    return Path(directory) / "seeds" / f"{stem}.json"


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per figure: mean, min and max over the seeds that recorded it."""
    names = list(dict.fromkeys(k for r in rows if r.get("bars") for k in r["bars"]))
    out = {}
    for name in names:
        values = [r["bars"][name] for r in rows if r.get("bars") and name in r["bars"]]
        out[name] = {"mean": sum(values) / len(values), "min": min(values), "max": max(values), "n": len(values)}
    return out


def format_table(study: dict) -> str:
    """The seed table as text: one row per figure (a claim with its bar, or measured), one column per seed, then mean,
    min and max (the worst case of a lower bar is the min, of an upper bar such as an error the max)."""
    rows = study["rows"]
    seeds = [r["seed"] for r in rows]
    claims = study.get("claims", {})
    # When and on which CPU the table ran is in the JSON file (and docs/measurements.md), not in the lesson.
    lines = [f"seed study of {study['notebook']}: training seeds {', '.join(map(str, seeds))}, {study['threads']} threads "
             f"(notebooks/seeds/{'one-thread/' if study.get('how') else ''}{study['notebook']}.json)",
             f"{'figure (its bar)':<70}" + "".join(f"{'s' + str(s):>7}" for s in seeds) + f"{'mean':>7}{'min':>7}{'max':>7}{'room':>7}"]
    for name, agg in study["summary"].items():
        shown = label(name, claims[name]["op"], claims[name]["bar"]) if name in claims else label(name)
        cells = "".join(f"{r['bars'][name]:>7.3f}" if r.get("bars") and name in r["bars"] else f"{'-':>7}" for r in rows)
        room = margin_ratio(claims[name], agg) if name in claims else None
        lines.append(f"{shown[:69]:<70}{cells}{agg['mean']:>7.3f}{agg['min']:>7.3f}{agg['max']:>7.3f}"
                     + (f"{room:>7.1f}" if room is not None and room != float("inf") else f"{'':>7}"))
    lines.append("room: the worst seed's distance from the bar in half-spreads of the seeds (>= 1 to be asserted; blank: exact)")
    lines.append(f"{'notebook passed':<70}" + "".join(f"{'yes' if r['status'] == 'ok' else 'NO':>7}" for r in rows))
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"  seed {r['seed']}: {r['error']}")
    return "\n".join(lines)


def margin_ratio(claim: dict, agg: dict) -> float | None:
    """How far the worst seed clears a claim's bar, in half-spreads of the seeds (``(min - bar) / ((max - min) / 2)``,
    mirrored for an upper bar): the margin rule asserts a claim only at >= 1. None for an exact claim (``==``); inf
    when every seed gave the same figure and it clears the bar."""
    op, bar = claim["op"], claim["bar"]
    if op == "==":
        return None
    room = agg["min"] - bar if op in (">", ">=") else bar - agg["max"]
    half = (agg["max"] - agg["min"]) / 2
    if half == 0:
        return float("inf") if room > 0 or (room == 0 and op in (">=", "<=")) else float("-inf")
    return room / half


def load_study(directory: Path, stem: str) -> dict | None:
    """The stored seed table of notebook ``stem``, or None when no study has been run."""
    path = study_path(directory, stem)
    return json.loads(path.read_text()) if path.is_file() else None


def show(stem: str, directory: str | Path | None = None) -> None:
    """Print the stored seed table of notebook ``stem`` (how each notebook shows its study).

    Looked up in ``directory``, else beside the running notebook (``./seeds``), else in ``./notebooks/seeds``.
    """
    candidates = [Path(directory)] if directory is not None else [Path("."), Path("notebooks")]
    study = next((s for s in (load_study(d, stem) for d in candidates) if s is not None), None)
    if study is None:
        print(f"no seed study stored for {stem}: run `mmlab seeds {stem[:2]}`")
        return
    print(format_table(study))
