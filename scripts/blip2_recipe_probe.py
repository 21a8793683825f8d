"""Probe BLIP-2 recipe variants across seeds: EM on 600 seen / 600 held-out images, as notebook 02 measures it.

    python scripts/blip2_recipe_probe.py --seeds 2 3 --variant stage2_steps=600 --variant stage1_steps=100

MMLAB_THREADS sets the thread count (a thread count acts like a seed; before 2026-12-05 the probe ignored it and ran
on torch's default, so OMP_NUM_THREADS had to say it).

Each variant is a comma-separated list of TinyBlip2Recipe overrides ("base" = the library's defaults = notebook 02's
recipe; the earlier stage 1 is --variant stage1_steps=300,stage1_lr=0.002). The frozen CLIP of
each seed comes from the cache (tiny_clip(seed)). Prints one JSON line per (variant, seed). How the recipe of
notebook 02 was chosen; its appendix quotes the results.
"""

import argparse
import json
import time
from dataclasses import fields, replace

from mmlab import blip2 as mblip2
from mmlab import clip as mclip
from mmlab.data import ShapesWorld
from mmlab.runtime import set_threads


def parse(variant: str) -> dict:
    if variant == "base":
        return {}
    types = {f.name: f.type for f in fields(mblip2.TinyBlip2Recipe)}
    out = {}
    for item in variant.split(","):
        key, value = item.split("=")
        out[key] = {"int": int, "float": float, "bool": lambda v: v == "True"}.get(types[key], str)(value)
    return out


def trained(config: "mblip2.TinyBlip2Recipe", with_stage1: bool = True, clip_steps: int | None = None):
    """Notebook 02's BLIP-2 trained by ``config`` over the cached tiny CLIP of its seed (notebook 01's recipe, or that
    recipe with ``clip_steps`` steps; trained and cached when absent): (model, processor, world, seconds)."""
    world = ShapesWorld(image_size=config.image_size, seed=0)
    clip_recipe = mclip.TinyClipRecipe(seed=config.seed)
    if clip_steps is not None:
        clip_recipe = replace(clip_recipe, num_steps=clip_steps)
    clip_model, _, _ = mclip.tiny_clip(recipe=clip_recipe, progress=False)
    lm, tokenizer = mblip2.tiny_language_model(config, progress=False)
    processor = mblip2.build_processor(tokenizer, config.image_size, config.num_query_tokens)
    model = mblip2.build_blip2(config, clip_model, mclip.TinyClipRecipe().model_cfg, lm, tokenizer)
    t0 = time.perf_counter()
    if with_stage1:
        pretrainer, _ = mblip2.train_stage1(model, processor, world, config, progress=False)
        mblip2.carry_stage1(pretrainer, model)
    mblip2.train_stage2(model, processor, world, config, progress=False, eval_every=10_000)
    return model, processor, world, time.perf_counter() - t0


def run(seed: int, overrides: dict, with_stage1: bool = True) -> dict:
    model, processor, world, seconds = trained(replace(mblip2.TinyBlip2Recipe(seed=seed), **overrides), with_stage1)
    seen = world.sample(600, "train", seed=1_000)
    heldout = world.sample(600, "heldout", seed=2_000)
    em = {name: mblip2.exact_match(mblip2.caption(model, processor, b.images), b.captions)
          for name, b in (("seen", seen), ("heldout", heldout))}
    return {"seed": seed, "overrides": overrides, "stage1": with_stage1, "seconds": round(seconds, 1), **em}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--variant", action="append", default=None)
    parser.add_argument("--no-stage1", action="store_true")
    args = parser.parse_args()
    set_threads()  # MMLAB_THREADS, as the notebook's Settings cell does
    for variant in args.variant or ["base"]:
        for seed in args.seeds:
            print(json.dumps(run(seed, parse(variant), with_stage1=not args.no_stage1)), flush=True)
