"""``mmlab bench``: the time budgets, measured — outside the default ``pytest`` and never asserted in a notebook.

Time is a property of a machine, not of a lesson: the notebooks print how long each training took and record it
(``mmlab.claims.seconds``); ``mmlab run`` keeps it in ``summary.json``. This command compares those records, and two
micro-benchmarks it runs itself, with budgets, prints each as measured / budget, and exits 1 when one is missed.
The micro-benchmark "100 tiny-CLIP steps" is the yardstick for comparing runs from different hours.

A training's budget follows its recipe and the thread count it ran on: the slowest of the five runs of the seed table
made at that thread count (``notebooks/seeds/`` on two threads, ``seeds/one-thread/`` on one), times ``DRIFT`` for
this machine's hour-to-hour drift. A recipe change re-makes its seed table, so the budget moves with it; a thread count
no table was made at gets no budget ("no reference"), never a made-up one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

DRIFT = 1.5  # the reference machine's speed drifts 1.2-1.6x from hour to hour
TABLE_FOLDERS = ("seeds", "seeds/one-thread")  # the seed tables of this machine (seeds/other-cpus/ are other machines)
SUITE_BUDGET = 600  # seconds: all five notebooks from an empty cache (mmlab run), issue 18's target
WORLD_BUDGET = 5.0  # seconds: ShapesWorld, 10,000 images
# (what, budget: lower bound of a ratio) recorded by notebook 05 among its figures
RATIOS = [("05_stable_diffusion", "our DDIM loop vs diffusers' (speed ratio)", 0.95),
          ("05_stable_diffusion", "DDIM-50 vs DDPM-1000 (speed-up)", 10.0)]


def reference_seconds(notebooks: Path) -> dict[tuple[str, int], dict[str, float]]:
    """``(notebook, threads) -> {training: slowest seconds over the seed table's runs}`` from the committed tables.

    A table made at ``threads`` threads is the reference for runs at that count; the first folder of
    ``TABLE_FOLDERS`` that has one wins. Rows that failed or did not train (loaded from the cache) are skipped.
    """
    out: dict[tuple[str, int], dict[str, float]] = {}
    for folder in TABLE_FOLDERS:
        for path in sorted((notebooks / folder).glob("*.json")):
            study = json.loads(path.read_text())
            if not isinstance(study, dict) or "rows" not in study or "threads" not in study:
                continue
            key = (study["notebook"], int(study["threads"]))
            if key in out:
                continue
            slowest: dict[str, float] = {}
            for row in study["rows"]:
                if row.get("status") != "ok":
                    continue
                for what, seconds in (row.get("training_seconds") or {}).items():
                    slowest[what] = max(seconds, slowest.get(what, 0.0))
            out[key] = slowest
    return out


def yardstick(cwd: Path, env: dict[str, str]) -> float:
    """Seconds of the yardstick (100 tiny-CLIP training steps, :func:`micro_benchmarks`), timed in a fresh process
    on all the cores: run alone, after the notebooks, so that runs of different hours and machines compare."""
    import subprocess
    import sys

    code = "from mmlab.tools.bench import micro_benchmarks; print(micro_benchmarks()[-1][1])"
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.split()[-1])


def micro_benchmarks(notebooks: Path | None = None) -> list[tuple[str, float, float | None]]:
    """``(what, measured seconds, budget seconds or None)`` of the benchmarks run here.

    The yardstick's budget: 100 steps' share of the slowest tiny-CLIP training in notebook 01's seed table at this
    process's thread count, times ``DRIFT``.
    """
    import torch

    from mmlab import clip as mclip
    from mmlab.data import ShapesWorld

    world = ShapesWorld(image_size=32, seed=0)
    t0 = time.perf_counter()
    world.sample(10_000, seed=9)
    rows = [("ShapesWorld: 10,000 images", time.perf_counter() - t0, WORLD_BUDGET)]
    config = mclip.TinyClipRecipe(num_steps=100)
    with torch.random.fork_rng():
        _, history = mclip.train_tiny_clip(config, progress=False, eval_every=10_000)  # on settings.device()
    threads = torch.get_num_threads()
    slowest = reference_seconds(notebooks).get(("01_clip_dalle", threads), {}).get("tiny CLIP training") if notebooks else None
    budget = None if slowest is None else DRIFT * slowest * 100 / mclip.TinyClipRecipe().num_steps
    rows.append((f"100 tiny-CLIP steps (the yardstick, {threads} threads)", history.seconds, budget))
    return rows


def from_summary(summary: list[dict], notebooks: Path | None = None) -> list[tuple[str, float, float | None]]:
    """Budget rows from a ``summary.json`` written by ``mmlab run``: one per recorded training (its budget from the
    seed table at the thread count the notebook ran on, or None), then the suite's."""
    references = reference_seconds(notebooks) if notebooks else {}
    rows = []
    for record in summary:
        report = record.get("report") or {}
        threads = report.get("threads")
        slowest = references.get((record["name"], threads), {}) if threads is not None else {}
        for what, seconds in (report.get("seconds") or {}).items():
            budget = DRIFT * slowest[what] if what in slowest else None
            on = f"{threads} thread{'' if threads == 1 else 's'}"
            rows.append((f"{record['name'][:2]}: {what}, {on}", seconds, budget))
    if len(summary) == 5 and all(r["status"] == "ok" for r in summary):
        jobs, wall = summary[0].get("run_jobs", 1), summary[0].get("run_wall_seconds")
        if jobs > 1 and wall is not None:  # side by side: the reader waits the wall time, not the sum
            rows.append((f"suite: five notebooks (mmlab run, {jobs} at a time: wall)", wall, SUITE_BUDGET))
        else:
            rows.append(("suite: five notebooks (mmlab run)", sum(r["seconds"] for r in summary), SUITE_BUDGET))
    return rows


def ratios(summary: list[dict]) -> list[tuple[str, float, float]]:
    by_name = {r["name"]: r for r in summary}
    rows = []
    for notebook, what, floor in RATIOS:
        bars = ((by_name.get(notebook) or {}).get("report") or {}).get("measured") or {}
        if what in bars:
            rows.append((f"{notebook[:2]}: {what}", bars[what], floor))
    return rows


def profile(summary: list[dict], top: int = 15) -> list[tuple[str, int, str, float, float]]:
    """The ``top`` slowest cells of a run: (notebook, cell index, first line, seconds, share of the run's total)."""
    total = sum(r["seconds"] for r in summary) or 1.0
    cells = [(r["name"], index, first, seconds, seconds / total)
             for r in summary for index, first, seconds in r.get("cells", [])]
    return sorted(cells, key=lambda c: -c[3])[:top]


def main(summary_path: Path, micro: bool = True, top: int = 0, notebooks: Path | None = None) -> int:
    """Print every budget as measured / budget; return 1 when one is missed. ``notebooks``: the folder whose
    ``seeds/`` tables give the trainings' budgets (without it, trainings get none)."""
    rows = micro_benchmarks(notebooks) if micro else []
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else []
    if not summary:
        print(f"(no {summary_path}: run `mmlab run` first for the notebooks' training budgets)")
    rows += from_summary(summary, notebooks)
    print(f"training budgets: the slowest run of the seed table at the thread count the training ran on, x {DRIFT} "
          f"(tables in {notebooks / 'seeds' if notebooks else 'no folder given'})")
    if summary and summary[0].get("run_jobs", 1) > 1:
        print(f"the run: {summary[0]['run_jobs']} notebooks at a time, {summary[0].get('run_wall_seconds') or 0:.1f} s of wall "
              f"time; the sum of notebook seconds {sum(r['seconds'] for r in summary):.1f} s")
    if top:
        print(f"the {top} slowest cells of {summary_path} (of {sum(r['seconds'] for r in summary):.0f} s):")
        for name, index, first, seconds, share in profile(summary, top):
            print(f"  {seconds:7.1f} s {share:6.1%}  {name} cell {index}: {first[:70]}")
    missed = 0
    print(f"{'budget':<62}{'measured':>10}{'budget':>9}  ok")
    for what, measured, budget in rows:
        if budget is None:  # no seed table at this thread count: nothing to compare with
            print(f"{what[:61]:<62}{measured:>9.1f}s{'-':>9}  no reference")
            continue
        ok = measured <= budget
        missed += not ok
        shown = f"{budget:.1f}" if budget < 10 else f"{budget:.0f}"  # the yardstick's is ~4-13 s: not rounded
        print(f"{what[:61]:<62}{measured:>9.1f}s{shown:>8}s  {'yes' if ok else 'MISSED'}")
    for what, measured, floor in ratios(summary):
        ok = measured >= floor
        missed += not ok
        print(f"{what[:61]:<62}{measured:>9.2f}x{floor:>7.2f}x+  {'yes' if ok else 'MISSED'}")
    return 1 if missed else 0
