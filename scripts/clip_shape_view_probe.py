"""Which view should each composed prompt ask? (How notebook 01's composed method was chosen.) Loads the cached tiny
CLIP of each seed (``MMLAB_CACHE`` picks the cache) and scores 1,200 held-out images (seed 999, as notebook 01) with
the colour prompt asked about the image or its blurred copy and the shape prompt about the image, its grey copy or
its silhouette (max - min over the channels, ``mmlab.clip.silhouette``), overall and per held-out pair.

    python scripts/clip_shape_view_probe.py 0 1 2 3 4 [num_steps=1600]

A ``num_steps=N`` argument reads the cached CLIPs of notebook 01's recipe with N training steps instead (cached by
``scripts/blip2_view_probe.py --clip-steps N``, for example).

Measured 2026-11-29 (2 cores, 2,600-step recipe): colour and shape both asked about the image 0.973 / 0.998 / 0.891,
shape asked about the grey copy 0.954 / 0.957 / 0.962 for seeds 0 / 1 / 2, so the notebook then used the grey copy.
Measured 2026-12-05 (Intel Xeon with AMX; notebook 01's appendix has the figures): the grey copy loses a fifth of the
held-out green circles at every seed (green's brightness lies inside the background's range) and the silhouette none;
blurred + silhouette is what notebook 01 now asks.
"""

import sys

import torch

from mmlab import clip as mclip
from mmlab.data import ShapesWorld

COLOUR_VIEWS = {"image": lambda x: x, "blurred": mclip.flat_colour}
SHAPE_VIEWS = {"image": lambda x: x, "grey": mclip.grey, "silhouette": mclip.silhouette}

world = ShapesWorld(image_size=32, seed=0)
batch = world.sample(1200, "heldout", seed=999)
target = torch.tensor([world.pairs.index(p) for p in zip(batch.colors, batch.shapes)])
steps = [int(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("num_steps=")]
for seed in [int(a) for a in sys.argv[1:] if not a.startswith("num_steps=")] or [0, 1, 2, 3, 4]:
    recipe = mclip.TinyClipRecipe(seed=seed, **({"num_steps": steps[0]} if steps else {}))
    model, _, _ = mclip.load_clip(f"local-dir:{mclip.tiny_clip_dir(recipe)}")
    tokenizer = mclip.tokenizer_for(recipe.model_cfg)
    with torch.no_grad():
        colour_text = mclip.encode(model, texts=tokenizer([f"a {c} shape" for c in world.colors]))[1]
        shape_text = mclip.encode(model, texts=tokenizer([f"a {s}" for s in world.shapes]))[1]
        colour_sim = {k: mclip.encode(model, view(batch.images))[0] @ colour_text.T for k, view in COLOUR_VIEWS.items()}
        shape_sim = {k: mclip.encode(model, view(batch.images))[0] @ shape_text.T for k, view in SHAPE_VIEWS.items()}
    pairs = ", ".join(" ".join(p) for p in world.heldout_pairs)
    print(f"seed {seed}, {recipe.num_steps} steps  (colour view + shape view: all six held-out pairs; {pairs})")
    for c_name, c_sim in colour_sim.items():
        for s_name, s_sim in shape_sim.items():
            hit = ((c_sim[:, :, None] + s_sim[:, None, :]).flatten(1).argmax(-1).cpu() == target).float()
            per_pair = " ".join(f"{hit[target == world.pairs.index(p)].mean().item():.2f}" for p in world.heldout_pairs)
            print(f"  {c_name + ' + ' + s_name:<22} {hit.mean().item():.3f}   {per_pair}", flush=True)
