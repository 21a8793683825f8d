"""CLIP (Radford et al. 2021) with the real open_clip classes, one concept per module:

    loss       -- contrastive_loss (symmetric InfoNCE) and siglip_loss, from scratch, equal to open_clip's
    model      -- build_clip, tokenizer_for, encode, save_clip / load_clip (one loader for hub and offline)
    zero_shot  -- zero_shot_classifier (prompts, ensembling), zero_shot_predict, zero_shot_accuracy
    views      -- grey, silhouette, flat_colour: toy-only views that keep one attribute
    training   -- TinyClipRecipe and the tiny CLIP of notebook 01, trained or served from the cache (tiny_clip)

Everything is re-exported here, so a notebook writes ``from mmlab import clip as mclip`` and ``mclip.tiny_clip()``.
"""

from mmlab.clip.loss import contrastive_loss, siglip_loss
from mmlab.clip.model import (
    OPENAI_MEAN,
    OPENAI_STD,
    build_clip,
    encode,
    load_clip,
    preprocess_tensors,
    save_clip,
    text_token_states,
    tokenizer_for,
)
from mmlab.clip.training import (
    MemoTokenizer,
    TinyClipRecipe,
    attribute_sub_batches,
    clip_recipe,
    tiny_clip,
    tiny_clip_dir,
    tiny_clip_trained,
    train_tiny_clip,
)
from mmlab.clip.views import flat_colour, grey, silhouette
from mmlab.clip.zero_shot import (
    compositional_logits,
    pair_classnames,
    zero_shot_accuracy,
    zero_shot_classifier,
    zero_shot_predict,
)

__all__ = ["OPENAI_MEAN", "OPENAI_STD", "MemoTokenizer", "TinyClipRecipe", "attribute_sub_batches", "build_clip", "clip_recipe",
           "compositional_logits", "contrastive_loss", "encode", "flat_colour", "grey", "load_clip", "pair_classnames",
           "preprocess_tensors", "save_clip", "siglip_loss", "silhouette", "text_token_states", "tiny_clip", "tiny_clip_dir",
           "tiny_clip_trained", "tokenizer_for", "train_tiny_clip", "zero_shot_accuracy", "zero_shot_classifier",
           "zero_shot_predict"]
