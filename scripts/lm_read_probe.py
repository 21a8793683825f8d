"""Does notebook 02's frozen tiny OPT learn to read its prefix? Its text-only pretraining for each seed and step count.

    MMLAB_THREADS=2 python scripts/lm_read_probe.py --seeds 0 1 2 3 4 --steps 500 800

Trains the LM outside the cache (``mmlab.blip2.pretrain_lm``, the rest of ``TinyBlip2Recipe`` as the notebook has it) and
scores it as notebook 02's §2 does: greedy captions written from 512 prefixes (seed 123) holding a colour word and a
shape word at random slots among noise, exact match against the caption they name (bar >= 0.95). Prints one JSON line
per seed and step count, with the training-time curve (``read_em`` on 256 other prefixes) and the seconds it took.
"""

import argparse
import json
from dataclasses import replace

import torch

from mmlab import blip2 as mblip2
from mmlab.data import ShapesWorld
from mmlab.runtime import set_threads


def read_em(lm, tokenizer, world: ShapesWorld, config: mblip2.TinyBlip2Recipe) -> float:
    """Notebook 02's §2 check, on the same 512 prefixes."""
    probe = mblip2.read_prefix_batch(world, tokenizer, 512, config.num_query_tokens, config.lm_hidden, seed=123,
                                     attribute_batches=False)
    with torch.no_grad():
        embeds = mblip2.prefix_embeds(lm, probe)[:, : config.num_query_tokens + 1]  # (N, K + 1, H): prefix + <s>
        written = lm.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                              max_new_tokens=4, do_sample=False, pad_token_id=mblip2.PAD)
    written = [t.strip() for t in tokenizer.batch_decode(written, skip_special_tokens=True)]
    target = [t.strip() for t in tokenizer.batch_decode(probe["input_ids"][:, config.num_query_tokens:], skip_special_tokens=True)]
    return mblip2.exact_match(written, target)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, nargs="+", default=[mblip2.TinyBlip2Recipe().lm_steps])
    parser.add_argument("--lr", type=float, default=None, help="lm_lr instead of the recipe's")
    parser.add_argument("--constant-lr", action="store_true", help="no cosine decay (the recipe before 2026-12-06)")
    args = parser.parse_args()
    threads = set_threads()
    world = ShapesWorld(image_size=32, seed=0)  # as tiny_language_model builds it
    tokenizer = mblip2.build_tokenizer(mblip2.caption_words(world))
    for seed in args.seeds:
        for steps in args.steps:
            config = replace(mblip2.TinyBlip2Recipe(seed=seed), lm_steps=steps, lm_cosine_decay=not args.constant_lr,
                             **({"lm_lr": args.lr} if args.lr else {}))
            lm, history = mblip2.pretrain_lm(config, tokenizer, world, progress=False, device=torch.device("cpu"))
            curve = {step: round(e["read_em"], 3) for step, e in history.evals}
            print(json.dumps({"seed": seed, "lm_steps": steps, "lm_lr": config.lm_lr, "cosine": config.lm_cosine_decay, "threads": threads,
                              "read_em": round(read_em(lm, tokenizer, world, config), 3), "curve": curve,
                              "seconds": round(history.seconds, 1)}), flush=True)
