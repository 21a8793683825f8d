"""BLIP-2 (Li et al. 2023) at tiny size with the real transformers classes.

A frozen image encoder (the tiny CLIP of notebook 01) and a frozen decoder-only language model (a tiny OPT)
are bridged by a Q-Former (``transformers.Blip2QFormerModel``) and K learnable queries:

* stage 1 (:class:`QFormerPretrainer`) trains the queries and the Q-Former with ITC, ITM and ITG under the
  three attention masks of :func:`stage1_masks` (the transformers classes have no stage-1 model, so it is built
  here around the real ``Blip2QFormerModel``, whose layers already route query and text tokens);
* stage 2 trains queries, Q-Former and ``language_projection`` inside ``Blip2ForConditionalGeneration`` with the
  language-modelling loss: the K projected query outputs are soft visual prompts for the frozen LM.

:func:`tiny_blip2` builds (or loads from the cache) the trained model and its ``Blip2Processor``;
:func:`load_blip2` is the one loader for the tiny saved model and ``Salesforce/blip2-opt-2.7b``.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import open_clip
import torch
import transformers
from transformers import Blip2ForConditionalGeneration, Blip2Processor

from mmlab.blip2.lm import prefix_embeds, pretrain_lm, read_prefix_batch, tiny_language_model
from mmlab.blip2.model import (
    VIEWS,
    ClipImageTower,
    TinyBlip2ForConditionalGeneration,
    build_blip2,
    caption,
    exact_match,
    image_views,
    load_blip2,
    save_blip2,
    trainable_parameters,
)
from mmlab.blip2.processor import (
    BOS,
    DEC,
    EOS,
    IMAGE,
    PAD,
    SPECIAL_TOKENS,
    UNK,
    attribute_captions,
    build_processor,
    build_tokenizer,
    caption_batch,
    caption_words,
    lm_inputs,
    pixel_values,
)
from mmlab.blip2.recipe import TinyBlip2Recipe, lm_config, qformer_config
from mmlab.blip2.stage1 import QFormerPretrainer, carry_stage1, stage1_masks, train_stage1
from mmlab.blip2.stage2 import PatchPrefixCaptioner, Stage2Batches, train_patch_prefix, train_stage2
from mmlab.cache import cached
from mmlab.clip.training import TinyClipRecipe, tiny_clip, tiny_clip_dir
from mmlab.data import ShapesWorld
from mmlab.files import tensor_digest

__all__ = [
    "BOS", "DEC", "EOS", "IMAGE", "PAD", "SPECIAL_TOKENS", "UNK", "VIEWS", "ClipImageTower", "PatchPrefixCaptioner",
    "QFormerPretrainer", "Stage2Batches", "TinyBlip2Recipe", "TinyBlip2ForConditionalGeneration", "attribute_captions", "build_blip2",
    "build_processor", "build_tokenizer", "caption", "caption_batch", "caption_words", "carry_stage1", "exact_match",
    "image_views", "lm_config", "lm_inputs", "load_blip2", "pixel_values", "prefix_embeds", "pretrain_lm",
    "qformer_config", "read_prefix_batch", "save_blip2", "stage1_masks", "tiny_blip2", "tiny_clip_folder",
    "tiny_language_model", "train_patch_prefix", "train_stage1", "train_stage2", "trainable_parameters",
]


def _recipe(config: TinyBlip2Recipe, part: str) -> dict:
    """Everything that determines a cached artefact of the tiny BLIP-2 (its cache key)."""
    return {"part": part, "recipe": asdict(config), "version": 1, "transformers": transformers.__version__,
            "torch": torch.__version__, "clip": tiny_clip_folder(config.seed).name}  # the CLIP recipe hash, not the machine path


def tiny_clip_folder(seed: int = 0) -> Path:
    """Cache folder of notebook 01's tiny CLIP of ``seed`` (the frozen image encoder; named by the CLIP recipe's hash)."""
    return tiny_clip_dir(TinyClipRecipe(seed=seed))


def tiny_blip2(seed: int = 0, retrain: bool = False, progress: bool = True, clip_model: open_clip.CLIP | None = None,
               recipe: TinyBlip2Recipe | None = None,
               device: torch.device | None = None) -> tuple[Blip2ForConditionalGeneration, Blip2Processor]:
    """The trained tiny BLIP-2 of notebook 02: loaded from the cache, or built with the notebook's recipe
    (frozen tiny CLIP of the same seed + frozen pretrained tiny OPT; stage 1 then stage 2) and saved with
    :func:`save_blip2`.

    Args:
        seed: the training seed (of the BLIP-2 and, unless ``clip_model`` is given, of its frozen tiny CLIP).
        clip_model: the frozen image encoder to use instead of ``tiny_clip(seed)``.
        recipe: another recipe than ``TinyBlip2Recipe(seed=seed)`` (its ``seed`` is replaced by ``seed``).
        device: where it trains and is loaded (default ``settings.device()``).
    Returns ``(model, processor)`` through :func:`load_blip2`, exactly as ``Salesforce/blip2-opt-2.7b`` loads.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    config = replace(recipe or TinyBlip2Recipe(), seed=seed)

    def build() -> tuple[Blip2ForConditionalGeneration, Blip2Processor]:
        world = ShapesWorld(image_size=config.image_size, seed=0)
        clip = clip_model if clip_model is not None else tiny_clip(seed=seed, progress=progress, device=device)[0]
        lm, tokenizer = tiny_language_model(config, progress=progress, device=device)
        processor = build_processor(tokenizer, config.image_size, config.num_query_tokens)
        model = build_blip2(config, clip, TinyClipRecipe().model_cfg, lm, tokenizer, device=device)
        pretrainer, _ = train_stage1(model, processor, world, config, progress=progress)
        carry_stage1(pretrainer, model)
        train_stage2(model, processor, world, config, progress=progress)
        return model, processor

    key = _recipe(config, "blip2")
    if clip_model is not None:  # another encoder, another artefact: key it by the encoder's weights
        key["clip"] = tensor_digest(clip_model.visual.state_dict())[:12]
    return cached("tiny_blip2", key, build, save=lambda mp, folder: save_blip2(*mp, folder),
                  load=lambda folder: load_blip2(folder, device=device),
                  retrain=retrain, device=device)
