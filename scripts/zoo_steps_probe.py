"""Probe notebook 04's step budgets at one training seed: run the notebook's own code with other step counts for
the named models (the others at 5 steps), through the results table, and print it.

    python scripts/zoo_steps_probe.py SEED NAME=STEPS [NAME=STEPS ...]   # e.g. 1 LXMERT=840 CoCa=1200

Names: ViT, UNITER-style, LXMERT, CoCa. MMLAB_THREADS sets the thread count (a thread count acts like a seed).
How notebook 04's budgets were chosen: LXMERT 840 and CoCa 1,200 after seed 1 stayed on the binding-free plateau
at 420 / 400 (2 threads); UNITER-style 1,200 after seed 0 stayed there at 600 steps on 1 thread.
"""
import json
import os
import re
import sys
from pathlib import Path

import matplotlib

if len(sys.argv) < 3 or not all("=" in a for a in sys.argv[2:]):
    raise SystemExit(__doc__)
steps = {"ViT": 5, "UNITER-style": 5, "LXMERT": 5, "CoCa": 5}
for arg in sys.argv[2:]:
    name, value = arg.split("=")
    if name not in steps:
        raise SystemExit(f"unknown model {name!r}; choose from {', '.join(steps)}")
    steps[name] = int(value)
os.environ["MMLAB_SEED"] = sys.argv[1]
matplotlib.use("Agg")
notebook = Path(__file__).resolve().parent.parent / "notebooks" / "04_sota_models.ipynb"
cells = json.loads(notebook.read_text())["cells"]
src = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
src = src.replace("mplot.small_figures()", "")
src = re.sub(r"STEPS = \{[^}]*\}", f"STEPS = {steps!r}", src)
src = src[: src.index("ids = vocab.encode(test_vqa.questions[:1], 12)")]  # through the results table
exec(compile(src, str(notebook), "exec"), {"__name__": "__main__"})
