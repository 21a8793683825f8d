"""Recipe probes: train one notebook model with some fields of its recipe changed, outside the cache, and score it as
its notebook does. How a recipe is tried before it becomes the notebook's (docs/recipes.md keeps what they found).

    mmlab probe clip 3 num_steps=3600              # notebook 01's tiny CLIP, seed 3, 3,600 steps
    mmlab probe blip2 0 1 2 3 4 stage1_steps=150
    mmlab probe dalle 0 num_steps=800

A probe overrides a ``…Recipe`` dataclass's fields (:func:`parse_overrides`), never a notebook's text. A thread count
acts like a seed: ``MMLAB_THREADS`` sets it, as in a notebook. Run a probe alone on the machine.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from mmlab.data import ShapesWorld


def parse_overrides(recipe_cls: type, items: list[str]) -> dict:
    """``["num_steps=3600", "lr=2e-3"]`` -> ``{"num_steps": 3600, "lr": 0.002}``, typed by the recipe's fields."""
    kinds = {f.name: f.type for f in dataclasses.fields(recipe_cls)}
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in kinds or name == "seed":
            raise ValueError(f"{item!r}: expected FIELD=VALUE with FIELD one of {sorted(k for k in kinds if k != 'seed')}")
        kind = str(kinds[name])
        try:
            out[name] = (int(value) if kind == "int" else float(value) if kind == "float"
                         else value.lower() in ("1", "true", "yes") if kind == "bool"
                         else tuple(int(v) for v in value.split(",")) if kind.startswith("tuple") else value)
        except ValueError:
            raise ValueError(f"{item!r}: {name} must be {kind}, got {value!r}") from None
    return out


def clip_probe(seed: int, **overrides) -> dict:
    """Notebook 01's tiny CLIP with ``overrides``: zero-shot accuracy on 1,200 held-out images (one prompt per pair,
    CLIP's recipe, and the toy-only composed read), as notebook 01 scores it, and the training seconds."""
    from mmlab import clip as mclip

    recipe = dataclasses.replace(mclip.TinyClipRecipe(seed=seed), **overrides)
    world = ShapesWorld(image_size=32, seed=0)  # notebook 01's world
    t0 = time.perf_counter()
    model, _ = mclip.train_tiny_clip(recipe, progress=False, eval_every=10**9, world=world)
    seconds = time.perf_counter() - t0
    tokenizer = mclip.tokenizer_for(recipe.model_cfg)
    batch = world.sample(1200, "heldout", seed=999)
    target = torch.tensor([world.pairs.index(p) for p in zip(batch.colors, batch.shapes)])
    composed = mclip.compositional_logits(model, tokenizer, batch.images, world.colors, world.shapes).argmax(-1)
    return {"seed": seed, "overrides": overrides, "seconds": round(seconds, 1),
            "one prompt per pair, held-out": mclip.zero_shot_accuracy(model, tokenizer, world, n=1200, seed=999),
            "composed, held-out": (composed == target).float().mean().item()}


def blip2_probe(seed: int, with_stage1: bool = True, **overrides) -> dict:
    """Notebook 02's BLIP-2 with ``overrides`` over the cached tiny CLIP of its seed: caption exact match on 600 seen
    and 600 held-out images, as notebook 02 measures it, and the training seconds."""
    from mmlab import blip2 as mblip2
    from mmlab import clip as mclip

    config = dataclasses.replace(mblip2.TinyBlip2Recipe(seed=seed), **overrides)
    world = ShapesWorld(image_size=config.image_size, seed=0)
    clip_model, _, _ = mclip.tiny_clip(seed=seed, progress=False)
    lm, tokenizer = mblip2.tiny_language_model(config, progress=False)
    processor = mblip2.build_processor(tokenizer, config.image_size, config.num_query_tokens)
    model = mblip2.build_blip2(config, clip_model, mclip.TinyClipRecipe().model_cfg, lm, tokenizer)
    t0 = time.perf_counter()
    if with_stage1:
        pretrainer, _ = mblip2.train_stage1(model, processor, world, config, progress=False)
        mblip2.carry_stage1(pretrainer, model)
    mblip2.train_stage2(model, processor, world, config, progress=False, eval_every=10**9)
    seconds = time.perf_counter() - t0
    em = {f"EM {name}": mblip2.exact_match(mblip2.caption(model, processor, b.images), b.captions)
          for name, b in (("seen", world.sample(600, "train", seed=1_000)), ("held-out", world.sample(600, "heldout", seed=2_000)))}
    return {"seed": seed, "overrides": overrides, "stage1": with_stage1, "seconds": round(seconds, 1), **em}


def dalle_probe(seed: int, clip_seed: int | None = None, **overrides) -> dict:
    """Notebook 01's toy DALL·E with ``overrides`` over the cached tiny CLIP of its seed: what its samples get right
    (judged as notebook 01 judges them) before and after CLIP reranking, and the training seconds."""
    from mmlab import clip as mclip
    from mmlab import dalle

    recipe = dataclasses.replace(dalle.TinyDalleRecipe(seed=seed), **overrides)
    world = ShapesWorld(image_size=32, seed=0)
    # the reranker: the cached tiny CLIP of ``clip_seed`` (default: the same seed, as the notebook has it)
    clip_model, _, clip_tokenizer = mclip.tiny_clip(seed=seed if clip_seed is None else clip_seed, progress=False)
    from mmlab.judge import attribute_batch, judged, train_judge

    t0 = time.perf_counter()
    model, vq_history, gpt_history = dalle.train_tiny_dalle(recipe, world=world, progress=False)
    seconds = time.perf_counter() - t0
    judge = train_judge(world, seed=seed, progress=False)
    real, colours, shapes = attribute_batch(world, 99_999)
    ceiling = judged(judge, world, real, [(world.colors[c], world.shapes[s]) for c, s in zip(colours, shapes)])
    scores = dalle.evaluate(model, judge, world, clip_model, clip_tokenizer, seed=seed)
    return {"seed": seed, "overrides": overrides, "seconds": round(seconds, 1),
            "tokenizer seconds": round(vq_history.seconds, 1), "transformer seconds": round(gpt_history.seconds, 1),
            **{f"judge on real images {k}": v for k, v in ceiling.items()}, **scores}


PROBES = {"clip": clip_probe, "blip2": blip2_probe, "dalle": dalle_probe}


def recipe_of(name: str) -> type:
    """The recipe dataclass a probe overrides."""
    if name == "clip":
        from mmlab.clip import TinyClipRecipe as recipe
    elif name == "blip2":
        from mmlab.blip2 import TinyBlip2Recipe as recipe
    else:
        from mmlab.dalle import TinyDalleRecipe as recipe
    return recipe


def main(model: str, seeds: list[int], items: list[str]) -> int:
    """``mmlab probe``: run probe ``model`` for each seed with the overrides; print one JSON line per seed, then the
    mean and minimum of each score."""
    import json

    try:
        overrides = parse_overrides(recipe_of(model), items)
    except ValueError as exc:
        raise SystemExit(f"mmlab probe: {exc}") from None
    rows = []
    for seed in seeds:
        rows.append(PROBES[model](seed, **overrides))
        print(json.dumps(rows[-1]), flush=True)
    scores = [k for k, v in rows[0].items() if isinstance(v, float) and k != "seconds"]
    for key in scores:
        values = [r[key] for r in rows]
        print(f"{key:<40} mean {sum(values) / len(values):.3f}  min {min(values):.3f}  max {max(values):.3f}")
    return 0
