"""``mmlab bench``: the time budgets, measured — outside the default ``pytest`` and never asserted in a notebook.

Time is a property of a machine, not of a lesson: the notebooks print how long each training took and record it
(``mmlab.runtime.report``); ``mmlab run`` keeps it in ``summary.json``. This command compares those records, and two
micro-benchmarks it runs itself, with the budgets below, prints each as measured / budget, and exits 1 when one is
missed. The micro-benchmark "100 tiny-CLIP steps" is the yardstick for comparing runs from different hours.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

# (notebook, what its report calls the time, budget in seconds, why this budget)
BUDGETS = [
    ("01_clip_dalle", "tiny CLIP training", 120, "notebook 01's training on 2 CPU cores"),
    ("02_blip2", "*", 180, "all training in notebook 02 on 2 CPU cores"),
    ("04_sota_models", "ViT", 60, "about a minute per model"),
    ("04_sota_models", "UNITER-style", 60, "about a minute per model"),
    ("04_sota_models", "LXMERT", 60, "about a minute per model"),
    ("04_sota_models", "CoCa", 60, "about a minute per model"),
    ("05_stable_diffusion", "digits DDPM", 180, "the class-conditional DDPM of notebook 05"),
    ("*", "suite", 600, "all five notebooks from an empty cache (mmlab run)"),
]
# (what, budget: lower bound of a ratio) recorded by notebook 05 among its figures
RATIOS = [("05_stable_diffusion", "our DDIM loop vs diffusers' (speed ratio)", 0.95),
          ("05_stable_diffusion", "DDIM-50 vs DDPM-1000 (speed-up)", 10.0)]


def micro_benchmarks() -> list[tuple[str, float, float]]:
    """``(what, measured seconds, budget seconds)`` of the benchmarks run here."""
    import torch

    from mmlab import clip as mclip
    from mmlab.data import ShapesWorld

    world = ShapesWorld(image_size=32, seed=0)
    t0 = time.perf_counter()
    world.sample(10_000, seed=9)
    rows = [("ShapesWorld: 10,000 images", time.perf_counter() - t0, 5.0)]
    config = mclip.TinyClipRecipe(num_steps=100)
    with torch.random.fork_rng():
        _, history = mclip.train_tiny_clip(config, progress=False, eval_every=10_000)  # on runtime.device()
    rows.append(("100 tiny-CLIP steps (the yardstick)", history.seconds, 100 * 120 / mclip.TinyClipRecipe().num_steps))
    return rows


def from_summary(summary: list[dict]) -> list[tuple[str, float, float]]:
    """Budget rows from a ``summary.json`` written by ``mmlab run``."""
    by_name = {r["name"]: r for r in summary}
    rows = []
    for notebook, what, budget, _ in BUDGETS:
        if notebook == "*":
            if all(r["status"] == "ok" for r in summary) and len(summary) == 5:
                jobs, wall = summary[0].get("run_jobs", 1), summary[0].get("run_wall_seconds")
                if jobs > 1 and wall is not None:  # side by side: the reader waits the wall time, not the sum
                    rows.append((f"suite: five notebooks (mmlab run, {jobs} at a time: wall)", wall, budget))
                else:
                    rows.append(("suite: five notebooks (mmlab run)", sum(r["seconds"] for r in summary), budget))
            continue
        seconds = ((by_name.get(notebook) or {}).get("report") or {}).get("seconds") or {}
        if what == "*" and seconds:
            rows.append((f"{notebook}: all training", sum(seconds.values()), budget))
        elif what in seconds:
            rows.append((f"{notebook}: {what}", seconds[what], budget))
    return rows


def ratios(summary: list[dict]) -> list[tuple[str, float, float]]:
    by_name = {r["name"]: r for r in summary}
    rows = []
    for notebook, what, floor in RATIOS:
        bars = ((by_name.get(notebook) or {}).get("report") or {}).get("bars") or {}
        if what in bars:
            rows.append((f"{notebook}: {what}", bars[what], floor))
    return rows


def profile(summary: list[dict], top: int = 15) -> list[tuple[str, int, str, float, float]]:
    """The ``top`` slowest cells of a run: (notebook, cell index, first line, seconds, share of the run's total)."""
    total = sum(r["seconds"] for r in summary) or 1.0
    cells = [(r["name"], index, first, seconds, seconds / total)
             for r in summary for index, first, seconds in r.get("cells", [])]
    return sorted(cells, key=lambda c: -c[3])[:top]


def main(summary_path: Path, micro: bool = True, top: int = 0) -> int:
    """Print every budget as measured / budget; return 1 when one is missed."""
    rows = micro_benchmarks() if micro else []
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else []
    if not summary:
        print(f"(no {summary_path}: run `mmlab run` first for the notebooks' training budgets)")
    rows += from_summary(summary)
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
        ok = measured <= budget
        missed += not ok
        shown = f"{budget:.1f}" if budget < 10 else f"{budget:.0f}"  # the yardstick's is 4.6 s: not "5 s"
        print(f"{what[:61]:<62}{measured:>9.1f}s{shown:>8}s  {'yes' if ok else 'MISSED'}")
    for what, measured, floor in ratios(summary):
        ok = measured >= floor
        missed += not ok
        print(f"{what[:61]:<62}{measured:>9.2f}x{floor:>7.2f}x+  {'yes' if ok else 'MISSED'}")
    return 1 if missed else 0
