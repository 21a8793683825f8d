"""Probe a tiny-CLIP recipe against notebook 01's held-out bar (composed prompts >= 0.90), outside the cache.

    MMLAB_THREADS=4 python scripts/clip_recipe_probe.py SEED [FIELD=VALUE ...]     # run it alone

FIELD is any field of `mmlab.clip.TinyClipRecipe` with a number value (num_steps=3600, lr=2e-3, weight_decay=0.05,
shape_batches=6); the rest stays notebook 01's recipe. A thread count acts like a seed: MMLAB_THREADS sets it. Prints
what 01's claims cell scores (1,200 images each, image seed 999): composed prompts read as notebook 01 reads them since
2026-12-05 (colour asked about the blurred copy, shape about the silhouette) and as before (the image and its grey
copy), one prompt per pair on held-out pairs, composed prompts (image + grey) on seen pairs; and the held-out curve of
training (300 images every 200 steps, composed as training logs it: blurred + silhouette since 2026-12-06, image + grey
before).

Measured 2026-12-05 (Intel Xeon with AMX, 2 cores, MMLAB_THREADS=4): see notebook 01's appendix.
"""

import sys
import time
from dataclasses import fields, replace

import torch

from mmlab import clip as mclip
from mmlab.data import ShapesWorld
from mmlab.runtime import set_threads

if len(sys.argv) < 2 or not sys.argv[1].isdigit():
    raise SystemExit(__doc__)
numeric = {f.name: type(f.default) for f in fields(mclip.TinyClipRecipe)
           if type(f.default) in (int, float) and f.name != "seed"}  # not the booleans; the seed is SEED
overrides = {}
for arg in sys.argv[2:]:
    name, _, value = arg.partition("=")
    if name not in numeric or not value:
        raise SystemExit(f"{arg!r}: expected FIELD=VALUE with FIELD one of {sorted(numeric)}")
    overrides[name] = numeric[name](float(value)) if numeric[name] is int else float(value)
recipe = replace(mclip.TinyClipRecipe(seed=int(sys.argv[1])), **overrides)
threads = set_threads()
print(f"seed {recipe.seed}, {threads} threads, recipe changes: {overrides or 'none (notebook 01 as it is)'}", flush=True)

world = ShapesWorld(image_size=32, seed=0)  # notebook 01's world (WORLD_SEED = 0)
t0 = time.perf_counter()
model, history = mclip.train_tiny_clip(recipe, progress=False, eval_every=200, world=world)
seconds = time.perf_counter() - t0
tokenizer = mclip.tokenizer_for(recipe.model_cfg)


def composed_accuracy(split: str, **views) -> float:
    """Composed prompts on 1,200 images of ``split`` (seed 999, as notebook 01): ``mclip.compositional_logits``."""
    batch = world.sample(1200, split, seed=999)
    scores = mclip.compositional_logits(model, tokenizer, batch.images, world.colors, world.shapes, **views)
    target = torch.tensor([world.pairs.index(p) for p in zip(batch.colors, batch.shapes)])
    return (scores.argmax(-1) == target).float().mean().item()


IMAGE_GREY = {"colour_view": lambda x: x, "shape_view": mclip.grey}  # notebook 01's read before 2026-12-05

with torch.no_grad():
    scores = {
        "composed (blurred + silhouette), held-out (bar >= 0.90)": composed_accuracy("heldout"),
        "composed (image + grey), held-out": composed_accuracy("heldout", **IMAGE_GREY),
        "one prompt per pair, held-out": mclip.zero_shot_accuracy(model, tokenizer, world, n=1200, seed=999),
        "composed (image + grey), seen pairs": composed_accuracy("train", **IMAGE_GREY),
    }
curve = " ".join(f"{step}:{e['heldout_acc_composed']:.2f}" for step, e in history.evals)
print(f"held-out composed during training (300 images): {curve}")
print(f"{recipe.num_steps} steps in {seconds:.0f} s; " + "; ".join(f"{k} {v:.3f}" for k, v in scores.items()))
