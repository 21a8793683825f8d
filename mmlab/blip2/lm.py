"""The frozen language model: a tiny OPT pretrained on text only to read its K-slot prefix, cached."""

from __future__ import annotations

from dataclasses import asdict

import torch
import transformers
from transformers import (
    OPTForCausalLM,
    PreTrainedTokenizerFast,
)

from mmlab.blip2.processor import PAD, attribute_captions, build_tokenizer, caption_words, lm_inputs
from mmlab.blip2.recipe import TinyBlip2Recipe, lm_config
from mmlab.cache import cached
from mmlab.data import ShapesWorld
from mmlab.settings import device as runtime_device
from mmlab.train import History, to_device, train, warmup_cosine

# ----------------------------------------------------------------------------------------------------------------
# the frozen LM, pretrained on text only to read its prefix


def read_prefix_batch(world: ShapesWorld, tokenizer: PreTrainedTokenizerFast, n: int, num_query_tokens: int,
                      hidden_size: int, seed: int, attribute_batches: bool = True) -> dict[str, torch.Tensor]:
    """A text-only batch that teaches the LM to read its first K positions.

    Each of the K prefix slots holds either a word (the caption's colour word and/or shape word, at random slots)
    or noise; the LM must write ``<s> a {color} {shape} </s>`` (or ``a {shape}`` / ``a {color} shape`` when only that
    word is in the prefix). Any colour-shape combination is drawn, as a real LLM has read every phrase; no image
    is involved. Returns :func:`lm_inputs` plus ``prefix_ids`` (N, K): the word in each slot, or -1 for noise, and
    ``noise`` (N, K, hidden_size): unit Gaussian vectors for the noise slots (scaled to the embeddings by the caller).
    """
    g = torch.Generator().manual_seed(seed)
    ci = torch.randint(len(world.colors), (n,), generator=g)
    si = torch.randint(len(world.shapes), (n,), generator=g)
    kinds = ["full"] * n
    if attribute_batches:
        kinds = [("full", "full", "shape", "color")[k] for k in torch.randint(4, (n,), generator=g).tolist()]
    colors, shapes = [world.colors[i] for i in ci], [world.shapes[i] for i in si]
    batch = lm_inputs(tokenizer, attribute_captions(colors, shapes, kinds), num_query_tokens)
    prefix_ids = torch.full((n, num_query_tokens), -1, dtype=torch.long)
    slots = torch.rand(n, num_query_tokens, generator=g).argsort(1)[:, :2]  # two distinct random slots per row
    color_ids = torch.tensor(tokenizer.convert_tokens_to_ids(colors))
    shape_ids = torch.tensor(tokenizer.convert_tokens_to_ids(shapes))
    rows = torch.arange(n)
    has_color = torch.tensor([k in ("full", "color") for k in kinds])
    has_shape = torch.tensor([k in ("full", "shape") for k in kinds])
    prefix_ids[rows[has_color], slots[has_color, 0]] = color_ids[has_color]
    prefix_ids[rows[has_shape], slots[has_shape, 1]] = shape_ids[has_shape]
    batch["prefix_ids"] = prefix_ids
    batch["noise"] = torch.randn(n, num_query_tokens, hidden_size, generator=g)
    return batch


