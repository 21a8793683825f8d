"""Notebook 02's BLIP-2 with the silhouette view (the recipe since 2026-12-06) against the grey view it had before.

    MMLAB_THREADS=2 python scripts/blip2_view_probe.py --seeds 0 1 2 3 4 [--grey] [--clip-steps 1600]

Why: the grey view (channel mean) keeps each colour's luminance, and green's (0.33) lies inside the background's range
(0-0.35), so in the grey view many green objects all but vanish: with the grey view the held-out "a green circle" was
the worst pair at each of seeds 0-4 on 2 threads (2026-12-05, an Intel Xeon; notebook 02's appendix). The silhouette
view (``mmlab.clip.silhouette``, max - min over the channels) is ~0 on the grey background and 0.65-0.85 on every
colour of the palette. A grey image has no silhouette, so the recipe has no grey "a {shape}" sub-batches
(``shape_fraction=0``): the view itself removes the colour.
``--grey`` runs the recipe as it was (``views=("grey", "blur")``, ``shape_fraction=0.25``) with the same per-pair report.
The frozen CLIP of each seed comes from the cache (``tiny_clip(seed)``), so that CLIP's training is unchanged;
``--clip-steps N`` uses notebook 01's recipe with N steps instead (trained into the cache when absent).
Prints one JSON line per seed: exact match on 600 seen and 600 held-out images, as notebook 02 measures it, and each
held-out pair's exact match with its most common wrong caption.
"""

import argparse
import json
from collections import Counter
from dataclasses import replace

from blip2_recipe_probe import trained  # this folder is on sys.path when a script in it runs

from mmlab import blip2 as mblip2
from mmlab import clip as mclip
from mmlab.runtime import set_threads

GREY = {"views": ("grey", "blur"), "shape_fraction": 0.25}  # the recipe before 2026-12-06


def run(seed: int, silhouette: bool, clip_steps: int | None = None) -> dict:
    config = mblip2.TinyBlip2Recipe(seed=seed)
    if not silhouette:
        config = replace(config, **GREY)
    model, processor, world, seconds = trained(config, clip_steps=clip_steps)
    out = {"seed": seed, "view": "silhouette" if silhouette else "grey", "clip_steps": clip_steps or mclip.TinyClipRecipe().num_steps,
           "seconds": round(seconds, 1)}
    for name, batch in (("seen", world.sample(600, "train", seed=1_000)), ("heldout", world.sample(600, "heldout", seed=2_000))):
        predicted = mblip2.caption(model, processor, batch.images)
        out[name] = round(mblip2.exact_match(predicted, batch.captions), 3)
    per_pair = {}
    for caption in sorted(set(batch.captions)):  # the held-out batch
        idx = [i for i, c in enumerate(batch.captions) if c == caption]
        wrong = Counter(predicted[i] for i in idx if predicted[i] != caption).most_common(1)
        per_pair[caption] = [round(sum(predicted[i] == caption for i in idx) / len(idx), 2), wrong[0] if wrong else None]
    out["heldout_per_pair"] = per_pair
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--grey", action="store_true", help="the recipe as it was (grey view), for comparison")
    parser.add_argument("--clip-steps", type=int, default=None, help="a tiny CLIP of notebook 01's recipe with this many "
                        "steps instead (trained into the cache when absent)")
    args = parser.parse_args()
    set_threads()
    for seed in args.seeds:
        print(json.dumps(run(seed, silhouette=not args.grey, clip_steps=args.clip_steps)), flush=True)