def prefix_embeds(lm: OPTForCausalLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``inputs_embeds`` (N, K + L, H) of a :func:`read_prefix_batch`: word embeddings in the word slots, noise at the
    embeddings' scale in the other prefix slots, then the embedded ``<s> caption </s>``."""
    embed = lm.get_input_embeddings()
    k = batch["prefix_ids"].shape[1]
    inputs_embeds = embed(batch["input_ids"])  # (N, K + L, H)
    words = embed(batch["prefix_ids"].clamp(min=0))  # (N, K, H)
    noise = batch["noise"] * embed.weight.detach().std()
    prefix = torch.where((batch["prefix_ids"] >= 0)[..., None], words, noise)
    return torch.cat([prefix, inputs_embeds[:, k:]], 1)


def pretrain_lm(config: TinyBlip2Recipe, tokenizer: PreTrainedTokenizerFast, world: ShapesWorld,
                progress: bool = True, device: torch.device | None = None) -> tuple[OPTForCausalLM, History]:
    """Train the tiny OPT from scratch on :func:`read_prefix_batch` text (language-modelling loss on the caption).

    Returns the LM (eval mode) and its :class:`History` (eval ``read_em``: exact match of greedy captions written
    from a prefix holding the two words, on 256 fresh batches' rows).
    """
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        lm = OPTForCausalLM(lm_config(config, len(tokenizer))).to(device or runtime_device())
    k, h = config.num_query_tokens, config.lm_hidden

    def batch_fn(step: int):
        return read_prefix_batch(world, tokenizer, 2 * config.batch_size, k, h, seed=config.seed * 1_000_003 + step,
                                 attribute_batches=config.attribute_batches)

    def loss_fn(m: OPTForCausalLM, batch) -> torch.Tensor:
        return m(inputs_embeds=prefix_embeds(m, batch), attention_mask=batch["attention_mask"], labels=batch["labels"]).loss

    def eval_fn(m: OPTForCausalLM) -> dict[str, float]:
        batch = to_device(read_prefix_batch(world, tokenizer, 256, k, h, seed=-1 - config.seed, attribute_batches=False), m.device)
        embeds = prefix_embeds(m, batch)[:, : k + 1]  # prefix + <s>
        out = m.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=m.device),
                         max_new_tokens=4, do_sample=False, pad_token_id=PAD)
        written = [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
        target = [t.strip() for t in tokenizer.batch_decode(batch["input_ids"][:, k:], skip_special_tokens=True)]
        return {"read_em": sum(a == b for a, b in zip(written, target)) / len(target)}

    optimizer = torch.optim.AdamW(lm.parameters(), lr=config.lm_lr, weight_decay=0.0, foreach=True)
    scheduler = None
    if config.lm_cosine_decay:  # end at a small rate: at a constant 3e-3 a late loss spike can undo the reading
        scheduler = warmup_cosine(optimizer, config.lm_steps, warmup=max(1, config.lm_steps // 20))
    history = train(lm, batch_fn, loss_fn, optimizer, config.lm_steps, eval_fn=eval_fn, eval_every=max(1, config.lm_steps // 4),
                    lr_scheduler=scheduler, progress=progress, desc="LM: read the prefix")
    return lm.eval(), history


def tiny_language_model(config: TinyBlip2Recipe | None = None, retrain: bool = False, progress: bool = True,
                        device: torch.device | None = None) -> tuple[OPTForCausalLM, PreTrainedTokenizerFast]:
    """The frozen LM of the tiny BLIP-2: :func:`pretrain_lm` once, then ``OPTForCausalLM.from_pretrained`` (safetensors)
    from the cache (:func:`mmlab.cache.cached`). Returns ``(lm, tokenizer)``."""
    config = config or TinyBlip2Recipe()
    world = ShapesWorld(image_size=config.image_size, seed=0)
    tokenizer = build_tokenizer(caption_words(world))
    lm_fields = {k: v for k, v in asdict(config).items() if k.startswith("lm_") or k in ("num_query_tokens", "batch_size",
                                                                                          "attribute_batches", "seed")}
    recipe = {"lm": lm_fields, "version": 1, "torch": torch.__version__, "transformers": transformers.__version__}
    lm = cached("tiny_opt", recipe, build=lambda: pretrain_lm(config, tokenizer, world, progress=progress, device=device)[0],
                save=lambda m, folder: m.save_pretrained(folder, safe_serialization=True),
                load=lambda folder: OPTForCausalLM.from_pretrained(folder, use_safetensors=True).to(device or runtime_device()).eval(),
                retrain=retrain, device=device)
    return lm, tokenizer


